"""DAP training (Li et al., ACL 2023): translation ranking + representation translation learning.

``bitextmine train --config train/configs/<recipe>.toml`` runs :func:`train`; the modules are
``config`` (typed recipe), ``data`` (a package: TSV pairs, filters, tokenised arrays, the cache,
sampling and batches, dev sets), ``losses`` (TR and RTL as tensor functions), ``rtl`` (the head),
``model`` (the dual encoder), ``distributed`` (torchrun/DDP), ``loop`` (the run), ``checkpoint``
(save, resume, best; read without unpickling code), ``runfolder`` (which folders are ours, the
lock, starting over), ``metrics`` (metrics.jsonl), ``evaluate`` (dev retrieval accuracy) and
``export`` (the plain encoder folder). Importing this package does not import torch-heavy modules until they are used.
"""
from __future__ import annotations

from bitextmine.errors import ConfigError
from bitextmine.training.config import TrainConfig, load_config

__all__ = ["ConfigError", "TrainConfig", "load_config", "train"]


def train(*args, **kwargs):
    """See :func:`bitextmine.training.loop.train`."""
    from bitextmine.training.loop import train as _train

    return _train(*args, **kwargs)
