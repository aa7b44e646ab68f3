"""Encoding speed side by side with sentence-transformers, in one run, interleaved.

    .venv/bin/python benchmarks/encode.py speed [--trials 16] [--chunk 500] [--threads 2] [--compile]
    .venv/bin/python benchmarks/encode.py accuracy [--langs deu,fra,...]
    .venv/bin/python benchmarks/encode.py memory [--lines 10000 1000000] [--model tiny|default|FOLDER] [--precision auto]
    python benchmarks/encode.py gpu [--texts FILE] [--sentences 50000] [--trials 5]   # on a CUDA machine

``speed``: the packaged default model (multilingual-E5-small) is loaded twice from the same
converted folder: into bitextmine's :class:`~bitextmine.encoder.Encoder` and into a
``SentenceTransformer`` (Transformer + mean Pooling + Normalize, the "query: " prefix applied to
every text). Every variant embeds the same sentences (Tatoeba, several scripts) with the same
thread count. Timing runs in short trials: in each, every variant embeds the same chunk of
sentences, one after another in a rotating order, so a noisy neighbour on a shared machine
slows all of them alike. Reported per variant: median sentences/s over the trials, the median
of the per-trial ratios to sentence-transformers fp32, and the cosine of its embeddings to
sentence-transformers' fp32 embeddings (on the whole set). In every trial the machine's
matrix-multiply peak (2048^3, fp32 and bf16) is measured too, as the best of one multi-threaded
product and ``threads`` single-threaded products at once; the model's achieved FLOP/s is
reported as a fraction of the peak measured in the same trial. A second, contention-proof
figure divides FLOPs by process CPU time and compares with one core's peak in thread CPU time.

FLOP count (reported as ``flops_per_real_token``): 2 x (weights of the encoder layers' linear
maps: Q, K, V, attention output, both feed-forward maps) per real token, plus attention
(QK^T and AV: 4 x length x hidden per token and layer) over each sentence's own length. Only
real tokens count (special tokens and the prefix included, padding excluded); embedding
look-ups, layer norms, GELU and softmax are not counted.

``accuracy``: Tatoeba p@1 (xx->eng and eng->xx) of fp32, bf16 and int8-dynamic embeddings, to
price int8 quantisation before it could become a default.

``memory``: peak RSS of ``encode_corpus`` over a 10k-line and a 1M-line corpus, each in a fresh
process; the point is that memory does not grow with the corpus. ``--model tiny`` (default) is
the 2-layer test model (the real model would need hours for 1M lines on this CPU); ``--model
default`` measures the packaged model (try ``--lines 50 2000``), loaded as the CLI loads it
(:func:`~bitextmine.encoder.load_encoder`, ``--precision`` as given). Each row also gives the
peak right after loading the model and what it is made of (anonymous vs file-backed pages:
the fp32 weights are memory-mapped and only paged in as rows are used).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import header, peak_rss_mib, write_result  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
TATOEBA_LANGS = ["deu", "fra", "rus", "cmn", "jpn", "kor", "ara", "hin", "est", "heb"]


# ------------------------------------------------------------------------------------------ data


def tatoeba_mix(n: int, langs: list[str], seed: int = 0) -> list[str]:
    """``n`` sentences: an equal share of each language's Tatoeba test side plus English, shuffled."""
    per = n // (len(langs) + 1)
    out: list[str] = []
    for lang in langs:
        out += (DATA / "tatoeba" / f"tatoeba.{lang}-eng.{lang}").read_text(encoding="utf-8").splitlines()[:per]
    out += (DATA / "tatoeba" / f"tatoeba.{langs[0]}-eng.eng").read_text(encoding="utf-8").splitlines()[: n - len(out)]
    random.Random(seed).shuffle(out)
    return out


# ------------------------------------------------------------------------------------------ peak


def _products(a, b, reps: int) -> None:
    import torch

    for _ in range(reps):
        torch.matmul(a, b)


