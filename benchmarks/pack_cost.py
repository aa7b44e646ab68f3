"""What shipping a fine-tuned model as a quantised delta costs: the packed model against the folder it was packed from.

Embeds the same sentences with both models and reports the per-sentence cosine between their
vectors, and Tatoeba retrieval accuracy (both directions, nearest by cosine, as `bench tatoeba`
scores it) of each on a sample of languages. The issue's budget is <= 0.2 points.

  .venv/bin/python benchmarks/pack_cost.py runs/default/model bitextmine/models/default \
      --langs deu,fra,rus,cmn,jpn,kor,ara,hin,est,eus,kaz,swh --pairs 300 --name pack-cost-default
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, header, write_result  # noqa: E402

from bitextmine.bench.tatoeba import find_tatoeba  # noqa: E402
from bitextmine.encoder import Encoder  # noqa: E402
from bitextmine.models.loader import load_model  # noqa: E402
from bitextmine.retrieval import accuracy  # noqa: E402


def read(path: Path, n: int) -> list[str]:
    with open(path, encoding="utf-8") as fh:
        return [line.rstrip("\n") for _, line in zip(range(n), fh)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("reference", help="the model folder that was packed")
    ap.add_argument("packed", help="the delta folder (or any --model spec)")
    ap.add_argument("--data", default="../shared/data/tatoeba")
    ap.add_argument("--langs", default="deu,fra,rus,cmn,jpn,kor,ara,hin,est,eus,kaz,swh")
    ap.add_argument("--pairs", type=int, default=300, help="first N pairs per language")
    ap.add_argument("--name", default="pack-cost")
    args = ap.parse_args()

    files = find_tatoeba(args.data)
    langs = args.langs.split(",")
    encs = {"reference": Encoder(load_model(args.reference), precision="fp32"), "packed": Encoder(load_model(args.packed), precision="fp32")}
    rows, cosines = [], []
    for lang in langs:
        xx, en = (read(p, args.pairs) for p in files[lang])
        vec = {k: (e.encode(xx), e.encode(en)) for k, e in encs.items()}
        for side in (0, 1):
            a, b = vec["reference"][side], vec["packed"][side]
            cosines.append(np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1))
        acc = {k: 100 * float(np.mean(accuracy(*v))) for k, v in vec.items()}  # %, mean of both directions
        rows.append({"lang": lang, "pairs": len(xx), **acc, "diff": acc["packed"] - acc["reference"]})
        print(f"{lang}: reference {acc['reference']:.2f}  packed {acc['packed']:.2f}", flush=True)
    cos = np.concatenate(cosines)
    mean = {k: float(np.mean([r[k] for r in rows])) for k in ("reference", "packed")}
    result = {**header(), "reference": args.reference, "packed": args.packed, "langs": langs, "pairs": args.pairs,
              "cosine": {"min": float(cos.min()), "mean": float(cos.mean()), "p01": float(np.quantile(cos, 0.01))},
              "mean": mean, "mean_diff": mean["packed"] - mean["reference"], "rows": rows,
              }
    lines = [f"# Packing cost: {args.packed} vs {args.reference}", "", f"Command: `{result['command']}`", "",
             f"Per-sentence cosine between the two models' vectors over {len(cos):,} sentences: min {cos.min():.7f}, "
             f"1st percentile {result['cosine']['p01']:.7f}, mean {cos.mean():.7f}. Accuracy: Tatoeba retrieval, % (mean of "
             "xx→eng and eng→xx, nearest by cosine).", "",
             "| lang | pairs | reference | packed | diff |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {r['lang']} | {r['pairs']} | {r['reference']:.2f} | {r['packed']:.2f} | {r['diff']:+.2f} |" for r in rows]
    lines += [f"| mean | | {mean['reference']:.2f} | {mean['packed']:.2f} | {result['mean_diff']:+.2f} |"]
    write_result(args.name, result)
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
