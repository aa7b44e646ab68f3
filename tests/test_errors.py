"""Library errors name parameters; the CLI spells them as flags."""
from __future__ import annotations

from bitextmine.cli.shared import flag
from bitextmine.errors import ConfigError, InputError, ModelError


def test_parameter_names_and_flag_spellings() -> None:
    e = InputError("{param} must be at least 1", param="k")
    assert str(e) == "k must be at least 1"
    assert e.message_for({"k": flag("k")}) == "-k must be at least 1"
    e = ModelError("{param} x: no config.json", param="model")
    assert e.message_for({"model": flag("model")}) == "--model x: no config.json"


def test_several_parameters() -> None:
    e = InputError("use another {out} folder or {overwrite}", param=("out", "overwrite"))
    assert str(e) == "use another out folder or overwrite"
    assert e.message_for({p: flag(p) for p in e.params}) == "use another --out folder or --overwrite"
    assert flag("id_column") == "--id-column" and flag("token_budget") == "--batch-tokens"


def test_plain_errors_and_exit_code() -> None:
    assert str(InputError("plain")) == "plain" and InputError("x").message_for({}) == "x"
    assert ConfigError("bad").exit_code == 2