def matmul_peak_wall(dtype, threads: int, size: int = 2048, reps: int = 2) -> float:
    """GFLOP/s (wall clock) of size^3 products: the better of one product on ``threads`` threads
    and ``threads`` single-threaded products at once."""
    import torch

    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    flops = 2 * size**3
    _products(a, b, 1)
    t = time.perf_counter()
    _products(a, b, reps)
    best = reps * flops / (time.perf_counter() - t) / 1e9
    if threads > 1:
        barrier = threading.Barrier(threads + 1)

        def worker() -> None:
            torch.get_num_threads()
            torch.set_num_threads(1)
            _products(a, b, 1)
            barrier.wait()
            _products(a, b, reps)

        main = torch.get_num_threads()
        ts = [threading.Thread(target=worker) for _ in range(threads)]
        for th in ts:
            th.start()
        barrier.wait()
        t = time.perf_counter()
        for th in ts:
            th.join()
        best = max(best, threads * reps * flops / (time.perf_counter() - t) / 1e9)
        torch.set_num_threads(main)
    return best


def matmul_peak_core(dtype, size: int = 2048, reps: int = 4) -> float:
    """GFLOP per CPU-second of one core (thread CPU time: insensitive to other jobs on the machine)."""
    import torch

    out: list[float] = []

    def worker() -> None:
        torch.get_num_threads()
        torch.set_num_threads(1)
        a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
        _products(a, b, 1)
        best = 0.0
        for _ in range(3):
            t = time.thread_time()
            _products(a, b, reps)
            best = max(best, reps * 2 * size**3 / (time.thread_time() - t) / 1e9)
        out.append(best)

    th = threading.Thread(target=worker)
    th.start()
    th.join()
    return out[0]


# ------------------------------------------------------------------------------------------ flops


def linear_weights(model) -> int:
    """Weights of the linear maps inside the encoder layers (no embeddings, no biases)."""
    import torch

    layers = getattr(getattr(model, "encoder", None), "layer", None)
    mods = layers.modules() if layers is not None else model.modules()
    return sum(m.weight.numel() for m in mods if isinstance(m, torch.nn.Linear))


def flops_for(lengths: np.ndarray, model) -> dict[str, float]:
    cfg = model.config
    lin = linear_weights(model)
    n = lengths.astype(np.float64)
    attn = 4.0 * cfg.num_hidden_layers * cfg.hidden_size * float((n * n).sum())
    total = 2.0 * lin * float(n.sum()) + attn
    return {"linear_weights": lin, "real_tokens": int(n.sum()), "flops": total, "flops_per_real_token": total / float(n.sum())}


# ------------------------------------------------------------------------------------------ variants


def st_model(folder: Path, dtype=None, device: str = "cpu"):
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from sentence_transformers import SentenceTransformer, models
    m = SentenceTransformer(modules=[models.Transformer(str(folder)), models.Pooling(384, "mean"), models.Normalize()], device=device)
    if dtype is not None and dtype != torch.float32:
        m.to(dtype)
    return m


