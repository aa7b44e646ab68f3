"""training.checkpoint: RNG state, atomic files and folders, last/best checkpoints on a small model."""
from __future__ import annotations

import json
import random
import zipfile

import numpy as np
import pytest
import torch

from bitextmine import fs
from bitextmine.errors import MismatchError
from bitextmine.fs import TMP_MARK
from bitextmine.training import checkpoint as C
from bitextmine.training.data.batches import Sampler
from bitextmine.training.distributed import DistInfo


def test_rng_state_round_trip():
    st = C.rng_state()
    a = (torch.rand(3), random.random(), np.random.rand())
    C.set_rng_state(st)
    b = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(a[0], b[0]) and a[1:] == b[1:]


def test_save_torch_bytes_do_not_depend_on_the_temporary_name(tmp_path):
    obj = {"w": torch.arange(6.0).reshape(2, 3), "step": 4}
    (tmp_path / "plain").mkdir()
    torch.save(obj, tmp_path / "plain" / "model.pt.tmp")  # what earlier checkpoints wrote, then renamed
    C.save_torch(obj, tmp_path / "model.pt")
    assert (tmp_path / "model.pt").read_bytes() == (tmp_path / "plain" / "model.pt.tmp").read_bytes()
    assert zipfile.ZipFile(tmp_path / "model.pt").namelist()[0] == "model.pt/data.pkl"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt", "plain"]  # no temporary left
    C.save_torch({"w": torch.zeros(1)}, tmp_path / "model.pt")  # replaces
    assert torch.equal(torch.load(tmp_path / "model.pt")["w"], torch.zeros(1))


def test_replace_dir_and_remove_temps(tmp_path):
    final = tmp_path / "last"
    for content in ("one", "two"):
        tmp = tmp_path / f".last{TMP_MARK}1-{content}"
        tmp.mkdir()
        (tmp / "f").write_text(content)
        fs.replace_dir(tmp, final, tmp_path / "last.old")
        assert (final / "f").read_text() == content and not tmp.exists() and not (tmp_path / "last.old").exists()
    (tmp_path / f".last{TMP_MARK}9-dead").mkdir()  # a killed run's folder
    (tmp_path / f".last{TMP_MARK}9-file").write_text("x")
    (tmp_path / f".other{TMP_MARK}9-keep").mkdir()  # another file's temporary: not ours
    fs.remove_temps(final)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".other{TMP_MARK}9-keep", "last"]


class _Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Linear(3, 2)
        self.frozen = torch.nn.Linear(2, 2)
        self.frozen.weight.requires_grad_(False)


def _parts(model):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (s + 1))
    return {"optimizer": opt, "scheduler": sched, "scaler": torch.amp.GradScaler("cpu", enabled=False), "sampler": Sampler([5, 7], 1.0, 3)}


def _state(model, frozen, parts, step, best):
    return {"version": C.CKPT_VERSION, "step": step, "config_fingerprint": "cfg", "base_fingerprint": "base", "data_fingerprint": "data",
            "world": 1, "model": C.trainable_state(model, frozen), **{k: v.state_dict() for k, v in parts.items()}, "best": best}


