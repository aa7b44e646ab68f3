"""Ablation on this machine: TR only vs DAP (TR + RTL), same data, steps and seed, from the packaged model.

Trains each variant with the offline recipe (shortened with --steps), exports it, then evaluates
the base model and every exported model with the project's benchmarks — Tatoeba accuracy on the
36 DAP languages (both directions) and BUCC 2018 zh-en F1 (best threshold on the sample split,
the only split with public gold here) — and writes a JSON record and a Markdown table under
benchmarks/results/. Rerunning resumes unfinished trainings and reuses finished ones; the bench
embedding cache is reused too.

  .venv/bin/python benchmarks/train_ablation.py --steps 500 --name train_ablation

With ``--seeds 0,1,2`` every variant is trained once per seed (runs ``<variant>-s<seed>``), and the
Markdown gives each variant's mean +- sd over its seeds beside the per-run rows. The base is the
untouched multilingual-E5-small (``--model e5-small``).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from types import SimpleNamespace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import header, write_result  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {
    "tr": ["objective.rtl_weight=0"],
    "dap": ["objective.rtl_weight=0.1"],  # as the released code
    "dap-w1": ["objective.rtl_weight=1.0"],  # the paper's equation
    # levers of issue 11, each against "tr"
    "tr-both": ["objective.rtl_weight=0", "objective.direction='both'"],  # en queries over xx candidates too
    "tr-b64": ["objective.rtl_weight=0", "optim.batch_size=64"],  # twice the in-batch (and hard) negatives
}


def bench(kind: str, model: str, out: Path, data_root: Path) -> tuple[list[str], dict]:
    exe = str(Path(sys.executable).with_name("bitextmine"))
    if kind == "tatoeba":
        cmd = [exe, "bench", "tatoeba", "--data", str(data_root / "tatoeba"), "--langs", "dap36", "--model", model, "--json", str(out)]
    else:
        cmd = [exe, "bench", "bucc", "--data", str(data_root / "bucc2018"), "--pairs", "zh-en", "--model", model, "--json", str(out)]
    if not out.is_file():
        subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    shown = ["bitextmine", *(os.path.relpath(c, ROOT) if c.startswith("/") else c for c in cmd[1:])]  # as a user types it
    return shown, json.loads(out.read_text())


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
    ap.add_argument("--seeds", default=None, help="comma-separated seeds: each variant trained once per seed")
    ap.add_argument("--set", action="append", default=[], help="extra overrides for every variant")
    ap.add_argument("--runs", default="runs/ablation")
    ap.add_argument("--data-root", default="../shared/data")
    ap.add_argument("--name", default="train_ablation")
    ap.add_argument("--note", action="append", default=[], help="a line for the Notes section of the Markdown (repeatable)")
    ap.add_argument("--train-only", action="store_true", help="train (or resume) the runs and stop: to train variants in parallel processes, then collect")
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
    models = {"base": "e5-small"}
    seeds = [None] if args.seeds is None else [int(x) for x in args.seeds.split(",")]
    record["seeds"] = seeds
    for variant, seed in [(v, sd) for v in args.variants.split(",") for sd in seeds]:
        name = variant if seed is None else f"{variant}-s{seed}"
        seeded = [] if seed is None else [f"run.seed={seed}"]
        overrides = [*args.set, *VARIANTS[variant], *seeded, f"optim.steps={args.steps}", f"eval.every={args.eval_every}",
                     f"run.output_dir='{args.runs}/{name}'"]
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
        info = Path(cfg.run.output_dir) / "model" / "training_info.json"
        if info.is_file() and json.loads(info.read_text())["step"] >= args.steps:  # finished and exported: no data preparation again
            res = SimpleNamespace(model_dir=info.parent, best=json.loads(info.read_text())["best"])
        else:
            res = train(cfg, progress=progress)
        log.close()
        metrics = [json.loads(x) for x in (Path(cfg.run.output_dir) / "metrics.jsonl").read_text().splitlines()]
        train_recs = [m for m in metrics if m["kind"] == "train"]
        record["variants"][name] = {
            "variant": variant, "seed": seed, "command": shlex.join(cli), "overrides": overrides, "model_dir": str(res.model_dir), "best": res.best,
            "seconds_this_call": time.perf_counter() - t0,
            "median_steps_per_s": sorted(m["steps_per_s"] for m in train_recs)[len(train_recs) // 2] if train_recs else None,
            "dev_evals": [m for m in metrics if m["kind"] == "eval"],
            "final_train": train_recs[-1] if train_recs else None,
        }
        models[name] = str(res.model_dir)
    if args.train_only:
        return
    # the base model on the same dev set the runs select on (flores, same languages, pairs and truncation)
    base_dev = runs / "dev-base.json"
    if not base_dev.is_file() and load_config(ROOT / args.config, args.set).eval.select_on == "flores":
        from bitextmine.models.loader import load_model
        from bitextmine.training.data.devsets import flores_dev
        from bitextmine.training.evaluate import evaluate

        cfg = load_config(ROOT / args.config, args.set)
        lm = load_model("e5-small")
        sets = flores_dev(ROOT / cfg.eval.flores_dir, cfg.eval.languages, cfg.eval.max_pairs)
        ev = evaluate(lm.model, lm.tokenizer, lm.recipe.with_overrides(max_tokens=cfg.eval.max_tokens or cfg.data.max_length), sets)
        base_dev.write_text(json.dumps(ev))
    if base_dev.is_file():
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


def _dev_at_best(v: dict) -> dict:
    """The dev metrics of a run's selected step (``mining_f1``, ``flores_p@1``...) and of its step 0 (the base)."""
    best = v.get("best") or {}
    evals = {e["step"]: e for e in v.get("dev_evals", [])}
    pick = lambda e: {k: x for k, x in e.items() if k.endswith(("_f1", "_p@1"))}  # noqa: E731
    return {"best": pick(evals.get(best.get("step"), {})), "start": pick(evals.get(0, {}))}