def make_variants(args, lm, texts: list[str]) -> tuple[dict, dict]:
    """name -> callable(texts) -> embeddings, and notes per variant (settings, compile time)."""
    import torch

    from bitextmine.encoder import Encoder

    prefix = lm.recipe.prefix
    out: dict = {}
    notes: dict = {}

    st32 = st_model(lm.folder)
    out["sentence-transformers fp32 (batch 64)"] = lambda t: st32.encode([prefix + x for x in t], batch_size=64, convert_to_numpy=True)

    def one_thread(f):
        def run(t):
            main = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                return f(t)
            finally:
                torch.set_num_threads(main)
        return run

    # The same peer with one intra-op thread: on a machine shared with other jobs, OpenMP teams
    # wait for their slowest (descheduled) thread at every operation, so one thread can be faster.
    out["sentence-transformers fp32 (batch 64), 1 thread"] = one_thread(out["sentence-transformers fp32 (batch 64)"])
    st16 = st_model(lm.folder, torch.bfloat16)
    out["sentence-transformers bf16 weights (batch 64)"] = lambda t: np.asarray(st16.encode([prefix + x for x in t], batch_size=64, convert_to_tensor=True).float())

    ours = Encoder(lm)  # defaults: auto precision, default workers and token budget
    notes["bitextmine default"] = {"dtype": str(ours.dtype), "workers": ours.workers, "threads_per_worker": ours.threads_per_worker, "token_budget": ours.token_budget}
    out["bitextmine default"] = lambda t: ours.encode(t)
    fp32 = Encoder(lm, precision="fp32")
    out["bitextmine fp32"] = lambda t: fp32.encode(t)
    one = Encoder(lm, workers=1)
    out["bitextmine bf16, 1 worker x all threads"] = lambda t: one.encode(t)
    padded = Encoder(lm, packed=False)
    out["bitextmine bf16, padded (model's own forward)"] = lambda t: padded.encode(t)

    # The previous implementation: autocast over fp32 weights, one stream, 8,192-token batches.
    prev = Encoder(lm, precision="fp32", token_budget=8192, workers=1)
    prev.dtype, prev._autocast = torch.bfloat16, True
    out["previous (bf16 autocast, 1 stream, 8192-token batches)"] = lambda t: prev.encode(t)

    if args.int8:
        from bitextmine.models.loader import LoadedModel

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            q = torch.ao.quantization.quantize_dynamic(copy.deepcopy(lm.model), {torch.nn.Linear}, dtype=torch.qint8)
        qlm = LoadedModel(q, lm.tokenizer, lm.recipe, lm.fingerprint, lm.source, lm.folder, lm.head)
        q8 = Encoder(qlm, precision="fp32")
        out["bitextmine int8 dynamic"] = lambda t: q8.encode(t)

    if args.compile:
        # torch.compile applies to the model's own (padded) forward; the packed path is plain eager code.
        comp = Encoder(lm, packed=False)
        comp.model = torch.compile(comp.model, dynamic=True)
        t = time.perf_counter()
        comp.encode(texts[:256])
        comp.encode(texts[256:512])
        notes["bitextmine bf16 padded + torch.compile"] = {"compile_and_warmup_seconds": round(time.perf_counter() - t, 1)}
        out["bitextmine bf16 padded + torch.compile"] = lambda t: comp.encode(t)
    if args.only:
        keep = [w.strip() for w in args.only.split(",")]
        out = {n: f for n, f in out.items() if n.startswith("sentence-transformers fp32 (batch 64)") or any(w in n for w in keep)}
    return out, notes


