"""`bitextmine train` end to end on a tiny model: train, kill + resume == uninterrupted, export, encode with it."""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from bitextmine.cli.train import train_command

runner = CliRunner()
app = typer.Typer()
app.command("train")(train_command)


@app.callback()
def _root() -> None:  # a group, so the command is invoked as `train` like in the real app
    pass


# word-for-word "translations" over words the tiny tokenizer knows, so the task is learnable
EN = "the cat dog house tree river city car book water light night day sun moon green red blue small".split()
XX = {
    "de": "der katze hund haus baum fluss stadt auto buch wasser licht nacht tag sonne mond grün rot blau klein".split(),
    "fr": "le chat chien maison arbre rivière ville voiture livre eau lumière nuit jour soleil lune vert rouge bleu petit".split(),
    "ru": "кот кошка собака дом дерево река город машина книга вода свет ночь день солнце луна зелёный красный синий малый".split(),
}


def write_pairs(folder: Path, n: int = 160, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for lang, words in XX.items():
        with open(folder / f"{lang}-en.tsv", "w", encoding="utf-8") as fh:
            for _ in range(n):
                idx = [rng.randrange(len(EN)) for _ in range(rng.randint(4, 9))]
                fh.write(" ".join(words[i] for i in idx) + "\t" + " ".join(EN[i] for i in idx) + "\n")
    return folder


def recipe_file(tmp: Path, model: Path, data: Path, **extra: str) -> Path:
    p = tmp / "recipe.toml"
    lines = [
        "[model]", f'name = "{model}"', 'pooling = "cls"', 'prefix = "query: "',
        "[data]", f'train = ["{data}/*-en.tsv"]', "max_length = 24", "dev_max = 12", "filters = false",
        "[objective]", "rtl_weight = 0.5",
        "[optim]", "steps = 6", "batch_size = 8", "lr = 1e-3", "warmup_steps = 2",
        "[eval]", 'select_on = "split"', "every = 3", "max_pairs = 12",
        "[log]", "every = 1",
        "[run]", "save_every = 2", "seed = 3",
    ]
    p.write_text("\n".join(lines) + "\n")
    return p


def invoke(*args, ok: bool = True):
    res = runner.invoke(app, ["train", *map(str, args)])
    if ok:
        assert res.exit_code == 0, res.output + repr(res.exception)
    return res


def weights(folder: Path) -> dict:
    from safetensors.numpy import load_file

    return load_file(str(folder / "model.safetensors"))


def metrics(run: Path) -> list[dict]:
    out = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        for k in ("steps_per_s", "pairs_per_s"):
            r.pop(k, None)
        out.append(r)
    return out


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_model):
    tmp = tmp_path_factory.mktemp("train")
    data = write_pairs(tmp / "data")
    return tmp, recipe_file(tmp, tiny_model, data)


def test_train_kill_resume_export_encode(setup, tmp_path):
    tmp, cfg = setup
    full, killed = tmp_path / "full", tmp_path / "killed"
    res = invoke("--config", cfg, "--out", full)
    assert "trained" in res.output and "training data" in res.output
    assert (full / "config.toml").is_file() and (full / "model" / "bitextmine_recipe.json").is_file()

    # "killed" after step 5: the last checkpoint is step 4, step 5 is lost and redone on resume
    res = invoke("--config", cfg, "--out", killed, "--stop-after", "5")
    assert "stopped early" in res.output
    assert not (killed / "model").exists()
    import torch

    assert torch.load(killed / "checkpoints" / "last" / "state.pt", weights_only=True)["step"] == 4
    res = invoke("--config", cfg, "--out", killed)
    assert "resuming at step 4" in res.output

    a, b = weights(full / "model"), weights(killed / "model")
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k], b[k]), k
    assert metrics(full) == metrics(killed)
    steps = [r["step"] for r in metrics(full) if r["kind"] == "train"]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert any(r["kind"] == "eval" and "split_p@1" in r for r in metrics(full))

    # the weights moved, the RTL head and MLP are not exported
    from bitextmine.models.loader import load_model

    info = json.loads((full / "model" / "training_info.json").read_text())
    assert info["best"]["set"] == "split" and info["step"] in (3, 6)
    assert not any(k.startswith(("head", "mlp")) for k in a)

    # a rerun of a finished run resumes at the end and only re-exports
    res = invoke("--config", cfg, "--out", full)
    assert "resuming at step 6" in res.output

    # the exported folder is a model for encode (and its recipe is the training recipe)
    lm = load_model(str(full / "model"), device="cpu")
    assert lm.recipe.pooling == "cls" and lm.recipe.prefix == "query: " and lm.recipe.threshold is None
    from bitextmine.cli import app as main_app

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("der baum haus\nthe tree house\nle chat\n")
    res = runner.invoke(main_app, ["encode", "corpus", str(corpus), "--out", str(tmp_path / "emb"), "--model", str(full / "model")])
    assert res.exit_code == 0, res.output
    manifest = json.loads((tmp_path / "emb" / "manifest.json").read_text())
    assert manifest["recipe"]["pooling"] == "cls" and manifest["recipe"]["prefix"] == "query: "


