"""Whether the search runs on GPUs, and the warning when it cannot.

``use_gpu=None`` uses every GPU FAISS sees and the CPU when there is none, so CPU-only FAISS
builds never fail. When GPUs were asked for (``use_gpu=True``) or a GPU is present but this
FAISS build cannot use it, or an index type has no GPU version, search falls back to the CPU
with a :class:`GpuFallbackWarning`, given once per cause (``_warned``) rather than once per call.
"""
from __future__ import annotations

import os
import warnings

import faiss


class GpuFallbackWarning(UserWarning):
    """GPU search was wanted or possible but runs on the CPU (no faiss-gpu, no GPU, or no GPU version of the index)."""


def _num_gpus() -> int:
    get = getattr(faiss, "get_num_gpus", None)
    try:
        return int(get()) if get else 0
    except Exception:  # CPU-only builds without the symbol or without a driver
        return 0


def _gpu_device_present() -> bool:
    """An NVIDIA driver is loaded (whether or not FAISS was built with GPU support)."""
    return os.path.exists("/dev/nvidiactl") or os.path.exists("/proc/driver/nvidia/version")


_warned: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, GpuFallbackWarning, stacklevel=3)


def _use_gpus(use_gpu: bool | None) -> bool:
    """Whether to search on GPUs; warns when GPUs were asked for or are present but FAISS cannot use them."""
    n = _num_gpus()
    if use_gpu is False:
        return False
    if n > 0:
        return True
    if use_gpu:
        _warn_once("asked", "GPU search was requested but FAISS sees no GPU (install faiss-gpu, check CUDA_VISIBLE_DEVICES); searching on the CPU")
    elif _gpu_device_present() and not hasattr(faiss, "StandardGpuResources"):
        _warn_once("cpu-build", "a GPU is present but this FAISS build has no GPU support (install faiss-gpu instead of faiss-cpu); searching on the CPU")
    return False


def _to_gpus(index: faiss.Index) -> faiss.Index:
    """Shard ``index`` over all GPUs; raises RuntimeError if FAISS cannot move this index type."""
    co = faiss.GpuMultipleClonerOptions()
    co.shard = True
    return faiss.index_cpu_to_all_gpus(index, co=co)
