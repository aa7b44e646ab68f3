"""The one progress protocol."""
from __future__ import annotations

import pytest

from bitextmine.events import Event, emit, task


def test_task_emits_start_advance_end_even_on_error() -> None:
    got: list[Event] = []
    with task(got.append, "encoding", 10, unit="sentences") as advance:
        advance(3)
        advance(7)
    assert [(e.kind, e.n) for e in got] == [("start", 0), ("advance", 3), ("advance", 7), ("end", 0)]
    assert got[0].total == 10 and got[0].what == "encoding"
    got.clear()
    with pytest.raises(KeyError):
        with task(got.append, "x") as advance:
            raise KeyError
    assert [e.kind for e in got] == ["start", "end"]


def test_without_listener_nothing_is_counted() -> None:
    with task(None, "x", 5) as advance:
        assert advance is None
    emit(None, "step", step=1)  # no-op


def test_emit_carries_data() -> None:
    got: list[Event] = []
    emit(got.append, "eval", step=3, results={})
    assert got == [Event("eval", data={"step": 3, "results": {}})]