def test_exported_model_loads_in_sentence_transformers(setup, tmp_path):
    st = pytest.importorskip("sentence_transformers")
    tmp, cfg = setup
    invoke("--config", cfg, "--out", tmp_path / "run", "--set", "optim.steps=2", "--set", "eval.select_on='none'")
    folder = tmp_path / "run" / "model"
    from bitextmine.encoder import Encoder
    from bitextmine.models.loader import load_model

    texts = ["der baum haus stadt", "the tree house city", "le chat"]
    ours = Encoder(load_model(str(folder), device="cpu"), precision="fp32").encode(texts)
    model = st.SentenceTransformer(str(folder), device="cpu")
    theirs = model.encode(texts, normalize_embeddings=False, convert_to_numpy=True)  # the prompt comes from the folder
    assert np.allclose(ours, theirs, atol=1e-5)


def test_tr_only_and_changed_config_and_bad_input(setup, tmp_path):
    tmp, cfg = setup
    run = tmp_path / "tr"
    res = invoke("--config", cfg, "--out", run, "--set", "objective.rtl_weight=0", "--set", "optim.steps=3", "--stop-after", "2")
    assert "TR only" in res.output
    # resuming with another config is refused with one line
    res = invoke("--config", cfg, "--out", run, "--set", "objective.rtl_weight=0", "--set", "optim.steps=4", ok=False)
    assert res.exit_code == 2 and "different config" in res.output and "Traceback" not in res.output
    # --overwrite starts over
    invoke("--config", cfg, "--out", run, "--set", "objective.rtl_weight=0", "--set", "optim.steps=4", "--overwrite")
    assert (run / "model").is_dir()
    for args, msg in [
        (["--config", tmp_path / "missing.toml"], "no such file"),
        (["--config", cfg, "--set", "data.train=['/nowhere/*-en.tsv']"], "matches no file"),
        (["--config", cfg, "--set", "optim.steps=0"], "optim.steps must be >= 1"),
        (["--config", cfg, "--set", "model.name=/no/such/model"], "no such folder"),
        (["--config", cfg, "--out", tmp_path / "none", "--export-only"], "no checkpoint"),
    ]:
        res = invoke(*args, *([] if "--out" in args else ["--out", tmp_path / "bad"]), ok=False)
        assert not (tmp_path / "bad").exists()  # nothing is left behind by a run that could not start
        lines = [ln for ln in res.output.strip().splitlines() if ln.startswith("error:")]
        assert res.exit_code == 2 and len(lines) == 1 and msg in lines[0], res.output


def test_print_config(setup):
    tmp, cfg = setup
    res = invoke("--config", cfg, "--print-config", "--set", "optim.lr=2e-5")
    assert "[optim]" in res.output and "lr = 2e-05" in res.output


@pytest.mark.slow
def test_real_model_dap_steps_on_l10n(tmp_path):
    """Two DAP steps of the packaged model on real l10n pairs: the E5 recipe survives export, weights move a little."""
    from conftest import need_shared

    l10n = need_shared("l10n")
    p = tmp_path / "r.toml"
    p.write_text("\n".join([
        "[model]", 'name = "e5-small"', "freeze_embeddings = true",
        "[data]", f'train = ["{l10n}/de-en.tsv", "{l10n}/ja-en.tsv"]', "max_pairs_per_language = 300", "dev_max = 16",
        "[objective]", "rtl_weight = 0.1",
        "[optim]", "steps = 2", "batch_size = 8", "lr = 2e-5",
        "[eval]", 'select_on = "split"', "max_pairs = 16",
    ]) + "\n")
    res = invoke("--config", p, "--out", tmp_path / "run")
    assert "RTL vocabulary" in res.output
    from bitextmine.encoder import Encoder
    from bitextmine.models.loader import load_model

    lm = load_model(str(tmp_path / "run" / "model"), device="cpu")
    assert lm.recipe.pooling == "mean" and lm.recipe.prefix == "query: " and lm.recipe.max_tokens == 512
    texts = ["Datei öffnen", "Open file", "ファイルを開く"]
    new = Encoder(lm, precision="fp32").encode(texts)
    old = Encoder(load_model("e5-small", device="cpu"), precision="fp32").encode(texts)
    cos = (new * old).sum(1)
    assert (cos > 0.95).all() and (cos < 0.999999).any()