def _mean_sd(xs: list[float]) -> str:
    if not xs:
        return "—"
    m = sum(xs) / len(xs)
    sd = (sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) ** 0.5 if len(xs) > 1 else 0.0
    return f"{100 * m:.2f} ± {100 * sd:.2f}"


def markdown(rec: dict) -> str:
    seeded = any(v.get("seed") is not None for v in rec["variants"].values())
    what = "TR only vs DAP" + (f", seeds {', '.join(str(s) for s in rec.get('seeds', []))}" if seeded else "")
    lines = [f"# {rec['benchmark']}: {what}, {rec['steps']} steps", "",
             f"Collected {rec['started']} on {rec['machine']['cores']} cores ({rec['machine']['cpu_model']}); recipe `{rec['config']}`.", "",
             f"Made by: `{rec['command'].split(' --note ')[0]}` (with the notes below as `--note` arguments).", "",
             "| model | Tatoeba-36 mean (both) | xx→eng | eng→xx | BUCC zh-en F1 (P / R) | dev at the selected step | steps/s |",
             "|---|---:|---:|---:|---:|---|---:|"]
    for name, r in rec["results"].items():
        t, b = r["tatoeba"], r["bucc"]
        v = rec["variants"].get(name, {})
        best = v.get("best") or {}
        dev_m = _dev_at_best(v)["best"]
        dev = ", ".join(f"{k} {100 * x:.2f}" for k, x in dev_m.items()) + f" (step {best['step']})" if best else (
            f"flores {100 * v['dev']['flores']['mean']:.2f}" if "dev" in v else "—")
        sps = f"{v['median_steps_per_s']:.2f}" if v.get("median_steps_per_s") else "—"
        lines.append(f"| {name} | {100 * t['mean_both']:.2f} | {100 * t['xx2eng']:.2f} | {100 * t['eng2xx']:.2f} | "
                     f"{100 * b['f1']:.2f} ({100 * b['precision']:.1f} / {100 * b['recall']:.1f}) | {dev} | {sps} |")
    if seeded:
        groups: dict[str, list[str]] = {}
        for name, v in rec["variants"].items():
            if v.get("variant") and name in rec["results"]:
                groups.setdefault(v["variant"], []).append(name)
        keys = sorted({k for v in rec["variants"].values() for k in _dev_at_best(v)["best"]})
        lines += ["", "Mean ± sd over seeds (sample sd; each seed also draws its own dev split and data order):", "",
                  "| variant | runs | " + " | ".join(f"dev {k} (selected step)" for k in keys) + " | Tatoeba-36 | BUCC zh-en F1 |",
                  "|---|---:|" + "---:|" * (len(keys) + 2)]
        starts = [_dev_at_best(v)["start"] for v in rec["variants"].values() if v.get("variant")]
        if starts and all(starts):
            lines.append("| base (step 0 of each run) | " + str(len(starts)) + " | " + " | ".join(_mean_sd([s[k] for s in starts if k in s]) for k in keys)
                         + f" | {100 * rec['results']['base']['tatoeba']['mean_both']:.2f} | {100 * rec['results']['base']['bucc']['f1']:.2f} |")
        for variant, names in groups.items():
            devs = [_dev_at_best(rec["variants"][n])["best"] for n in names]
            lines.append(f"| {variant} | {len(names)} | " + " | ".join(_mean_sd([d[k] for d in devs if k in d]) for k in keys)
                         + f" | {_mean_sd([rec['results'][n]['tatoeba']['mean_both'] for n in names])}"
                         + f" | {_mean_sd([rec['results'][n]['bucc']['f1'] for n in names])} |")
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
