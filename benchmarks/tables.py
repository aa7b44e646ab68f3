"""Markdown tables from benchmarks/results/*.json.

    .venv/bin/python benchmarks/tables.py            # print them
    .venv/bin/python benchmarks/tables.py --write    # put them into benchmarks/README.md

``--write`` fills each ``<!-- tables: NAME -->`` marker of the README (up to its
``<!-- /tables: NAME -->`` end marker, added if missing) with the table of results/NAME.json.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def load(name: str) -> dict | None:
    p = RESULTS / f"{name}.json"
    return json.loads(p.read_text()) if p.is_file() else None


def machine_line(r: dict) -> str:
    m, v = r["machine"], r["versions"]
    vers = ", ".join(f"{k} {v[k]}" for k in ("torch", "transformers", "sentence-transformers", "faiss-cpu", "numpy") if v.get(k))
    load = f"load average {m['load_average_at_start'][0]:.1f} at start, {r.get('load_average_at_end', [0])[0]:.1f} at end"
    return f"Machine: {m['cores']} cores, {m['cpu_model']} ({', '.join(m['cpu_flags'])}), {m['memory_gib']} GiB; {vers}; {load}.  \nCommand: `{r['command']}` ({r['started']})."


def encode_speed(r: dict) -> str:
    out = [machine_line(r), "",
           f"{r['sentences']} sentences ({r['corpus']}), {r['tokens']['mean_per_sentence']} tokens a sentence; {r['trials']} trials of {r['chunk']} sentences; "
           f"{r['threads']} threads. Peak (2048³, same trials, median): fp32 {r['peak_gflops_wall_median']['fp32']} GFLOP/s, bf16 {r['peak_gflops_wall_median']['bf16']} GFLOP/s; "
           f"one core in CPU time: fp32 {r['peak_gflop_per_cpu_s_one_core']['fp32']}, bf16 {r['peak_gflop_per_cpu_s_one_core']['bf16']} GFLOP per CPU-second. "
           f"FLOPs: {r['flop_count']['flops_per_real_token'] / 1e6:.1f} MFLOP per real token.", "",
           "| variant | sentences/s | × ST fp32 (median of trials) | fraction of bf16 peak (wall) | sentences per CPU-s | fraction of one core's bf16 peak (CPU time) | cosine to ST fp32 (min) |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    for x in r["results"]:
        out.append(f"| {x['variant']} | {x['sentences_per_s']:.0f} | {x['ratio_to_st_fp32']:.2f} | {x['fraction_of_bf16_peak_wall']:.2f} | "
                   f"{x['sentences_per_cpu_s']:.0f} | {x['fraction_of_core_bf16_peak_cpu_time']:.2f} | {x['cosine_to_st_fp32_min']:.5f} |")
    return "\n".join(out)


def encode_gpu(r: dict) -> str:
    m, v = r["machine"], r["versions"]
    vers = ", ".join(f"{k} {v[k]}" for k in ("torch", "transformers", "sentence-transformers") if v.get(k))
    pk = r["peak_gflops"]
    out = [f"Machine: {r['gpu']}, {m['cores']} CPU cores ({m['cpu_model']}); {vers}.  \nCommand: `{r['command']}` ({r['started']}).", "",
           f"{r['sentences']:,} sentences ({r['corpus']}), {r['tokens']['mean_per_sentence']} tokens a sentence; {r['trials']} timed passes over the "
           f"whole set per variant. Peak (8192³): bf16 {pk['bf16'] / 1e3:.0f} TFLOP/s, fp16 {pk['fp16'] / 1e3:.0f}, fp32 {pk['fp32'] / 1e3:.0f}.", "",
           "| variant | sentences/s | × ST fp32 | TFLOP/s | fraction of bf16 peak | peak GPU memory (MiB) | cosine to ST fp32 (min) |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    for x in r["results"]:
        out.append(f"| {x['variant']} | {x['sentences_per_s']:.0f} | {x['ratio_to_st_fp32']:.2f} | {x['tflops']:.1f} | {x['fraction_of_bf16_peak']:.3f} | "
                   f"{x['peak_gpu_memory_mib']:,} | {x['cosine_to_st_fp32_min']:.5f} |")
    return "\n".join(out)


def encode_accuracy(r: dict) -> str:
    names = list(r["mean_p_at_1"])
    out = [machine_line(r), "", "| language | " + " | ".join(f"{n} xx→eng / eng→xx" for n in names) + " | int8 min cosine to fp32 |",
           "|---|" + "---:|" * (len(names) + 1)]
    for lang, v in r["languages"].items():
        out.append(f"| {lang} | " + " | ".join(f"{v[n]['xx_to_eng']:.1f} / {v[n]['eng_to_xx']:.1f}" for n in names) + f" | {v[names[-1]]['cosine_to_fp32_min']:.3f} |")
    out.append("| **mean** | " + " | ".join(f"**{r['mean_p_at_1'][n]:.2f}**" for n in names) + " | |")
    return "\n".join(out)


def encode_memory(r: dict) -> str:
    out = [machine_line(r), "", f"Model: {r['model']}.", "", "| lines | seconds | peak RSS (MiB) | peak RSS after loading the model (MiB) |", "|---:|---:|---:|---:|"]
    for x in r["results"]:
        out.append(f"| {x['lines']:,} | {x['seconds']} | {x['peak_rss_mib']:.0f} | {x['peak_rss_after_model_load_mib']:.0f} |")
    return "\n".join(out)


def mine(r: dict) -> str:
    out = [machine_line(r), "",
           f"{r['dim']}-dim structured synthetic embeddings, {r['paired_fraction']:.0%} of each side translated; k={r['k']}, {r['margin']} margin, {r['strategy']} strategy, no threshold; "
           f"{r['threads']} threads, block_rows {r['block_rows']}.", ""]
    if r.get("matmul_peak_at_start"):
        a, b = r["matmul_peak_at_start"], r.get("matmul_peak_at_end") or {}
        out += [f"Matrix-multiply peaks in the same run ((4096 × 384) × (384 × 8192), all threads), start / end: numpy fp32 "
                f"{a['fp32_numpy_gflops']} / {b.get('fp32_numpy_gflops', '—')} GFLOP/s, torch bf16 {a['bf16_torch_gflops']} / "
                f"{b.get('bf16_torch_gflops', '—')} GFLOP/s.", ""]
    out += ["| N × N | method | index | seconds | peak RSS (MiB) | peak anonymous (MiB) | true pairs recovered | recovery of exact's true pairs |",
            "|---:|---|---|---:|---:|---:|---:|---:|"]
    for e in r["sizes"]:
        for method, v in e["runs"].items():
            if "skipped" in v:
                est = r.get("exact_time_estimates", {}).get(str(e["n"]))
                out.append(f"| {e['n']:,} | {method} | | skipped{f' (≈ {est:,.0f} s estimated)' if est and method == 'exact' else ''} | | | | |")
                continue
            idx = v.get("index", {})
            spec = {"exact": "flat (blocked exact)", "baseline": "FAISS IndexFlatIP + numpy"}.get(method, f"{idx.get('spec')}" + (f", nprobe {idx['nprobe']}" if idx.get("nprobe") else ""))
            anon = f"{v['peak_anon_mib']:.0f}" if v.get("peak_anon_mib") is not None else "—"
            rec = v.get("recovery_vs_exact")
            if rec is None and e.get("sampled_exact_check"):
                rec_s = f"{e['sampled_exact_check']['auto_recovery_vs_exact_estimate']:.4f} (sampled estimate)" if method == "auto" else ""
            else:
                rec_s = f"{rec:.4f}" if rec is not None else ""
            out.append(f"| {e['n']:,} | {method} | {spec} | {v['seconds']:.1f} | {v['peak_rss_mib']:.0f} | {anon} | {v['true_pairs_recovered']:.4f} | {rec_s} |")
    checks = [(e["n"], e["sampled_exact_check"]) for e in r["sizes"] if e.get("sampled_exact_check")]
    if checks:
        out += ["", "Sampled exact check (exact search's choice for sampled true pairs, computed locally):", "",
                "| N | sample | exact selects | auto recovery vs exact (estimate) | estimator agrees with the full exact run |", "|---:|---:|---:|---:|---:|"]
        for n, c in checks:
            out.append(f"| {n:,} | {c['sample']} | {c['exact_selects_fraction']:.4f} | {c['auto_recovery_vs_exact_estimate']:.4f} | {c.get('estimator_agreement', '—')} |")
    return "\n".join(out)


def mine_nprobe(r: dict) -> str:
    out = [machine_line(r), "", f"N = {r['n']:,} a side, IVF{r['nlist']},SQfp16; exact: {r['exact_seconds']} s, true pairs {r['exact_true_pairs_recovered']:.4f}.", "",
           "| probing | nprobe | seconds | recovery of exact's true pairs | true pairs | k-NN recall@4 |", "|---|---:|---:|---:|---:|---:|"]
    for x in r["results"]:
        out.append(f"| {x['probing']} | {x['nprobe']} | {x['seconds']} | {x['recovery_vs_exact']:.4f} | {x['true_pairs_recovered']:.4f} | {x['knn_recall_at_4']:.4f} |")
    return "\n".join(out)


TABLES = (("encode-speed", encode_speed), ("encode-speed-check", encode_speed), ("encode-speed-compile", encode_speed), ("encode-gpu", encode_gpu), ("encode-accuracy", encode_accuracy),
          ("encode-memory", encode_memory), ("mine", mine), ("mine-gpu-host", mine), ("mine-1m-14j", mine), ("mine-1m-14l", mine), ("mine-1m-14m", mine), ("mine-1m-12m", mine), ("mine-1m-14p", mine), ("mine-1m-14r", mine), ("mine-1m-14w", mine), ("mine-1m-14s39", mine),
          ("mine-nprobe", mine_nprobe))


def write_readme() -> None:
    readme = RESULTS.parent / "README.md"
    text = readme.read_text()
    for name, fn in TABLES:
        r = load(name)
        if r is None:
            continue
        block = f"<!-- tables: {name} -->\n{fn(r)}\n<!-- /tables: {name} -->"
        pattern = re.compile(rf"<!-- tables: {re.escape(name)} -->(.*?<!-- /tables: {re.escape(name)} -->)?", re.DOTALL)
        text = pattern.sub(lambda m: block, text, count=1)
    readme.write_text(text)


def main() -> None:
    if "--write" in sys.argv[1:]:
        write_readme()
        return
    for name, fn in TABLES:
        r = load(name)
        if r is not None:
            sys.stdout.write(f"### {name}\n\n{fn(r)}\n\n")


if __name__ == "__main__":
    main()
