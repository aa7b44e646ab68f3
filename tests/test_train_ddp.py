"""torchrun with 2 CPU processes (gloo) steps exactly like one process with the whole batch.

The global batch of 8 pairs is split 4 + 4; each process ranks its 4 queries against all 8
candidates (negatives gathered across processes, with gradient) and the RTL token mean is taken
over both processes. After a few steps the exported weights must match a single-process run.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

from test_train_cli import recipe_file, weights, write_pairs

SCRIPT = """
import typer
from bitextmine.cli.train import train_command
app = typer.Typer()
app.command("train")(train_command)
@app.callback()
def _root():
    pass
app()
"""


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_equal_one(tmp_path, tiny_model):
    data = write_pairs(tmp_path / "data")
    cfg = recipe_file(tmp_path, tiny_model, data)
    script = tmp_path / "entry.py"
    script.write_text(SCRIPT)
    common = ["train", "--config", str(cfg), "--set", "optim.steps=3", "--set", "model.disable_dropout=true",
              "--set", "run.precision='fp32'", "--set", "objective.direction='both'", "--set", "eval.select_on='none'",
              "--set", "model.mlp=true", "--set", "optim.eps=0.01", "--set", "optim.lr=0.05", "--device", "cpu"]
    # a large Adam eps makes updates smooth in the gradients, so float noise stays ~5e-6 while a missing
    # cross-process gradient (all_gather without grad) moves weights by ~4e-4
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    one = subprocess.run([sys.executable, str(script), *common, "--out", str(tmp_path / "one")], env=env,
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
                          "--master_port", str(_port()), str(script), *common, "--out", str(tmp_path / "two")],
                         env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "2 processes" in " ".join((two.stdout + two.stderr).split())
    a, b = weights(tmp_path / "one" / "model"), weights(tmp_path / "two" / "model")
    base = weights(Path(tiny_model))
    moved = 0
    for k in a:
        assert np.allclose(a[k], b[k], atol=5e-5, rtol=0), (k, float(np.abs(a[k] - b[k]).max()))
        moved += not np.allclose(a[k], base[k])
    assert moved > 10  # training changed the weights
    # the two-process checkpoint holds each process's RNG state
    assert {p.name for p in (tmp_path / "two" / "checkpoints" / "last").iterdir()} >= {"rng-rank0.pt", "rng-rank1.pt", "state.pt"}

