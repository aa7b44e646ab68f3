"""Loading a model: error messages name the parameter (not a CLI flag), safe from_pretrained, position limits."""
from __future__ import annotations

import pytest

from bitextmine.errors import ModelError
from bitextmine.models.loader import LoadedModel, load_model, resolve_device, resolve_folder

FLAGS = {"model": "--model", "device": "--device"}


def test_model_errors_name_the_parameter(tmp_path) -> None:
    missing = str(tmp_path / "missing")
    with pytest.raises(ModelError) as e:
        resolve_folder(missing)
    assert e.value.param == "model" and str(e.value) == f"model {missing}: no such folder"
    assert e.value.message_for(FLAGS) == f"--model {missing}: no such folder"
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(ModelError) as e:
        resolve_folder(str(tmp_path / "f.txt"))
    assert e.value.message_for(FLAGS) == f"--model {tmp_path / 'f.txt'}: is a file; expected a model folder or a Hugging Face id"
    with pytest.raises(ModelError) as e:
        load_model(str(tmp_path))  # a folder without config.json
    assert e.value.message_for(FLAGS) == f"--model {tmp_path}: {tmp_path} has no config.json; not a transformers model folder"


@pytest.mark.parametrize(("device", "message"), [
    ("tpu", "device tpu: not a device name (auto, cpu, cuda, cuda:N)"),
    ("mps", "device mps: only cpu and cuda devices are supported"),
    ("gpu0", "device gpu0: not a device name (auto, cpu, cuda, cuda:N)"),
])
def test_device_errors_name_the_parameter(device, message) -> None:
    with pytest.raises(ModelError) as e:
        resolve_device(device)
    assert e.value.param == "device" and str(e.value) == message
    assert e.value.message_for(FLAGS) == "--" + message


def test_from_pretrained_never_trusts_remote_code(tiny_model, monkeypatch) -> None:
    import transformers

    calls = []
    for cls in (transformers.AutoModel, transformers.AutoTokenizer):
        real = cls.from_pretrained

        def spy(*a, _real=real, _name=cls.__name__, **kw):
            calls.append((_name, kw))
            return _real(*a, **kw)

        monkeypatch.setattr(cls, "from_pretrained", spy)
    lm = load_model(str(tiny_model))
    assert isinstance(lm, LoadedModel) and not hasattr(lm, "info")
    assert {name for name, _ in calls} == {"AutoModel", "AutoTokenizer"}
    assert all(kw["trust_remote_code"] is False for _, kw in calls)
    assert dict(calls)["AutoModel"]["add_pooling_layer"] is False  # BERT family: no pooler built


def test_roberta_family_max_tokens_stop_two_short(tmp_path) -> None:
    from test_scale import _xlmr_tiny  # max_position_embeddings=40, positions start at pad + 1

    lm = load_model(str(_xlmr_tiny(tmp_path / "xlmr")), max_tokens=100)
    assert lm.recipe.max_tokens == 38
