"""Memory and speed of ``bitextmine filter`` as the input grows: does it stream?

    .venv/bin/python benchmarks/filter_scale.py [--sizes 100000,1000000,3000000] [--lid-sizes 100000,1000000]
    → results/filter-scale.md (+ .json)

Input: synthetic ``mine`` output (``score<TAB>src<TAB>tgt``), German-like and English-like
sentences of 5–14 random words from two 2,000-word vocabularies, every pair distinct except a 5%
share of exact repeats (so dedup works and the hash tables hold ~N entries: the worst case for
memory). Each run is a fresh ``bitextmine filter`` process with the default rules; its peak RSS
(``getrusage`` of the child) and wall time are measured, and the report's ``dedup_bytes`` (the
hash tables) is read back. Runs without language ID (``--no-lid``) show the rules and dedup
alone; with language ID, py3langid classifies both sides of every pair.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, command, header  # noqa: E402

def vocab(seed: int, n: int = 2000) -> list[str]:
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    return ["".join(rng.choice(letters) for _ in range(rng.randint(3, 9))) for _ in range(n)]


def write_input(path: Path, n: int) -> None:
    rng = random.Random(n)
    de, en = vocab(1), vocab(2)
    recent: list[str] = []
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            if recent and rng.random() < 0.05:
                fh.write(rng.choice(recent))
                continue
            k = rng.randint(5, 14)
            idx = [rng.randrange(2000) for _ in range(k)]
            line = f"{1.3 - i / (10 * n):.6f}\t" + " ".join(de[j] for j in idx) + "\t" + " ".join(en[j] for j in idx) + "\n"
            recent = (recent + [line])[-1000:]
            fh.write(line)


CHILD = """
import sys
from bitextmine.cli import app
try:
    app(sys.argv[1:], prog_name="bitextmine")
except SystemExit as e:
    code = e.code
else:
    code = 0
hwm = [ln for ln in open("/proc/self/status") if ln.startswith("VmHWM")][0].split()[1]
print("VmHWM_KiB", hwm, file=sys.stderr)
sys.exit(code)
"""


def run_filter(inp: Path, out: Path, lid: bool) -> dict:
    """One ``bitextmine filter`` process; its own peak RSS (VmHWM) and wall time."""
    report = out.with_suffix(".json")
    args = ["filter", str(inp), "--out", str(out), "--report", str(report), "--src-lang", "de", "--tgt-lang", "en"]
    if not lid:
        args.append("--no-lid")
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", CHILD, *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    secs = time.perf_counter() - t0
    hwm = int(next(ln.split()[1] for ln in p.stderr.splitlines() if ln.startswith("VmHWM_KiB")))
    doc = json.loads(report.read_text())
    f = doc.get("filter", doc)
    return {"seconds": secs, "peak_rss_mib": hwm / 1024, "kept": f.get("kept"), "total": f.get("total"),
            "dedup_bytes": f.get("dedup_bytes"), "dropped": f.get("dropped")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="100000,1000000,3000000")
    ap.add_argument("--lid-sizes", default="100000,1000000")
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for lid, sizes in ((False, a.sizes), (True, a.lid_sizes)):
            for n in [int(x) for x in sizes.split(",") if x]:
                inp = Path(tmp) / f"in-{n}.tsv"
                if not inp.exists():
                    write_input(inp, n)
                r = run_filter(inp, Path(tmp) / f"out-{n}-{lid}.tsv", lid)
                r.update(lines=n, lid=lid, input_mib=inp.stat().st_size / 2**20)
                rows.append(r)
                print(json.dumps(r), flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    doc = {**header(), "command": command(), "load_before": os.getloadavg(), "rows": rows}
    (RESULTS / "filter-scale.json").write_text(json.dumps(doc, indent=1) + "\n")
    md = ["# `bitextmine filter` memory and speed by input size", "",
          f"Command: `{command()}`", "",
          f"Machine: {doc['machine']['cpu_model']}, load average {os.getloadavg()[0]:.1f} at the end. "
          "Synthetic mined pairs, 95% distinct (the hash tables' worst case). Peak RSS is the filter process's (Python, "
          "pyarrow and py3langid loaded).", "",
          "| lines | input MiB | language ID | seconds | lines/s | peak RSS MiB | dedup tables MiB | bytes per line (tables) |",
          "|---:|---:|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        tb = (r["dedup_bytes"] or 0) / 2**20
        md.append(f"| {r['lines']:,} | {r['input_mib']:.0f} | {'yes' if r['lid'] else 'no'} | {r['seconds']:.1f} | "
                  f"{r['lines'] / r['seconds']:,.0f} | {r['peak_rss_mib']:.0f} | {tb:.1f} | {(r['dedup_bytes'] or 0) / r['lines']:.1f} |")
    (RESULTS / "filter-scale.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
