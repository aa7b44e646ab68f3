"""eval.patience: training stops after that many evaluations without a better dev score, exports the
best checkpoint, and a resumed run stops at the same step with the same weights."""
from __future__ import annotations

import json

import pytest
from test_faults_train import metrics, one_error_line, recipe, same_weights, train, write_pairs

# lr so small that the dev score cannot move: every evaluation after the first is "not better"
FLAT = ["--set", "optim.lr=1e-12", "--set", "eval.patience=1"]


@pytest.fixture
def setup(tmp_path, tiny_model, monkeypatch):
    write_pairs(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    return recipe(tmp_path, tiny_model, steps=10, save_every=5, eval_every=2)


def test_patience_stops_and_exports_the_best_checkpoint(setup, tmp_path):
    res = train("--config", setup, "--out", tmp_path / "run", *FLAT)
    assert "stopped early at step 4" in res.output
    evals = [r["step"] for r in metrics(tmp_path / "run") if r["kind"] == "eval"]
    assert evals == [2, 4]
    info = json.loads((tmp_path / "run" / "model" / "training_info.json").read_text())
    assert info["step"] == 2 and info["steps_run"] == 4


def test_a_resumed_run_stops_where_an_uninterrupted_one_does(setup, tmp_path):
    train("--config", setup, "--out", tmp_path / "whole", *FLAT)
    train("--config", setup, "--out", tmp_path / "resumed", *FLAT, "--stop-after", "3")
    res = train("--config", setup, "--out", tmp_path / "resumed", *FLAT)
    assert "stopped early at step 4" in res.output
    assert same_weights(tmp_path / "whole" / "model", tmp_path / "resumed" / "model")


def test_without_patience_the_run_goes_to_the_end(setup, tmp_path):
    train("--config", setup, "--out", tmp_path / "run", "--set", "optim.lr=1e-12")
    assert [r["step"] for r in metrics(tmp_path / "run") if r["kind"] == "eval"] == [2, 4, 6, 8, 10]


def test_patience_without_evaluations_is_a_config_error(setup, tmp_path):
    res = train("--config", setup, "--out", tmp_path / "run", "--set", "eval.patience=2", "--set", "eval.every=0", ok=False)
    one_error_line(res, "eval.patience")
