"""Pin a case of a property test that draws with ``st.data()``.

Hypothesis cannot replay a ``st.data()`` case from ``@example``: the draws are
made inside the test. A model that draws only plain values (numbers, strings,
lists of them) can be replayed from the list of values it drew, though:

    @given(data=st.data())
    @example(data=Replay([3, 0, "fork", ...]))  # found by make soak
    def test_something(data):
        with recording(data) as draws:
            ... draws.draw(st.integers(0, 4)) ...

When a property fails, :func:`recording` makes hypothesis print the line to
paste (``@example(data=Replay([...]))``) beside the shrunk case. The values
end where the case failed; once the bug is fixed the model may go on past that
point, so a replay ends, as a pass, when its values run out: it checked the
whole recorded history. A pinned case replays exactly as long as the model
draws the same way: re-find a case when the model changes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Protocol

from hypothesis import note
from hypothesis.strategies import SearchStrategy


class Draws(Protocol):
    def draw(self, strategy: SearchStrategy[Any], label: Any = None) -> Any: ...


class Replay:
    """Gives back the values of a recorded case, in the order they were drawn."""

    def __init__(self, values: list[Any]) -> None:
        self.values = list(values)
        self._at = 0

    def draw(self, strategy: SearchStrategy[Any], label: Any = None) -> Any:
        if self._at == len(self.values):
            raise _ReplayEnded
        value = self.values[self._at]
        self._at += 1
        return value

    def __repr__(self) -> str:
        return f"Replay({self.values!r})"


class _ReplayEnded(Exception):
    """The recorded history is over (caught by :func:`recording`)."""


class _Recorder:
    def __init__(self, data: Draws) -> None:
        self._data = data
        self.values: list[Any] = []

    def draw(self, strategy: SearchStrategy[Any], label: Any = None) -> Any:
        value = self._data.draw(strategy, label)
        self.values.append(value)
        return value


@contextlib.contextmanager
def recording(data: Draws) -> Iterator[Draws]:
    """Draws from ``data`` (hypothesis's, or a :class:`Replay`); on failure,
    notes the ``@example`` that replays the case."""
    if isinstance(data, Replay):
        with contextlib.suppress(_ReplayEnded):
            yield data
        return
    recorder = _Recorder(data)
    try:
        yield recorder
    except BaseException:
        note(f"pin this case with: @example(data=Replay({recorder.values!r}))")
        raise
