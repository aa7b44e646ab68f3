"""A small exception hierarchy. Each error carries a one-line, user-facing message.

Library code raises these; only ``bitextmine.cli`` turns them into exit codes.

An error about a parameter names it with ``param`` and writes ``{param}`` where the name goes in
the message: ``InputError("{param} must be at least 1", param="k")`` reads "k must be at least 1"
to a Python user, and the CLI, which knows the flag spelling, shows "-k must be at least 1"
(:meth:`BitextmineError.message_for`). A message about several parameters passes a tuple and
writes each as ``{name}``: ``param=("out", "overwrite")``. Library messages never name CLI flags.
"""
from __future__ import annotations

from typing import Mapping


class BitextmineError(Exception):
    """Base class: ``str(err)`` is a complete one-line message for the user."""

    exit_code = 2

    def __init__(self, message: str = "", *, param: str | tuple[str, ...] | None = None) -> None:
        self.template = message
        self.params: tuple[str, ...] = (param,) if isinstance(param, str) else tuple(param or ())
        self.param = self.params[0] if self.params else None  # the main parameter
        super().__init__(self.message_for({}))

    def message_for(self, names: Mapping[str, str]) -> str:
        """The message with each parameter spelled as ``names`` maps it (e.g. to a CLI flag)."""
        msg = self.template
        for i, p in enumerate(self.params):
            shown = names.get(p, p)
            msg = msg.replace("{" + p + "}", shown)
            if i == 0:
                msg = msg.replace("{param}", shown)
        return msg


class InputError(BitextmineError):
    """A file or argument the user gave cannot be used (missing, empty, bad encoding...)."""


class LockedError(InputError):
    """An output is in use by another process (its lock file names the PID)."""


class ModelError(BitextmineError):
    """A model cannot be found, loaded or converted."""


class StoreError(BitextmineError):
    """An embedding folder is missing, corrupt, truncated or does not match."""


class MismatchError(BitextmineError):
    """Two things that must agree do not (embeddings of different models, changed input on resume)."""


class ConfigError(BitextmineError):
    """A training recipe or override is invalid."""
