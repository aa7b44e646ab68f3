"""Tables for the shipped default model against its base, from `bench` JSON files made by the commands below.

  bitextmine bench tatoeba --data ../shared/data/tatoeba --langs dap36 --model e5-small --json base36.json
  bitextmine bench tatoeba --data ../shared/data/tatoeba --langs dap36 --model default  --json new36.json
  bitextmine bench tatoeba --data ../shared/data/tatoeba --langs rest  --model e5-small --json baserest.json
  bitextmine bench tatoeba --data ../shared/data/tatoeba --langs rest  --model default  --json newrest.json
  bitextmine bench bucc --data ../shared/data/bucc2018 --model e5-small --json basebucc.json
  bitextmine bench bucc --data ../shared/data/bucc2018 --model default  --json newbucc.json
  python benchmarks/default_vs_base.py --tatoeba36 base36.json new36.json --rest baserest.json newrest.json \
      --bucc basebucc.json newbucc.json --name default-vs-base

Prints (and writes to benchmarks/results/NAME.md and .json) the averages, the per-language tables and
the guard of issue 11: no Tatoeba language may lose more than 1 point against the base (checked on
languages with at least --min-pairs pairs, where one point is at least that many sentences' worth of
noise), and the mean over the languages outside training must not drop.

With ``--train-langs DIR`` (the folder of ``<xx>-en.tsv`` files the model was trained on, e.g. the output of
``train/prepare_gettext.py``), all Tatoeba languages of both files are split again into those trained on
and those outside training; a Tatoeba code counts as trained when it names the same language (ISO 639-3
code or macrolanguage, as ``bitextmine.filters.langs`` resolves it) as one of the training files.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, header, write_result  # noqa: E402


def tatoeba(path: str) -> dict[str, dict]:
    d = json.loads(Path(path).read_text())
    return {r["lang"]: {"pairs": r["pairs"], "mean": 100 * r["mean"], "xx2eng": 100 * r["xx2eng"], "eng2xx": 100 * r["eng2xx"]}
            for r in d["results"]}


def bucc(path: str) -> dict:
    d = json.loads(Path(path).read_text())
    t = d["results"][0]["tune"]
    return {k: t[k] for k in ("precision", "recall", "f1", "threshold") if k in t}


#: ISO 639-1 codes of training files that the language identifier's table lacks, as ISO 639-3 (Tatoeba's codes)
ISO1_MISSING = {"co": "cos", "gn": "grn", "ia": "ina", "ie": "ile", "ks": "kas"}


def _group(code: str) -> str:
    """A language code's ISO 639-3 macrolanguage or code; the code itself where the language table lacks it."""
    from bitextmine.errors import InputError
    from bitextmine.filters.langs import parse_language

    base = code.split("_")[0].lower()
    base = ISO1_MISSING.get(base, base)
    try:
        return parse_language(base).group
    except InputError:
        return base


def trained_groups(folder: str) -> set[str]:
    """Language groups of the ``<xx>-en.tsv`` training files in ``folder`` (script suffixes ignored)."""
    return {_group(p.name[: -len("-en.tsv")]) for p in Path(folder).glob("*-en.tsv")}


