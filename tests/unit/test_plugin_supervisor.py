"""How a failed plugin start is described in `meshctl plugins info` (last_error)."""

from __future__ import annotations

from meshd.plugin_host.supervisor import describe


def test_a_single_error_is_unwrapped_from_its_nursery_groups() -> None:
    nested = ExceptionGroup("outer", [ExceptionGroup("inner", [ValueError("bad config")])])
    assert describe(nested) == "ValueError: bad config"


def test_errors_raised_together_are_each_named() -> None:
    both = ExceptionGroup("nursery", [RuntimeError("process exited"), KeyError("x")])
    assert describe(both) == "RuntimeError: process exited; KeyError: 'x'"


def test_a_long_error_is_cut() -> None:
    assert len(describe(ValueError("x" * 2000))) == 500
