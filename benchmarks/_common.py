"""Shared helpers of the benchmark scripts: machine and version records, peak memory, JSON output."""
from __future__ import annotations

import json
import os
import platform
import shlex
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
PACKAGES = ("bitextmine", "torch", "transformers", "tokenizers", "sentence-transformers", "faiss-cpu", "faiss-gpu", "numpy", "pyarrow")


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                return sorted(f for f in ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8") if f in have)
    except OSError:
        pass
    return []


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def gpu_names() -> list[str]:
    try:
        import torch

        return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:
        return []


def machine() -> dict[str, Any]:
    mem = None
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "cpu_model": cpu_model(),
        "cpu_flags": cpu_flags(),
        "memory_gib": mem,
        "gpus": gpu_names(),
        "platform": platform.platform(),
        "load_average_at_start": list(os.getloadavg()),
    }


def command() -> str:
    return " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv])


def header() -> dict[str, Any]:
    return {"command": command(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine(), "versions": versions()}


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (VmHWM: anonymous and file-backed pages), MiB."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def write_result(name: str, result: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    result = {**result, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "load_average_at_end": list(os.getloadavg())}
    path.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    return path


def matmul_peaks(threads: int, dim: int = 384) -> dict[str, float]:
    """GFLOP/s of a (4096 x 384) x (384 x 8192) product: numpy fp32 (all threads), torch bf16 and fp32."""
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((4096, dim), dtype=np.float32), rng.standard_normal((8192, dim), dtype=np.float32)
    flops = 2 * 4096 * 8192 * dim

    def best(f, reps: int = 3) -> float:
        f()
        ts = []
        for _ in range(reps):
            t = time.perf_counter()
            f()
            ts.append(time.perf_counter() - t)
        return round(flops / min(ts) / 1e9, 1)

    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    ha, hb = ta.bfloat16(), tb.bfloat16()
    peaks = {"fp32_numpy_gflops": best(lambda: a @ b.T), "fp32_torch_gflops": best(lambda: torch.mm(ta, tb.T)),
             "bf16_torch_gflops": best(lambda: torch.mm(ha, hb.T), reps=2)}
    try:  # int8 products (int32 sums), as the by-list scan runs them on VNNI / AMX units: GOP/s
        ia, ib = ha.to(torch.int8), hb.to(torch.int8)
        peaks["int8_torch_gops"] = best(lambda: torch._int_mm(ia, ib.T), reps=2)
    except Exception:  # a torch without int8 products
        pass
    return peaks