def cmd_speed(args) -> None:
    import torch

    from bitextmine.encoder import Encoder
    from bitextmine.models.loader import load_model

    torch.set_num_threads(args.threads)
    texts = tatoeba_mix(args.sentences, args.langs.split(","))
    lm = load_model("default")
    tok = Encoder(lm, precision="fp32", workers=1)
    t = time.perf_counter()
    ids = tok.tokenize(texts)
    tokenize_s = time.perf_counter() - t
    lengths = np.array([len(s) for s in ids])
    core_peak = {"fp32": matmul_peak_core(torch.float32), "bf16": matmul_peak_core(torch.bfloat16)}
    variants, notes = make_variants(args, lm, texts)
    peer = "sentence-transformers fp32 (batch 64)"
    names = list(variants)

    # Agreement on the whole set, outside the timed trials.
    ref = np.asarray(variants[peer](texts), np.float64)
    cos = {}
    for n in names:
        c = (np.asarray(variants[n](texts), np.float64) * ref).sum(1)
        cos[n] = (float(c.min()), float(c.mean()))
        print(f"cosine to sentence-transformers fp32: {n}: min {c.min():.6f}", flush=True)

    # Timed trials: each variant embeds the same chunk, one after another, in a rotating order.
    chunks = [slice(i, min(i + args.chunk, len(texts))) for i in range(0, len(texts), args.chunk)]
    wall = {n: [] for n in names}
    cpu = {n: [] for n in names}
    trial_peak: list[dict] = []
    trial_flops: list[float] = []
    trial_sents: list[int] = []
    for trial in range(args.trials):
        sl = chunks[trial % len(chunks)]
        chunk, fl = texts[sl], flops_for(lengths[sl], lm.model)["flops"]
        order = names[trial % len(names):] + names[: trial % len(names)]
        for n in order:
            c0, t0 = time.process_time(), time.perf_counter()
            variants[n](chunk)
            wall[n].append(time.perf_counter() - t0)
            cpu[n].append(time.process_time() - c0)
        trial_peak.append({"fp32": matmul_peak_wall(torch.float32, args.threads), "bf16": matmul_peak_wall(torch.bfloat16, args.threads)})
        trial_flops.append(fl)
        trial_sents.append(len(chunk))
        print(f"trial {trial + 1}/{args.trials} ({len(chunk)} sentences, load {os.getloadavg()[0]:.1f}): "
              + ", ".join(f"{n}: {len(chunk) / wall[n][-1]:.0f}/s" for n in names), flush=True)

    med = statistics.median
    rows = []
    T = range(args.trials)
    for n in names:
        total_wall, total_cpu = sum(wall[n]), sum(cpu[n])
        gf_cpu = sum(trial_flops) / total_cpu / 1e9
        rows.append({
            "variant": n,
            "sentences_per_s": round(med([trial_sents[i] / wall[n][i] for i in T]), 1),
            "ratio_to_st_fp32": round(med([wall[peer][i] / wall[n][i] for i in T]), 2),
            "ratio_to_st_fp32_total_time": round(sum(wall[peer]) / total_wall, 2),
            "gflops_wall": round(med([trial_flops[i] / wall[n][i] / 1e9 for i in T]), 1),
            "fraction_of_bf16_peak_wall": round(med([trial_flops[i] / wall[n][i] / 1e9 / trial_peak[i]["bf16"] for i in T]), 3),
            "fraction_of_fp32_peak_wall": round(med([trial_flops[i] / wall[n][i] / 1e9 / trial_peak[i]["fp32"] for i in T]), 3),
            "sentences_per_cpu_s": round(sum(trial_sents) / total_cpu, 1),
            "gflop_per_cpu_s": round(gf_cpu, 1),
            "fraction_of_core_bf16_peak_cpu_time": round(gf_cpu / core_peak["bf16"], 3),
            "fraction_of_core_fp32_peak_cpu_time": round(gf_cpu / core_peak["fp32"], 3),
            "cosine_to_st_fp32_min": round(cos[n][0], 6),
            "cosine_to_st_fp32_mean": round(cos[n][1], 6),
            **({"notes": notes[n]} if n in notes else {}),
        })
    result = {
        **header(),
        "benchmark": "encode-speed",
        "model": {"source": lm.source, "folder": str(lm.folder), "fingerprint": lm.fingerprint},
        "threads": args.threads,
        "sentences": len(texts),
        "corpus": f"Tatoeba test sides, {args.langs} + eng, equal shares, shuffled (seed 0)",
        "tokens": {"real": int(lengths.sum()), "mean_per_sentence": round(float(lengths.mean()), 2), "max": int(lengths.max())},
        "flop_count": {**flops_for(lengths, lm.model), "rule": FLOP_RULE},
        "tokenize_seconds_all_sentences": round(tokenize_s, 3),
        "trials": args.trials,
        "chunk": args.chunk,
        "method": METHOD,
        "peak_gflops_wall_median": {k: round(med(p[k] for p in trial_peak), 1) for k in ("fp32", "bf16")},
        "peak_gflops_wall_trials": [{k: round(v, 1) for k, v in p.items()} for p in trial_peak],
        "peak_gflop_per_cpu_s_one_core": {k: round(v, 1) for k, v in core_peak.items()},
        "results": rows,
    }
    path = write_result(args.name or "encode-speed", result)
    print(json.dumps(rows, indent=1))
    print(f"peak (wall, median) {result['peak_gflops_wall_median']}; one core (CPU time) {result['peak_gflop_per_cpu_s_one_core']}; written {path}")


FLOP_RULE = ("2 x encoder-layer linear weights per real token + 4 x length x hidden per token and layer (attention scores and "
             "weighted sum over the sentence's own length); padding, embeddings, norms, GELU and softmax not counted")
