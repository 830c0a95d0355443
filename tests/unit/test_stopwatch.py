"""A slow stop says what it waits on (meshd/stopwatch.py)."""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing

from meshd import stopwatch


async def a_goodbye_that_never_ends() -> None:
    await trio.sleep_forever()


async def test_a_slow_stop_names_the_tasks_it_waits_on(
        caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock) -> None:
    caplog.set_level(logging.WARNING, logger="meshd.stopwatch")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(a_goodbye_that_never_ends)
        nursery.start_soon(stopwatch.report_slow_stop, 0.05, 0.05)
        await trio.sleep(0.12)  # virtual time (autojump): two reports are due by then
        nursery.cancel_scope.cancel()
    reports = [r for r in caplog.records if r.getMessage().startswith("still stopping")]
    assert len(reports) == 2  # after 0.05 s, then after 0.10 s
    assert [r.seconds for r in reports] == [0, 0]  # type: ignore[attr-defined]  # rounded
    tasks = reports[0].tasks  # type: ignore[attr-defined]
    waiting = [t for t in tasks if "a_goodbye_that_never_ends" in t]
    assert len(waiting) == 1 and "test_stopwatch.py" in waiting[0], tasks
    assert not any("report_slow_stop" in t for t in tasks), tasks


async def test_a_quick_stop_reports_nothing(caplog: pytest.LogCaptureFixture,
                                            autojump_clock: trio.testing.MockClock) -> None:
    caplog.set_level(logging.WARNING, logger="meshd.stopwatch")
    with trio.move_on_after(0.05):
        await stopwatch.report_slow_stop(1.0)
    assert not caplog.records
