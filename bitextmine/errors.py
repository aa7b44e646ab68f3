"""A small exception hierarchy. Each error carries a one-line, user-facing message.

Library code raises these; only ``bitextmine.cli`` turns them into exit codes.
"""
from __future__ import annotations


class BitextmineError(Exception):
    """Base class: ``str(err)`` is a complete one-line message for the user."""

    exit_code = 2


class InputError(BitextmineError):
    """A file or argument the user gave cannot be used (missing, empty, bad encoding...)."""


class ModelError(BitextmineError):
    """A model cannot be found, loaded or converted."""


class StoreError(BitextmineError):
    """An embedding folder is missing, corrupt, truncated or does not match."""


class MismatchError(BitextmineError):
    """Two things that must agree do not (embeddings of different models, changed input on resume)."""