METHOD = ("Each trial: every variant embeds the same chunk of sentences, one after another in a rotating order, then the "
          "matrix-multiply peak is measured. sentences_per_s, ratio and fraction_of_*_peak_wall are medians over trials of "
          "per-trial values (ratio: the peer's time over the variant's time in the same trial). *_cpu_time figures divide by "
          "process CPU time instead of wall time and compare with one core's peak measured in thread CPU time; they are "
          "insensitive to other jobs on the machine (OpenMP spin-waiting counts as CPU time).")


# ------------------------------------------------------------------------------------------ gpu


def gpu_matmul_peak(dtype, size: int = 8192, reps: int = 10) -> float:
    """GFLOP/s of size^3 products on the current CUDA device (mean of ``reps`` after 3 warm-ups)."""
    import torch

    a = torch.randn(size, size, device="cuda").to(dtype)
    b = torch.randn(size, size, device="cuda").to(dtype)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    torch.cuda.synchronize()
    return reps * 2 * size**3 / (time.perf_counter() - t) / 1e9


def gpu_stages(lm, texts: list[str]) -> dict:
    """Sentences/s of each stage alone, best of 3 passes: tokenising in this process (the Rust tokenizer's
    own threads) and in tokenizer processes (the encoder's GPU default), and the model on ids tokenised
    beforehand (default precision and budget): whichever is slowest bounds encode_stream."""
    from bitextmine.encoder import Encoder
    from bitextmine.tokenize import TokenizerProcesses

    enc = Encoder(lm)
    r = lm.recipe
    procs = TokenizerProcesses(enc._backend() or lm.tokenizer, r.prefix, r.max_tokens, enc.tokenize_workers)

    def best(f) -> float:
        f()
        ts = []
        for _ in range(3):
            t = time.perf_counter()
            f()
            ts.append(time.perf_counter() - t)
        return round(len(texts) / min(ts), 1)

    ids = enc.tokenize(texts)
    out = {"tokenize_in_process_sentences_per_s": best(lambda: enc.tokenize(texts)),
           f"tokenize_{enc.tokenize_workers}_processes_sentences_per_s": best(lambda: procs.tokenize(texts)),
           "forward_only_sentences_per_s": best(lambda: enc.encode_ids(ids))}
    procs.close()
    return out


