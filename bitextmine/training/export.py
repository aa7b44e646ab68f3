"""Export the trained encoder as a plain model folder (the RTL head and the MLP are dropped).

The folder is a transformers model (``config.json``, ``model.safetensors``, tokenizer files) with
``bitextmine_recipe.json`` (pooling, prefix, max tokens) so ``--model <folder>`` in ``encode``,
``mine`` and ``bench`` embeds exactly as training evaluated, plus the sentence-transformers
module files (Transformer at the root, Pooling, Normalize, the prefix as default prompt) so
``SentenceTransformer(folder)`` produces the same vectors. ``training_info.json`` records the
run (config, step, dev scores).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from bitextmine import fs
from bitextmine.models.recipe import Recipe, write_recipe
from bitextmine.fs import fsync_tree, remove_temps, replace_dir


def write_sentence_transformers_files(folder: Path, recipe: Recipe, hidden: int) -> None:
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    if recipe.normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    (folder / "modules.json").write_text(json.dumps(modules, indent=2) + "\n")
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": recipe.max_tokens, "do_lower_case": False}, indent=2) + "\n")
    pooling = {
        "word_embedding_dimension": hidden,
        "pooling_mode_cls_token": recipe.pooling == "cls",
        "pooling_mode_mean_tokens": recipe.pooling == "mean",
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
        "pooling_mode_weightedmean_tokens": False,
        "pooling_mode_lasttoken": False,
        "include_prompt": True,
    }
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling, indent=2) + "\n")
    if recipe.normalize:
        (folder / "2_Normalize").mkdir(exist_ok=True)
    st = {"prompts": {"query": recipe.prefix} if recipe.prefix else {}, "default_prompt_name": "query" if recipe.prefix else None,
          "similarity_fn_name": "cosine"}
    (folder / "config_sentence_transformers.json").write_text(json.dumps(st, indent=2) + "\n")


def export_encoder(encoder: torch.nn.Module, tokenizer, recipe: Recipe, out: str | Path, info: dict | None = None,
                   config_overrides: dict | None = None) -> Path:
    """Write ``encoder`` + ``tokenizer`` + ``recipe`` to ``out`` atomically (a unique temporary folder,
    then renames; a previous ``out`` is ``out.old`` until the new one is in place).

    ``config_overrides`` are set on the saved config only (e.g. the dropout rates training switched off).
    """
    out = Path(out)
    remove_temps(out)  # a killed export's folder
    tmp = fs.temp_dir(out)
    try:
        _write_folder(tmp, encoder, tokenizer, recipe, info, config_overrides)
        fsync_tree(tmp)
        replace_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already when published
    return out


def _write_folder(tmp: Path, encoder: torch.nn.Module, tokenizer, recipe: Recipe, info: dict | None, config_overrides: dict | None) -> None:
    saved = {}
    for k, v in (config_overrides or {}).items():
        saved[k] = getattr(encoder.config, k)
        setattr(encoder.config, k, v)
    try:
        encoder.save_pretrained(str(tmp), safe_serialization=True)
    finally:
        for k, v in saved.items():
            setattr(encoder.config, k, v)
    tokenizer.save_pretrained(str(tmp))
    write_recipe(tmp, recipe)
    write_sentence_transformers_files(tmp, recipe, int(encoder.config.hidden_size))
    if info is not None:
        (tmp / "training_info.json").write_text(json.dumps({"recipe": recipe.to_dict(), **info}, indent=2, ensure_ascii=False, default=str) + "\n")
