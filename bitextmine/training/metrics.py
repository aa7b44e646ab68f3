"""``metrics.jsonl`` (and optional TensorBoard event files): one JSON record per log line or evaluation.

A resumed run first truncates the file to the records up to its checkpoint's step, so the file of
a run killed and resumed equals an uninterrupted run's (timings aside).
"""
from __future__ import annotations

import json
from pathlib import Path

from bitextmine import fs
from bitextmine.errors import ConfigError


class MetricsLog:
    """metrics.jsonl (+ optional TensorBoard), truncated to the resumed step so a resumed log equals an uninterrupted one."""

    def __init__(self, path: Path, resume_step: int, tensorboard: bool, enabled: bool) -> None:
        self.path, self.enabled = path, enabled
        self.tb = None
        if not enabled:
            return
        keep = []
        if resume_step and path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    if json.loads(line).get("step", 0) <= resume_step:
                        keep.append(line)
                except ValueError:
                    pass
        fs.atomic_write_text(path, "".join(k + "\n" for k in keep))
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ConfigError("log.tensorboard = true needs the tensorboard package (pip install tensorboard)") from None
            self.tb = SummaryWriter(str(path.parent / "tensorboard"), purge_step=resume_step + 1 if resume_step else None)

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        if self.tb is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k != "step":
                    self.tb.add_scalar(f"{record.get('kind', 'train')}/{k}", v, record.get("step", 0))

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def train_record(g, step: int, steps: int, seconds: float, last: dict, cfg, world: int) -> dict:
    """The ``train`` line of metrics.jsonl for a window of ``steps`` optimizer steps: ``g`` holds the
    loss sums of every process (TR sum over micro-batches, RTL token-loss sum, RTL tokens); ``last``
    is the window's last step (lr, gradient norm)."""
    rec = {"kind": "train", "step": step, "tr": float(g[0]) / (steps * cfg.optim.grad_accumulation * world),
           "lr": last["lr"], "grad_norm": last["grad_norm"], "steps_per_s": steps / max(seconds, 1e-9),
           "pairs_per_s": steps * cfg.optim.batch_size / max(seconds, 1e-9)}
    if g[2]:
        rec["rtl"] = float(g[1] / g[2])
        rec["loss"] = rec["tr"] + cfg.objective.rtl_weight * rec["rtl"]
    else:
        rec["loss"] = rec["tr"]
    return rec