def cmd_gpu(args) -> None:
    """The same comparison on a CUDA GPU: whole-set passes per variant, interleaved, medians."""
    import torch

    from bitextmine.encoder import Encoder
    from bitextmine.models.loader import load_model

    if not torch.cuda.is_available():
        sys.exit("encode.py gpu: no CUDA device visible to torch")
    if args.texts:
        texts = [t for t in Path(args.texts).read_text(encoding="utf-8").splitlines() if t.strip()][: args.sentences]
        corpus = f"{args.texts} (first {len(texts)} non-blank lines)"
    else:
        texts = tatoeba_mix(args.sentences, args.langs.split(","))
        corpus = f"Tatoeba test sides, {args.langs} + eng, equal shares, shuffled (seed 0)"
    if args.repeat > 1:
        texts = texts * args.repeat
        corpus += f", {args.repeat} times over"
    if args.random_weights:  # the folder's shape with random weights: speed only (its embeddings mean nothing)
        from transformers import AutoConfig, AutoModel

        AutoModel.from_config(AutoConfig.from_pretrained(args.model)).save_pretrained(args.model)
    lm = load_model(args.model, device="cuda")
    prefix = lm.recipe.prefix
    lengths = np.array([len(s) for s in Encoder(lm, precision="fp32").tokenize(texts)])
    fl = flops_for(lengths, lm.model)
    peak = {"bf16": gpu_matmul_peak(torch.bfloat16), "fp16": gpu_matmul_peak(torch.float16), "fp32": gpu_matmul_peak(torch.float32)}

    def st(dtype, batch: int):
        m = st_model(lm.folder, dtype, device="cuda")
        return lambda t: np.asarray(m.encode([prefix + x for x in t], batch_size=batch, convert_to_tensor=True).float().cpu())

    variants = {
        "sentence-transformers fp32 (batch 32, its default)": st(None, 32),
        "sentence-transformers fp16 weights (batch 256)": st(torch.float16, 256),
        "sentence-transformers bf16 weights (batch 256)": st(torch.bfloat16, 256),
    }
    if args.no_st_variants:  # the peer's fp32 default only (the reference of the ratios and cosines)
        variants = dict(list(variants.items())[:1])
    notes = {}
    for name, kw in (("bitextmine default", {}), ("bitextmine bf16, padded (model's own forward, SDPA)", {"packed": False}),
                     ("bitextmine fp16", {"precision": "fp16"}), ("bitextmine fp32", {"precision": "fp32"})):
        enc = Encoder(lm, **kw)
        notes[name] = {"dtype": str(enc.dtype), "token_budget": enc.token_budget, "packed": enc.packed is not None and kw.get("packed", True)}
        variants[name] = enc.encode
    streams = {}
    for label, workers in (("tokenizer processes", None), ("tokenising in one thread", 0)):
        enc = Encoder(lm, tokenize_workers=workers)
        name = f"bitextmine default, encode_stream (8,192-sentence chunks), {label} ({enc.tokenize_workers})"
        streams[name] = enc
        notes[name] = {"dtype": str(enc.dtype), "token_budget": enc.token_budget, "chunk": 8192, "tokenize_workers": enc.tokenize_workers,
                       "what": "encode_corpus's path: the next chunk is tokenised while the model runs"}
        variants[name] = lambda t, e=enc: np.concatenate([x for _, x in e.encode_stream(t[i:i + 8192] for i in range(0, len(t), 8192))])
    stages = gpu_stages(lm, texts)
    print("stages", stages, flush=True)
    peer = next(iter(variants))
    names = list(variants)
    ref = np.asarray(variants[peer](texts), np.float64)  # also the warm-up of the peer
    cos, mem = {}, {}
    for n in names:
        torch.cuda.reset_peak_memory_stats()
        c = (np.asarray(variants[n](texts), np.float64) * ref).sum(1)  # warm-up pass
        mem[n] = torch.cuda.max_memory_allocated() / 2**20
        cos[n] = (float(c.min()), float(c.mean()))
        print(f"cosine to {peer}: {n}: min {c.min():.6f}; peak GPU memory {mem[n]:.0f} MiB", flush=True)
    wall = {n: [] for n in names}
    for trial in range(args.trials):
        order = names[trial % len(names):] + names[: trial % len(names)]
        for n in order:
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            variants[n](texts)
            wall[n].append(time.perf_counter() - t0)
        print(f"trial {trial + 1}/{args.trials}: " + ", ".join(f"{n}: {len(texts) / wall[n][-1]:.0f}/s" for n in names), flush=True)
    med = statistics.median
    rows = []
    for n in names:
        t = med(wall[n])
        rows.append({
            "variant": n,
            "sentences_per_s": round(len(texts) / t, 1),
            "ratio_to_st_fp32": round(med([wall[peer][i] / wall[n][i] for i in range(args.trials)]), 2),
            "tflops": round(fl["flops"] / t / 1e12, 2),
            "fraction_of_bf16_peak": round(fl["flops"] / t / 1e9 / peak["bf16"], 4),
            "cosine_to_st_fp32_min": round(cos[n][0], 6),
            "cosine_to_st_fp32_mean": round(cos[n][1], 6),
            "peak_gpu_memory_mib": round(mem[n]),
            **({"notes": notes[n]} if n in notes else {}),
        })
    result = {
        **header(),
        "benchmark": "encode-gpu",
        "gpu": torch.cuda.get_device_name(0),
        "model": {"source": lm.source, "fingerprint": lm.fingerprint},
        "sentences": len(texts),
        "corpus": corpus,
        "tokens": {"real": int(lengths.sum()), "mean_per_sentence": round(float(lengths.mean()), 2), "max": int(lengths.max())},
        "flop_count": {**fl, "rule": FLOP_RULE},
        "trials": args.trials,
        "method": ("Every variant embeds the whole set once untimed (warm-up, cosine, peak memory), then once per trial in a "
                   "rotating order; sentences_per_s is over the median trial time, ratio the median of per-trial ratios. "
                   "Peak: 8192^3 torch.matmul, mean of 10 after 3 warm-ups (fp32 without TF32)."),
        "peak_gflops": {k: round(v, 1) for k, v in peak.items()},
        "random_weights": bool(args.random_weights),
        "stages": {**stages, "forward_only_fraction_of_bf16_peak": round(
            fl["flops"] / len(texts) * stages["forward_only_sentences_per_s"] / 1e9 / peak["bf16"], 4)},
        "cpu_cores": os.cpu_count(),
        "results": rows,
    }
    for enc in streams.values():
        enc.close()
    path = write_result(args.name or "encode-gpu", result)
    print(json.dumps(rows, indent=1))
    print(f"peak {result['peak_gflops']}; written {path}")