def test_last_checkpoint_saves_and_restores_everything(tmp_path):
    torch.manual_seed(0)
    model, frozen = _Tiny(), {"frozen.weight"}
    parts = _parts(model)
    model.a(torch.ones(1, 3)).sum().backward()
    parts["optimizer"].step()
    parts["scheduler"].step()
    parts["sampler"].draw(0, 0, 4)
    ckpt = tmp_path / "checkpoints"
    assert C.find_last(ckpt) is None
    info = DistInfo()
    C.save_last(ckpt, info, lambda: _state(model, frozen, parts, 1, None))
    C.save_last(ckpt, info, lambda: _state(model, frozen, parts, 2, {"step": 2, "score": 0.5, "set": "split"}))
    assert sorted(p.name for p in ckpt.iterdir()) == ["last"]  # last.old and the temporary folder are gone
    assert sorted(p.name for p in (ckpt / "last").iterdir()) == ["rng-rank0.pt", "state.pt"]
    assert {n.split("/")[0] for n in zipfile.ZipFile(ckpt / "last" / "state.pt").namelist()} == {"state.pt"}
    assert {n.split("/")[0] for n in zipfile.ZipFile(ckpt / "last" / "rng-rank0.pt").namelist()} == {"rng-rank0.pt"}
    assert "frozen.weight" not in torch.load(ckpt / "last" / "state.pt", weights_only=True)["model"]
    expect_draw = Sampler([5, 7], 1.0, 3)
    expect_draw.load_state_dict(parts["sampler"].state_dict())
    after_save = torch.rand(2)  # the RNG stream right after the checkpoint

    torch.manual_seed(123)
    fresh = _Tiny()
    fresh.frozen.load_state_dict(model.frozen.state_dict())
    fresh_parts = _parts(fresh)
    meta = C.find_last(ckpt)
    C.check_resumable(meta["state"], tmp_path, config_fingerprint="cfg", base_fingerprint="base", model_name="m", world=1)
    step, best = C.restore(meta, tmp_path, fresh, frozen, fresh_parts, 0)
    assert step == 2 and best == {"step": 2, "score": 0.5, "set": "split"}
    assert torch.equal(torch.rand(2), after_save)
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), model.state_dict().values()))
    assert fresh_parts["scheduler"].state_dict() == parts["scheduler"].state_dict()
    assert fresh_parts["sampler"].draw(1, 0, 6) == expect_draw.draw(1, 0, 6)
    a, b = fresh_parts["optimizer"].state_dict()["state"][0], parts["optimizer"].state_dict()["state"][0]
    assert torch.equal(a["exp_avg"], b["exp_avg"])


def test_resume_falls_back_to_last_old_and_checks_fingerprints(tmp_path):
    model, frozen = _Tiny(), {"frozen.weight"}
    ckpt = tmp_path / "checkpoints"
    C.save_last(ckpt, DistInfo(), lambda: _state(model, frozen, _parts(model), 5, None))
    (ckpt / "last").rename(ckpt / "last.old")  # killed between the two renames
    meta = C.find_last(ckpt)
    assert meta["dir"].name == "last.old" and meta["state"]["step"] == 5
    kw = dict(config_fingerprint="cfg", base_fingerprint="base", model_name="m", world=1)
    with pytest.raises(MismatchError, match="different config"):
        C.check_resumable(meta["state"], tmp_path, **{**kw, "config_fingerprint": "other"})
    with pytest.raises(MismatchError, match="base model m changed"):
        C.check_resumable(meta["state"], tmp_path, **{**kw, "base_fingerprint": "other"})
    with pytest.raises(MismatchError, match="written by 1 processes, resumed with 2"):
        C.check_resumable(meta["state"], tmp_path, **{**kw, "world": 2})
    other = torch.nn.Linear(3, 3)
    with pytest.raises(MismatchError, match="does not fit the model"):
        C.restore(meta, tmp_path, other, set(), {}, 0)


def test_best_checkpoint_files(tmp_path):
    ckpt = tmp_path / "checkpoints"
    assert C.load_best(ckpt) is None
    info = {"step": 3, "score": 0.25, "set": "split", "eval": {"split": {"langs": {"de": [0.5, 0.0]}, "mean": 0.25}}}
    C.save_best(ckpt, {"w": torch.ones(2)}, info)
    C.save_best(ckpt, {"w": torch.full((2,), 2.0)}, info)
    assert torch.equal(C.load_best(ckpt)["w"], torch.full((2,), 2.0))
    assert (ckpt / "best" / "info.json").read_text() == json.dumps(info, indent=1)  # the format of earlier runs
    assert sorted(p.name for p in (ckpt / "best").iterdir()) == ["info.json", "model.pt"]