def compare(base: dict[str, dict], new: dict[str, dict], title: str, min_pairs: int) -> tuple[list[str], dict]:
    langs = sorted(set(base) & set(new))
    rows = [(lang, base[lang]["pairs"], base[lang]["mean"], new[lang]["mean"]) for lang in langs]
    mb, mn = (sum(r[i] for r in rows) / len(rows) for i in (2, 3))
    losers = [(lang, n, b, v) for lang, n, b, v in rows if n >= min_pairs and v < b - 1.0]
    lines = [f"### {title}: mean {mb:.2f} → {mn:.2f} ({mn - mb:+.2f}) over {len(rows)} languages", "",
             "| lang | pairs | base | default | diff |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {lang} | {n} | {b:.1f} | {v:.1f} | {v - b:+.1f} |" for lang, n, b, v in rows]
    lines.append("")
    summary = {"languages": len(rows), "base_mean": mb, "new_mean": mn,
               "lost_more_than_1_point": [{"lang": lang, "pairs": n, "base": b, "new": v} for lang, n, b, v in losers]}
    return lines, summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tatoeba36", nargs=2, metavar=("BASE", "NEW"))
    ap.add_argument("--rest", nargs=2, metavar=("BASE", "NEW"))
    ap.add_argument("--bucc", nargs=2, metavar=("BASE", "NEW"))
    ap.add_argument("--train-langs", metavar="DIR", help="split Tatoeba by the languages of DIR/<xx>-en.tsv instead of dap36/rest")
    ap.add_argument("--min-pairs", type=int, default=300)
    ap.add_argument("--name", default="default-vs-base")
    args = ap.parse_args()
    out, result = [f"# The shipped default model against its base (multilingual-E5-small)", ""], {**header()}
    if args.bucc:
        b, n = bucc(args.bucc[0]), bucc(args.bucc[1])
        out += ["| BUCC 2018 zh-en sample (best threshold) | P | R | F1 | threshold |", "|---|---:|---:|---:|---:|"]
        out += [f"| {name} | {100 * r['precision']:.2f} | {100 * r['recall']:.2f} | {100 * r['f1']:.2f} | {r['threshold']:.4f} |"
                for name, r in (("base", b), ("default", n))]
        out.append("")
        result["bucc"] = {"base": b, "default": n}
    files = {key: getattr(args, key) for key in ("tatoeba36", "rest")}
    titles = {"tatoeba36": "Tatoeba, the 36 training languages", "rest": "Tatoeba, the languages outside training"}
    if args.train_langs:
        if not (args.tatoeba36 and args.rest):
            ap.error("--train-langs needs both --tatoeba36 and --rest")
        groups = trained_groups(args.train_langs)
        if not groups:
            ap.error(f"--train-langs: no <xx>-en.tsv files in {args.train_langs}")
        both = [{**tatoeba(args.tatoeba36[i]), **tatoeba(args.rest[i])} for i in (0, 1)]
        split = {"trained": {x for x in both[0] if _group(x) in groups}}
        split["outside"] = set(both[0]) - split["trained"]
        files = {key: [{x: v for x, v in d.items() if x in split[key]} for d in both] for key in split}
        titles = {"trained": f"Tatoeba, languages trained on ({args.train_langs})", "outside": "Tatoeba, the languages outside training"}
    for key, title in titles.items():
        pair = files[key]
        if pair:
            lines, summary = compare(*(tatoeba(p) if isinstance(p, str) else p for p in pair), title, args.min_pairs)
            out += lines
            result[key] = summary
            lost = summary["lost_more_than_1_point"]
            out += [f"Languages with >= {args.min_pairs} pairs that lose more than 1 point: "
                    + (", ".join(f"{x['lang']} ({x['new'] - x['base']:+.1f})" for x in lost) if lost else "none"), ""]
    if args.tatoeba36 and args.rest:  # Tatoeba-112: every language, both files together
        base = {**tatoeba(args.tatoeba36[0]), **tatoeba(args.rest[0])}
        new = {**tatoeba(args.tatoeba36[1]), **tatoeba(args.rest[1])}
        langs = sorted(set(base) & set(new))
        mb = sum(base[x]["mean"] for x in langs) / len(langs)
        mn = sum(new[x]["mean"] for x in langs) / len(langs)
        result["all"] = {"languages": len(langs), "base_mean": mb, "new_mean": mn}
        out.insert(2, f"Tatoeba, all {len(langs)} languages: mean {mb:.2f} → {mn:.2f} ({mn - mb:+.2f}).\n")
    text = "\n".join(out) + "\n"
    print(text)
    write_result(args.name, result)
    (RESULTS / f"{args.name}.md").write_text(text)


if __name__ == "__main__":
    main()