# ------------------------------------------------------------------------------------------ accuracy


def p_at_1(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    s = x @ y.T
    gold = np.arange(len(x))
    return float((s.argmax(1) == gold).mean()), float((s.argmax(0) == gold).mean())


def cmd_accuracy(args) -> None:
    import torch

    from bitextmine.encoder import Encoder
    from bitextmine.models.loader import LoadedModel, load_model

    torch.set_num_threads(args.threads)
    lm = load_model("default")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = torch.ao.quantization.quantize_dynamic(copy.deepcopy(lm.model), {torch.nn.Linear}, dtype=torch.qint8)
    qlm = LoadedModel(q, lm.tokenizer, lm.recipe, lm.fingerprint, lm.source, lm.folder, lm.head)
    encoders = {"fp32": Encoder(lm, precision="fp32"), "bf16": Encoder(lm, precision="bf16"), "int8-dynamic": Encoder(qlm, precision="fp32")}
    per: dict = {}
    for lang in args.langs.split(","):
        xx = (DATA / "tatoeba" / f"tatoeba.{lang}-eng.{lang}").read_text(encoding="utf-8").splitlines()
        en = (DATA / "tatoeba" / f"tatoeba.{lang}-eng.eng").read_text(encoding="utf-8").splitlines()
        per[lang] = {}
        ref = None
        for name, enc in encoders.items():
            x, y = enc.encode(xx), enc.encode(en)
            if ref is None:
                ref = (x, y)
            a, b = p_at_1(x, y)
            cmin = float(min((x * ref[0]).sum(1).min(), (y * ref[1]).sum(1).min()))
            per[lang][name] = {"xx_to_eng": round(100 * a, 2), "eng_to_xx": round(100 * b, 2), "cosine_to_fp32_min": round(cmin, 5)}
        print(lang, per[lang], flush=True)
    summary = {name: round(statistics.mean((v[name]["xx_to_eng"] + v[name]["eng_to_xx"]) / 2 for v in per.values()), 2) for name in encoders}
    path = write_result(args.name or "encode-accuracy", {**header(), "benchmark": "encode-accuracy-tatoeba", "threads": args.threads,
                                                          "mean_p_at_1": summary, "languages": per})
    print("mean p@1", summary, "written", path)


# ------------------------------------------------------------------------------------------ memory


def _rss_parts_mib() -> dict:
    """Current resident memory by kind (anonymous, file-backed), MiB (Linux)."""
    out = {}
    try:
        for line in open("/proc/self/status"):
            key = line.split(":")[0]
            if key in ("RssAnon", "RssFile"):
                out[key] = round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return out


def _memory_child(corpus: str, out: str, model: str, threads: int, precision: str) -> None:
    from bitextmine.encode_job import encode_corpus
    from bitextmine.encoder import EncoderOptions, load_encoder

    enc = load_encoder(EncoderOptions(model=model, precision=precision, threads=threads, device="cpu"))
    base, parts = peak_rss_mib(), _rss_parts_mib()
    t = time.perf_counter()
    s = encode_corpus([corpus], out, enc)
    print(json.dumps({"sentences": s.sentences, "seconds": round(time.perf_counter() - t, 1), "peak_rss_mib": round(peak_rss_mib(), 1),
                      "peak_rss_after_model_load_mib": round(base, 1), "rss_after_model_load": parts, "rss_at_end": _rss_parts_mib(),
                      "dtype": str(enc.dtype).removeprefix("torch."), "shards": s.shards}))


def cmd_memory(args) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import build_tiny_model

    work = Path(tempfile.mkdtemp(prefix="bitextmine-encmem-"))
    if args.model == "tiny":
        model, model_name = build_tiny_model(work / "tiny", recipe={"pooling": "mean", "prefix": "", "max_tokens": 32, "normalize": True, "name": "tiny"}), \
            "tiny 2-layer BERT from tests/conftest.build_tiny_model (hidden 32)"
    else:
        model, model_name = args.model, args.model
    words = "the cat dog house tree river mountain city car train book der die das haus baum le la maison кот собака дом 猫 狗 房子".split()
    rows = []
    for n in args.lines:
        corpus = work / f"corpus-{n}.txt"
        rng = random.Random(n)
        with open(corpus, "w", encoding="utf-8") as fh:
            for i in range(n):
                fh.write(" ".join(rng.choice(words) for _ in range(rng.randint(3, 14))) + f" {i}\n")
        proc = subprocess.run([sys.executable, __file__, "_memory_child", str(corpus), str(work / f"emb-{n}"), str(model), str(args.threads),
                               args.precision], capture_output=True, text=True, check=True)
        row = {"lines": n, **json.loads(proc.stdout.strip().splitlines()[-1])}
        rows.append(row)
        print(row, flush=True)
        corpus.unlink()
    path = write_result(args.name or "encode-memory", {**header(), "benchmark": "encode-memory", "model": model_name, "precision": args.precision,
                                                        "threads": args.threads, "results": rows})
    print("written", path)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_memory_child":
        _memory_child(*sys.argv[2:5], int(sys.argv[5]), sys.argv[6])
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sp = sub.add_parser("speed")
    sp.add_argument("--sentences", type=int, default=2000)
    sp.add_argument("--langs", default=",".join(TATOEBA_LANGS))
    sp.add_argument("--trials", type=int, default=16)
    sp.add_argument("--chunk", type=int, default=500, help="sentences per timed trial")
    sp.add_argument("--threads", type=int, default=os.cpu_count())
    sp.add_argument("--compile", action="store_true", help="also measure torch.compile (dynamic shapes)")
    sp.add_argument("--no-int8", dest="int8", action="store_false")
    sp.add_argument("--only", help="comma-separated substrings of the variants to run (the sentence-transformers fp32 peer always runs)")
    sp.add_argument("--name")
    ac = sub.add_parser("accuracy")
    ac.add_argument("--langs", default="deu,fra,rus,cmn,jpn,kor,est,eus")
    ac.add_argument("--threads", type=int, default=os.cpu_count())
    ac.add_argument("--name")
    me = sub.add_parser("memory")
    me.add_argument("--lines", type=int, nargs="+", default=[10_000, 1_000_000])
    me.add_argument("--threads", type=int, default=os.cpu_count())
    me.add_argument("--model", default="tiny", help="tiny (the 2-layer test model), default (the packaged model) or a model folder")
    me.add_argument("--precision", default="auto")
    me.add_argument("--name")
    gp = sub.add_parser("gpu")
    gp.add_argument("--texts", help="one sentence per line (default: the Tatoeba mix)")
    gp.add_argument("--sentences", type=int, default=50_000)
    gp.add_argument("--langs", default=",".join(TATOEBA_LANGS))
    gp.add_argument("--model", default="default")
    gp.add_argument("--trials", type=int, default=5)
    gp.add_argument("--repeat", type=int, default=1, help="embed the texts this many times over (a larger set from a small file)")
    gp.add_argument("--random-weights", action="store_true", help="--model is a folder: replace its weights with random ones of its shape (speed only)")
    gp.add_argument("--no-st-variants", action="store_true", help="of sentence-transformers, run only its fp32 default (the reference)")
    gp.add_argument("--name")
    args = ap.parse_args()
    {"speed": cmd_speed, "accuracy": cmd_accuracy, "memory": cmd_memory, "gpu": cmd_gpu}[args.cmd](args)


if __name__ == "__main__":
    main()
