"""Ablation on this machine: TR only vs DAP (TR + RTL), same data, steps and seed, from the packaged model.

Trains each variant with the offline recipe (shortened with --steps), exports it, then evaluates
the base model and every exported model with the project's benchmarks — Tatoeba accuracy on the
36 DAP languages (both directions) and BUCC 2018 zh-en F1 (best threshold on the sample split,
the only split with public gold here) — and writes a JSON record and a Markdown table under
benchmarks/results/. Rerunning resumes unfinished trainings and reuses finished ones; the bench
embedding cache is reused too.

  .venv/bin/python benchmarks/train_ablation.py --steps 500 --name train_ablation
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import header, write_result  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {
    "tr": ["objective.rtl_weight=0"],
    "dap": [],  # the recipe's rtl_weight (0.1, as the released code)
    "dap-w1": ["objective.rtl_weight=1.0"],  # the paper's equation
}


def bench(kind: str, model: str, out: Path, data_root: Path) -> tuple[list[str], dict]:
    exe = str(Path(sys.executable).with_name("bitextmine"))
    if kind == "tatoeba":
        cmd = [exe, "bench", "tatoeba", "--data", str(data_root / "tatoeba"), "--langs", "dap36", "--model", model, "--json", str(out)]
    else:
        cmd = [exe, "bench", "bucc", "--data", str(data_root / "bucc2018"), "--pairs", "zh-en", "--model", model, "--json", str(out)]
    if not out.is_file():
        subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return cmd, json.loads(out.read_text())


def summarize_tatoeba(d: dict) -> dict:
    rows = {r["lang"]: (r["xx2eng"], r["eng2xx"]) for r in d["results"]}
    both = [v for pair in rows.values() for v in pair]
    return {"mean_both": sum(both) / len(both), "xx2eng": sum(r[0] for r in rows.values()) / len(rows),
            "eng2xx": sum(r[1] for r in rows.values()) / len(rows), "langs": rows}


def summarize_bucc(d: dict) -> dict:
    """zh-en on the sample split: F1 at the best threshold (tuned on the same split), P, R, threshold."""
    r = d["results"][0]["tune"]
    return {k: r[k] for k in ("split", "f1", "precision", "recall", "threshold", "extracted", "correct", "gold")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="train/configs/offline-cpu.toml")
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--eval-every", type=int, default=125)
    ap.add_argument("--variants", default="tr,dap")
    ap.add_argument("--set", action="append", default=[], help="extra overrides for every variant")
    ap.add_argument("--runs", default="runs/ablation")
    ap.add_argument("--data-root", default="../shared/data")
    ap.add_argument("--name", default="train_ablation")
    ap.add_argument("--note", action="append", default=[], help="a line for the Notes section of the Markdown (repeatable)")
    ap.add_argument("--render", default=None, help="only rewrite the Markdown of this result JSON")
    args = ap.parse_args()
    if args.render:
        p = Path(args.render)
        p.with_suffix(".md").write_text(markdown(json.loads(p.read_text())))
        return

    from bitextmine.training.config import load_config
    from bitextmine.training.loop import train

    head = header()
    runs = ROOT / args.runs
    runs.mkdir(parents=True, exist_ok=True)
    data_root = (ROOT / args.data_root).resolve()
    record: dict = {"benchmark": "train_ablation", **head, "config": args.config, "steps": args.steps, "variants": {}, "notes": args.note}
    models = {"base": "default"}
    for name in args.variants.split(","):
        overrides = [*args.set, *VARIANTS[name], f"optim.steps={args.steps}", f"eval.every={args.eval_every}", f"run.output_dir='{args.runs}/{name}'"]
        cli = ["bitextmine", "train", "--config", args.config, *[x for o in overrides for x in ("--set", o)]]
        cfg = load_config(ROOT / args.config if not Path(args.config).is_absolute() else args.config, overrides)
        log = open(runs / f"{name}.log", "a", encoding="utf-8")
        evals: list[dict] = []

        def progress(ev, log=log, evals=evals) -> None:  # a bitextmine.events.Event
            e = ev.data
            if ev.kind in ("log", "eval", "export", "data_ready", "train_start", "checkpoint"):
                log.write(json.dumps({"event": ev.kind, **{k: v for k, v in e.items() if k != "report"}}, default=str) + "\n")
                log.flush()
            if ev.kind == "eval":
                evals.append({"step": e["step"], **{k: v["mean"] for k, v in e["results"].items()}})

        t0 = time.perf_counter()
        res = train(cfg, progress=progress)
        log.close()
        metrics = [json.loads(x) for x in (Path(cfg.run.output_dir) / "metrics.jsonl").read_text().splitlines()]
        train_recs = [m for m in metrics if m["kind"] == "train"]
        record["variants"][name] = {
            "command": shlex.join(cli), "overrides": overrides, "model_dir": str(res.model_dir), "best": res.best,
            "seconds_this_call": time.perf_counter() - t0,
            "median_steps_per_s": sorted(m["steps_per_s"] for m in train_recs)[len(train_recs) // 2] if train_recs else None,
            "dev_evals": [m for m in metrics if m["kind"] == "eval"],
            "final_train": train_recs[-1] if train_recs else None,
        }
        models[name] = str(res.model_dir)
    # the base model on the same dev set the runs select on (flores, same languages, pairs and truncation)
    base_dev = runs / "dev-base.json"
    if not base_dev.is_file():
        from bitextmine.models.loader import load_model
        from bitextmine.training.data.devsets import flores_dev
        from bitextmine.training.evaluate import evaluate

        cfg = load_config(ROOT / args.config, args.set)
        lm = load_model("default")
        sets = flores_dev(ROOT / cfg.eval.flores_dir, cfg.eval.languages, cfg.eval.max_pairs)
        ev = evaluate(lm.model, lm.tokenizer, lm.recipe.with_overrides(max_tokens=cfg.eval.max_tokens or cfg.data.max_length), sets)
        base_dev.write_text(json.dumps(ev))
    record["variants"]["base"] = {"dev": json.loads(base_dev.read_text())}
    results = {}
    for name, model in models.items():
        tcmd, tat = bench("tatoeba", model, runs / f"tatoeba-{name}.json", data_root)
        bcmd, buc = bench("bucc", model, runs / f"bucc-{name}.json", data_root)
        results[name] = {"tatoeba_command": shlex.join(tcmd), "bucc_command": shlex.join(bcmd),
                         "tatoeba": summarize_tatoeba(tat), "bucc": summarize_bucc(buc)}
    record["results"] = results
    path = write_result(args.name, record)
    md = path.with_suffix(".md")
    md.write_text(markdown(record))
    print(md.read_text())
    print(f"wrote {path} and {md}")


def markdown(rec: dict) -> str:
    lines = [f"# {rec['benchmark']}: TR only vs DAP, {rec['steps']} steps from the packaged model", "",
             f"Collected {rec['started']} on {rec['machine']['cores']} cores ({rec['machine']['cpu_model']}); recipe `{rec['config']}`.", "",
             f"Made by: `{rec['command'].split(' --note ')[0]}` (with the notes below as `--note` arguments).", "",
             "| model | Tatoeba-36 mean (both) | xx→eng | eng→xx | BUCC zh-en F1 (P / R) | dev flores p@1 (best step) | steps/s |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in rec["results"].items():
        t, b = r["tatoeba"], r["bucc"]
        v = rec["variants"].get(name, {})
        best = v.get("best") or {}
        dev = f"{100 * best['score']:.2f} ({best['step']})" if best else (f"{100 * v['dev']['flores']['mean']:.2f}" if "dev" in v else "—")
        sps = f"{v['median_steps_per_s']:.2f}" if v.get("median_steps_per_s") else "—"
        lines.append(f"| {name} | {100 * t['mean_both']:.2f} | {100 * t['xx2eng']:.2f} | {100 * t['eng2xx']:.2f} | "
                     f"{100 * b['f1']:.2f} ({100 * b['precision']:.1f} / {100 * b['recall']:.1f}) | {dev} | {sps} |")
    names = list(rec["results"])
    lines += ["", "Tatoeba per language, mean of xx→eng and eng→xx (%):", "", "| lang | " + " | ".join(names) + " |",
              "|---|" + "---:|" * len(names)]
    langs = rec["results"][names[0]]["tatoeba"]["langs"]
    for lang in langs:
        vals = [sum(rec["results"][n]["tatoeba"]["langs"][lang]) / 2 for n in names]
        lines.append(f"| {lang} | " + " | ".join(f"{100 * v:.1f}" for v in vals) + " |")
    if rec.get("notes"):
        lines += ["", "Notes:", ""] + [f"- {n}" for n in rec["notes"]]
    lines += ["", "Commands:", ""]
    for name, v in rec["variants"].items():
        if "command" in v:
            lines.append(f"- train {name}: `{v['command']}`")
    for name, r in rec["results"].items():
        lines.append(f"- eval {name}: `{r['tatoeba_command']}`; `{r['bucc_command']}`")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
