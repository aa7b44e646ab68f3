"""One progress protocol for every long job (encode, mine, bench, train).

A job reports to a *listener*, a callable taking :class:`Event`. The common kinds are

* ``start``   — a task begins: ``what`` (a label), ``total`` (units, or None if unknown), ``unit``;
* ``advance`` — ``n`` more units of the current task are done;
* ``end``     — the current task is over;

and jobs add their own kinds with ``data`` (training emits ``config``, ``data``, ``step``, ``eval``...;
``note`` carries a ``message`` the user should read).
Inner loops that only count (the k-NN search, the encoder) take a plain ``advance(n)`` callable;
:func:`task` turns a listener into one for the duration of a task. Library code never prints:
the CLI's reporter draws bars and log lines from these events.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

Advance = Callable[[int], None]


@dataclass(frozen=True)
class Event:
    kind: str  # "start", "advance", "end", or a job's own kind
    what: str = ""  # what the task is, for people ("encoding de.txt")
    n: int = 0  # units done by this event (advance)
    total: int | None = None  # units in the whole task (start), None if unknown
    unit: str = "sentences"  # what a unit is (start)
    data: dict[str, Any] = field(default_factory=dict)  # a job's own fields


Listener = Callable[[Event], None]


def emit(listener: Listener | None, kind: str, /, **data: Any) -> None:
    """Send a job-specific event (no-op without a listener)."""
    if listener is not None:
        listener(Event(kind, data=data))


@contextlib.contextmanager
def task(listener: Listener | None, what: str, total: int | None = None, unit: str = "sentences") -> Iterator[Advance | None]:
    """``with task(listener, "encoding", 1000) as advance: ... advance(n)`` — start/advance/end events.

    Yields None without a listener, so inner loops can skip counting.
    """
    if listener is None:
        yield None
        return
    listener(Event("start", what=what, total=total, unit=unit))
    try:
        yield lambda n: listener(Event("advance", what=what, n=n))
    finally:
        listener(Event("end", what=what))
