"""What the filters of ``bitextmine filter`` do to real data: language ID, length and number rules
on Flores and l10n, and precision / recall of mined pairs before and after filtering.

    .venv/bin/python benchmarks/filter.py lid          # → results/filter-lid.md (+ .json)
    .venv/bin/python benchmarks/filter.py rules        # → results/filter-rules.md
    .venv/bin/python benchmarks/filter.py bucc         # → results/filter-bucc.md   (mines with the model)
    .venv/bin/python benchmarks/filter.py distractors  # → results/filter-distractors.md (mines with the model)
    .venv/bin/python benchmarks/filter.py all [--model default|PATH] [--data ../shared/data]

* ``lid``: every Flores sentence of the 36 training languages and English (../shared/data/flores)
  judged as the language of its file: the share kept by bitextmine's rule (py3langid, expected
  group top or p ≥ 0.3), by py3langid's top label alone, and by heliport's top label (when
  ``pip install heliport`` is there; its labels mapped to the same macrolanguage groups); and the
  worst *false acceptance*: the share of another language's sentences the rule accepts as this
  language. Tatoeba sentences (short) are judged too, as a report: nothing was tuned on them.
* ``rules``: the length ratio (scaled by the Flores factors) and the number rule on true pairs:
  Flores x-eng and the l10n human translations; the number rule also on wrong pairs (line i with
  line i+1) to show what it catches.
* ``bucc``: the BUCC 2018 zh-en sample mined with ``mine_files`` (k=4, ratio margin, max strategy;
  embeddings cached in the embedding cache), scored against the gold ids before and after
  ``filter_pairs``: all mined pairs, and those above the margin threshold that ``bench bucc``
  tuned on this sample (1.0222 for the default model; optimistic, as it is tuned on the same data).
* ``distractors``: for German, Chinese and Hindi, the first 600 Tatoeba x-eng pairs (gold) mixed
  with 100 sentences of each of 6 other languages *and their English translations* (pairs that are
  right in meaning but wrong in language), exact and near-duplicate copies of gold pairs, one sentence repeated 20
  times (a hub), copies of source sentences on the target side, and pairs whose numbers or URLs
  differ. A mined pair is correct when its two sides come from the same gold pair and that gold
  pair was not output before (copies are redundant); recall is over the distinct gold pairs.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import RESULTS, command, header  # noqa: E402

from bitextmine.filters import REASONS, FilterOptions, FilterReport, filter_pairs  # noqa: E402
from bitextmine.filters.langs import _INDEX, group_of, parse_language  # noqa: E402
from bitextmine.filters.lid import DEFAULT_THRESHOLD, shared_identifier  # noqa: E402
from bitextmine.filters.rules import FLORES_FILES, LENGTH_FACTORS, length_ratio, numbers, numbers_disagree  # noqa: E402

BUCC_THRESHOLD = 1.0221819430303902  # benchmarks/results/bench-bucc-zh-en-default.json (tuned on the sample)


def read_lines(p: Path) -> list[str]:
    return p.read_text(encoding="utf-8").splitlines()


def write_md(name: str, text: str, data: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps({**header(), **data}, indent=1, ensure_ascii=False) + "\n")
    path = RESULTS / f"{name}.md"
    path.write_text(text)
    print(text)
    return path


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


# ------------------------------------------------------------------------------------------- LID


def heliport_group(label: str) -> str:
    lab = _INDEX.get(label)
    return group_of(lab) if lab else label


def cmd_lid(args) -> None:
    flores = Path(args.data) / "flores"
    lid = shared_identifier()
    groups = {g: read_lines(flores / f"{code}.txt") for g, code in FLORES_FILES.items()}
    try:
        import heliport

        heli = heliport.Identifier()
    except ImportError:
        heli = None
    # one pass per sentence: group probabilities, py3langid's top, heliport's top
    gidx = {g: i for i, g in enumerate(lid.groups)}
    probs: dict[str, np.ndarray] = {}
    tops: dict[str, list[str]] = {}
    htops: dict[str, list[str]] = {}
    for g, lines in groups.items():
        rows = [lid.group_probs(s) for s in lines]
        probs[g] = np.stack([r[0] for r in rows])
        tops[g] = [r[1] for r in rows]
        if heli is not None:
            htops[g] = [heliport_group(heli.identify_topk_with_score(s, 1)[0][0]) for s in lines]

    def accept(g_sent: str, g_exp: str, thr: float) -> np.ndarray:
        p = probs[g_sent][:, gidx[g_exp]]
        return (np.asarray(tops[g_sent]) == g_exp) | (p >= thr)

    rows, data = [], {}
    for g in groups:
        keep = accept(g, g, DEFAULT_THRESHOLD).mean()
        keep_top = float(np.mean(np.asarray(tops[g]) == g))
        keep_heli = float(np.mean(np.asarray(htops[g]) == g)) if heli is not None else None
        fa = {o: float(accept(o, g, DEFAULT_THRESHOLD).mean()) for o in groups if o != g}
        worst = max(fa, key=fa.get)
        data[g] = {"flores": FLORES_FILES[g], "keep": float(keep), "keep_top1": keep_top, "keep_heliport_top1": keep_heli,
                   "false_accept_mean": float(np.mean(list(fa.values()))), "false_accept_worst": [worst, fa[worst]]}
        rows.append(g)
    tat = cmd_lid_tatoeba(args, lid)
    for g, v in tat.items():
        data.setdefault(g, {})["tatoeba_keep"] = v
    keeps = [data[g]["keep"] for g in rows]
    lines = [
        "# Language identification on Flores (the filter's promise: ≥ 99% of true sentences kept)", "",
        f"Command: `{command()}`", "",
        f"Each of the 1,004 Flores sentences of every language judged as the language of its file. **rule**: bitextmine's "
        f"(py3langid; the expected macrolanguage group holds the top label or has p ≥ {DEFAULT_THRESHOLD}). **top-1**: "
        "py3langid's top label alone. **heliport**: heliport 1.0's top label (220 languages, GPL-3.0; no Javanese), mapped "
        "to the same groups. **false accept**: share of the sentences of the *other* 36 languages that the rule accepts as "
        "this language (mean; worst language). **Tatoeba**: the rule on the short Tatoeba sentences "
        "(xxx side of tatoeba.xxx-eng, English from eng-side of deu-eng), a report only: nothing was tuned on it.", "",
        "| language | Flores | rule keeps % | top-1 keeps % | heliport top-1 % | false accept mean % | worst false accept | Tatoeba rule % |",
        "|---|---|---:|---:|---:|---:|---|---:|",
    ]
    for g in rows:
        d = data[g]
        h = "—" if d["keep_heliport_top1"] is None else f"{100 * d['keep_heliport_top1']:.2f}"
        w = d["false_accept_worst"]
        t = d.get("tatoeba_keep")
        worst = f"{w[0]} {100 * w[1]:.2f}" if w[1] > 0 else "—"
        lines.append(f"| {g} | {d['flores']} | {100 * d['keep']:.2f} | {100 * d['keep_top1']:.2f} | {h} | {100 * d['false_accept_mean']:.3f} "
                     f"| {worst} | {'—' if t is None else pct(t)} |")
    heli_all = [data[g]["keep_heliport_top1"] for g in rows if data[g]["keep_heliport_top1"] is not None]
    lines += ["", f"Rule: lowest keep {100 * min(keeps):.2f}% ({rows[int(np.argmin(keeps))]}), mean {100 * float(np.mean(keeps)):.2f}%; "
              f"mean false acceptance {100 * np.mean([data[g]['false_accept_mean'] for g in rows]):.4f}%."]
    if heli_all:
        below = [g for g in rows if (data[g]["keep_heliport_top1"] or 0) < 0.99]
        lines.append(f"heliport top-1: below 99% for {', '.join(below)}.")
    write_md("filter-lid", "\n".join(lines) + "\n", {"threshold": DEFAULT_THRESHOLD, "languages": data})


TATOEBA = {"ara": "ara", "zho": "cmn", "msa": "ind", "fas": "pes", "swa": "swh"}


def cmd_lid_tatoeba(args, lid) -> dict[str, float]:
    tdir = Path(args.data) / "tatoeba"
    out = {}
    for g in FLORES_FILES:
        code = TATOEBA.get(g, g)
        f = tdir / (f"tatoeba.{code}-eng.{code}" if g != "eng" else "tatoeba.deu-eng.eng")
        if f.exists():
            out[g] = float(np.mean([lid.accepts(s, g)[0] for s in read_lines(f)]))
    return out


# ----------------------------------------------------------------------------------------- rules


def cmd_rules(args) -> None:
    flores = Path(args.data) / "flores"
    eng = read_lines(flores / "eng_Latn.txt")
    lines = ["# Length ratio and number rules on true pairs", "", f"Command: `{command()}`", "",
             "Lengths in characters × the language's factor (chars(eng)/chars(lang) on Flores; `LENGTH_FACTORS`). "
             "**Flores**: the 1,004 x-eng pairs of each language; **l10n**: the human translations of "
             "../shared/data/l10n (`<xx>-en.tsv`, short UI strings). Number rule: a pair is dropped when each side has a "
             "number the other lacks; **wrong pairs** are line i with line i+1 of Flores, counted among those where both "
             "sides have numbers.", "",
             "| language | factor (measured) | Flores max ratio | Flores keep @3 % | l10n pairs | l10n keep @2 % | l10n keep @3 % | l10n keep @9 % | numbers: true pairs dropped % | numbers: wrong pairs caught % |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    data = {}
    eng_chars = sum(len(s) for s in eng)
    for g, code in FLORES_FILES.items():
        if g == "eng":
            continue
        xs = read_lines(flores / f"{code}.txt")
        fac = eng_chars / sum(len(s) for s in xs)
        r = np.array([length_ratio(len(x) * LENGTH_FACTORS[g], len(e)) for x, e in zip(xs, eng)])
        l10n = Path(args.data) / "l10n" / f"{_l10n_code(g)}-en.tsv"
        lr = np.array([])
        if l10n.exists():
            pairs = [ln.split("\t") for ln in read_lines(l10n)]
            lr = np.array([length_ratio(len(p[0]) * LENGTH_FACTORS[g], len(p[1])) for p in pairs if len(p) == 2])
        nx = [numbers(x) for x in xs]
        ne = [numbers(e) for e in eng]
        both = [(a, b) for a, b in zip(nx, ne) if a and b]
        wrong = [(nx[(i + 1) % len(nx)], ne[i]) for i in range(len(ne)) if nx[(i + 1) % len(nx)] and ne[i]]
        drop_true = sum(numbers_disagree(a, b) for a, b in zip(nx, ne)) / len(xs)
        caught = sum(numbers_disagree(a, b) for a, b in wrong) / max(1, len(wrong))
        data[g] = {"factor": fac, "flores_max_ratio": float(r.max()), "flores_keep3": float((r <= 3).mean()),
                   "l10n_pairs": int(len(lr)), "l10n_keep": {k: float((lr <= k).mean()) if len(lr) else None for k in (2, 3, 9)},
                   "numbers_true_dropped": drop_true, "numbers_true_with_numbers": len(both), "numbers_wrong_caught": caught}
        lk = data[g]["l10n_keep"]
        fmt = lambda v: "—" if v is None else f"{100 * v:.2f}"  # noqa: E731
        lines.append(f"| {code} | {fac:.3f} | {r.max():.2f} | {100 * (r <= 3).mean():.2f} | {len(lr):,} | {fmt(lk[2])} | {fmt(lk[3])} "
                     f"| {fmt(lk[9])} | {100 * drop_true:.2f} | {100 * caught:.1f} |")
    allr = [v for v in data.values()]
    lines += ["", f"Flores: a ratio of 3 keeps {100 * min(v['flores_keep3'] for v in allr):.2f}% or more of every language; "
              f"l10n: {100 * min(v['l10n_keep'][3] for v in allr if v['l10n_pairs']):.2f}% or more. "
              f"Numbers: {100 * np.mean([v['numbers_true_dropped'] for v in allr]):.2f}% of true Flores pairs dropped on average, "
              f"{100 * np.mean([v['numbers_wrong_caught'] for v in allr]):.1f}% of the wrong pairs with numbers caught."]
    write_md("filter-rules", "\n".join(lines) + "\n", {"languages": data})


def _l10n_code(group: str) -> str:
    return {"ara": "ar", "zho": "zh", "msa": "id", "fas": "fa", "swa": "sw", "heb": "he"}.get(
        group, next((lab for lab in _INDEX if len(lab) == 2 and _INDEX[lab] == lab and group_of(lab) == group), group))


# ---------------------------------------------------------------------------------------- mining


def mine(src: Path, tgt: Path, model: str, id_column: bool):
    from bitextmine.encoder import EncoderOptions
    from bitextmine.mining import MineOptions, mine_files

    res = mine_files(src, tgt, MineOptions(k=4, threshold=None, index="flat"), encoder=EncoderOptions(model=model),
                     id_column=id_column)
    p = res.pairs
    return res, p.score, res.src.column("text", p.src), res.tgt.column("text", p.tgt)


def evaluate(pairs) -> dict:
    """``pairs``: (score, src, tgt, gold key or None, ...) rows; a gold key counts once."""
    seen = set()
    good = 0
    for row in pairs:
        key = row[3]
        if key is not None and key not in seen:
            seen.add(key)
            good += 1
    return {"pairs": len(pairs), "correct": good}


def mark_first(rows: list[tuple]) -> list[tuple]:
    """Append to each row whether it is the first output of its gold pair (a correct pair before filtering)."""
    seen = set()
    out = []
    for row in rows:
        first = row[3] is not None and row[3] not in seen
        if first:
            seen.add(row[3])
        out.append((*row, first))
    return out


def pr(d: dict, n_gold: int) -> tuple[float, float, float]:
    p = d["correct"] / d["pairs"] if d["pairs"] else 0.0
    r = d["correct"] / n_gold
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def run_filters(rows, opts: FilterOptions):
    rep = FilterReport()
    kept, dropped = [], defaultdict(list)
    for row, dec in filter_pairs(rows, opts, report=rep):
        (kept if dec.kept else dropped[dec.reason]).append(row)
    return kept, dropped, rep


def table(title: str, variants: list[tuple[str, list]], n_gold: int) -> list[str]:
    out = [f"**{title}** ({n_gold} gold pairs)", "", "| pairs | n | correct | precision % | recall % | F1 % |", "|---|---:|---:|---:|---:|---:|"]
    for name, rows in variants:
        d = evaluate(rows)
        p, r, f = pr(d, n_gold)
        out.append(f"| {name} | {d['pairs']:,} | {d['correct']:,} | {pct(p)} | {pct(r)} | {pct(f)} |")
    return out


def by_reason(dropped: dict[str, list]) -> list[str]:
    out = ["", "| rule | dropped | of which correct (first copy of a gold pair) | redundant copies of gold pairs |",
           "|---|---:|---:|---:|"]
    for r in REASONS:
        rows = dropped.get(r, [])
        if rows:
            first = sum(1 for x in rows if x[4])
            copies = sum(1 for x in rows if x[3] is not None and not x[4])
            out.append(f"| {r} | {len(rows):,} | {first} | {copies} |")
    return out


def cmd_bucc(args) -> None:
    folder = Path(args.data) / "bucc2018" / "zh-en"
    gold = {tuple(ln.split("\t")) for ln in read_lines(folder / "zh-en.sample.gold")}
    res, score, src_txt, tgt_txt = mine(folder / "zh-en.sample.zh", folder / "zh-en.sample.en", args.model, True)
    sid = res.src.column("id", res.pairs.src)
    tid = res.tgt.column("id", res.pairs.tgt)
    rows = mark_first([(float(s), a, b, (i, j) if (i, j) in gold else None) for s, a, b, i, j in zip(score, src_txt, tgt_txt, sid, tid)])
    opts = FilterOptions(src_lang="zho", tgt_lang="eng")
    kept, dropped, rep = run_filters(rows, opts)
    thr = [r for r in rows if r[0] >= BUCC_THRESHOLD]
    kept_thr, dropped_thr, rep_thr = run_filters(thr, opts)
    lines = ["# Filtering mined pairs: BUCC 2018 zh-en sample", "", f"Command: `{command()}`", "",
             f"Model: `{args.model}`; mined with `mine_files` (k=4, ratio margin, max strategy, exact search), "
             "then `filter_pairs` with the defaults and `--src-lang zho --tgt-lang eng`. Threshold "
             f"{BUCC_THRESHOLD:.4f}: the one `bench bucc` tuned on this same sample for this model (optimistic).", ""]
    lines += table("BUCC zh-en sample", [("all mined pairs", rows), ("all mined pairs, filtered", kept),
                                         (f"margin ≥ {BUCC_THRESHOLD:.4f}", thr), (f"margin ≥ {BUCC_THRESHOLD:.4f}, filtered", kept_thr)],
                   len(gold))
    lines += ["", "Drops by rule (all mined pairs):"] + by_reason(dropped)
    lines += ["", f"Drops by rule (margin ≥ {BUCC_THRESHOLD:.4f}):"] + by_reason(dropped_thr)
    write_md("filter-bucc", "\n".join(lines) + "\n", {"model": args.model, "gold": len(gold), "report_all": rep.to_dict(),
                                                       "report_threshold": rep_thr.to_dict()})


# ----------------------------------------------------------------------------------- distractors

SETS = {"deu": ("deu", ["nld", "afr", "dan", "swe", "fra", "pol"]),
        "zho": ("cmn", ["jpn", "kor", "vie", "tha", "rus", "fra"]),
        "hin": ("hin", ["mar", "urd", "ben", "pes", "ara", "tam"])}


def build_set(tdir: Path, main: str, others: list[str], seed: int = 0, gold_max: int = 600, per_other: int = 100):
    """(src lines, tgt lines, origin of each text): see the module docstring."""
    rng = random.Random(seed)
    xs, es = read_lines(tdir / f"tatoeba.{main}-eng.{main}"), read_lines(tdir / f"tatoeba.{main}-eng.eng")
    src, tgt, origin_s, origin_t = [], [], {}, {}

    def add(side, origin, text, key):
        if text and text not in origin:
            origin[text] = key
            side.append(text)
            return True
        return False

    for i, (x, e) in enumerate(zip(xs[:gold_max], es[:gold_max])):
        if x not in origin_s and e not in origin_t:
            add(src, origin_s, x, i)
            add(tgt, origin_t, e, i)
    gold = set(origin_s.values()) & set(origin_t.values())
    for o in others:  # right meaning, wrong language: a sentence of another language and its English translation
        ys, fs = read_lines(tdir / f"tatoeba.{o}-eng.{o}"), read_lines(tdir / f"tatoeba.{o}-eng.eng")
        picks = rng.sample(range(len(ys)), min(per_other, len(ys)))
        for i in picks:
            if ys[i] not in origin_s and fs[i] not in origin_t:
                add(src, origin_s, ys[i], f"{o}:{i}")
                add(tgt, origin_t, fs[i], f"{o}:{i}")
    golds = sorted(gold)
    extra_s, extra_t = [], []
    for i in rng.sample(golds, 60):  # exact copies of gold pairs, both sides
        extra_s.append((xs[i], i))
        extra_t.append((es[i], i))
    for i in rng.sample(golds, 60):  # near copies: case and punctuation changed
        extra_s.append((xs[i].upper().rstrip(".!?。！？।") + " !", i))
        extra_t.append((es[i].lower().rstrip(".!?") + " ...", i))
    for i in rng.sample(golds, 40):  # the source sentence copied onto the target side (untranslated)
        extra_t.append((xs[i], f"copy:{i}"))
    hub = rng.choice(golds)
    for _ in range(20):  # one sentence repeated 20 times
        extra_s.append((xs[hub], hub))
    for k in range(30):  # numbers and URLs that differ
        extra_s.append((f"{xs[golds[k]]} {1900 + k}", f"num:{k}"))
        extra_t.append((f"{es[golds[k]]} {1950 + k}", f"num:{k}x"))
        extra_s.append((f"{xs[golds[k + 30]]} https://example.org/{k}", f"url:{k}"))
        extra_t.append((f"{es[golds[k + 30]]} https://example.net/{k + 7}", f"url:{k}x"))
    src += [t for t, _ in extra_s]
    tgt += [t for t, _ in extra_t]
    for t, key in extra_s:
        origin_s.setdefault(t, key)
    for t, key in extra_t:
        origin_t.setdefault(t, key)
    order_s, order_t = list(range(len(src))), list(range(len(tgt)))
    rng.shuffle(order_s)
    rng.shuffle(order_t)
    return [src[i] for i in order_s], [tgt[i] for i in order_t], origin_s, origin_t, gold


def write_if_changed(path: Path, lines: list[str]) -> Path:
    text = "".join(s.replace("\n", " ") + "\n" for s in lines)
    if not path.exists() or path.read_text(encoding="utf-8") != text:  # unchanged files keep their cached embeddings
        path.write_text(text, encoding="utf-8")
    return path


def cmd_distractors(args) -> None:
    from bitextmine.fs import default_cache_dir

    tdir = Path(args.data) / "tatoeba"
    work = default_cache_dir() / "bench-filter"
    work.mkdir(parents=True, exist_ok=True)
    lines = ["# Filtering mined pairs: Tatoeba with distractors", "", f"Command: `{command()}`", "",
             f"Model: `{args.model}`; mined with `mine_files` (k=4, ratio margin, max strategy, exact search, no threshold), "
             "then `filter_pairs` with the defaults and the two languages given. Each set: "
             "the first 600 Tatoeba pairs (gold); 100 sentences of each of 6 other languages with their English translations (right meaning, wrong language); "
             "60 exact and 60 near copies (case, punctuation) of gold pairs; 40 source sentences copied onto the target side; "
             "one source sentence 20 times; 30 pairs each whose numbers or URLs differ. A pair is correct when both sides come "
             "from the same gold pair, the first time that pair is output.", ""]
    data = {}
    for group, (main, others) in SETS.items():
        src, tgt, os_, ot, gold = build_set(tdir, main, others)
        ps = write_if_changed(work / f"{main}.src.txt", src)
        pt = write_if_changed(work / f"{main}.tgt.txt", tgt)
        _, score, st, tt = mine(ps, pt, args.model, False)
        rows = []
        for s, a, b in zip(score, st, tt):
            ka, kb = os_.get(a), ot.get(b)
            rows.append((float(s), a, b, ka if (ka == kb and ka in gold) else None))
        rows = mark_first(rows)
        kept, dropped, rep = run_filters(rows, FilterOptions(src_lang=group, tgt_lang="eng"))
        lang_only, _, _ = run_filters(rows, FilterOptions(src_lang=group, tgt_lang="eng", dedup="none", max_per_src=None,
                                                          max_per_tgt=None, max_ratio=None, max_overlap=None, numbers=False,
                                                          urls=False))
        no_lid, _, _ = run_filters(rows, FilterOptions(src_lang=group, tgt_lang="eng", lid=False))
        lines += table(f"{main}-eng + {', '.join(others)} ({len(src):,} × {len(tgt):,} sentences)",
                       [("all mined pairs", rows), ("filtered: language ID only", lang_only),
                        ("filtered: every rule but language ID", no_lid), ("filtered: all rules (default)", kept)], len(gold))
        lines += by_reason(dropped) + [""]
        data[main] = {"sentences": [len(src), len(tgt)], "gold": len(gold), "report": rep.to_dict(),
                      "before": evaluate(rows), "after": evaluate(kept)}
    write_md("filter-distractors", "\n".join(lines) + "\n", {"model": args.model, "sets": data})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=["lid", "rules", "bucc", "distractors", "all"])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--model", default="default", help="'default' or a model folder (the tiny test model works too)")
    args = ap.parse_args()
    parse_language("eng")
    for name, fn in (("lid", cmd_lid), ("rules", cmd_rules), ("bucc", cmd_bucc), ("distractors", cmd_distractors)):
        if args.what in (name, "all"):
            fn(args)


if __name__ == "__main__":
    main()
