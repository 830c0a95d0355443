"""meshd.testing.eventually and eventually_blocking: the one polling helper of the tests.

The async helper runs on trio's autojump clock and the blocking one on a fake
clock, so nothing here sleeps for real.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import grpc
import pytest
import trio
import trio.testing

from meshd import testing
from meshd.testing import eventually, eventually_blocking


def counter(values: list[object]) -> tuple[list[int], Callable[[], object]]:
    """A probe answering ``values`` in turn (the last one from then on), and its calls."""
    calls: list[int] = []

    def probe() -> object:
        calls.append(1)
        value = values[min(len(calls), len(values)) - 1]
        if isinstance(value, Exception):
            raise value
        return value

    return calls, probe


async def test_the_first_value_that_holds_is_returned(
        autojump_clock: trio.testing.MockClock) -> None:
    calls, probe = counter([1, 2, 3, 4])
    started = trio.current_time()
    assert await eventually(probe, lambda v: v >= 3, interval=0.5) == 3  # type: ignore[operator]
    assert len(calls) == 3
    assert trio.current_time() - started == pytest.approx(1.0)  # two intervals


async def test_an_async_probe_is_awaited_and_truth_is_the_default(
        autojump_clock: trio.testing.MockClock) -> None:
    calls, probe = counter([[], [], ["entry"]])

    async def fetch() -> object:
        await trio.lowlevel.checkpoint()
        return probe()

    assert await eventually(fetch) == ["entry"]
    assert len(calls) == 3


async def test_a_timeout_names_what_and_the_last_value(
        autojump_clock: trio.testing.MockClock) -> None:
    calls, probe = counter(["x" * 1000])
    with pytest.raises(AssertionError) as failed:
        await eventually(probe, lambda v: v == "y", timeout=1, interval=0.3,
                         what="the answer to be y")
    message = str(failed.value)
    assert message.startswith("timed out after 1 s waiting for the answer to be y; "
                              "the last value was 'xxx")
    assert len(message) < 300  # the value's repr is shortened
    assert len(calls) == 4  # at 0, 0.3, 0.6 and 0.9 s; the deadline cuts the next sleep
    assert failed.value.__cause__ is None


async def test_an_rpc_error_is_not_yet_by_default(
        autojump_clock: trio.testing.MockClock) -> None:
    calls, probe = counter([grpc.RpcError("connecting"), grpc.RpcError("connecting"), True])
    assert await eventually(probe) is True
    assert len(calls) == 3


async def test_a_timeout_after_rpc_errors_names_the_last_one(
        autojump_clock: trio.testing.MockClock) -> None:
    error = grpc.RpcError("no socket")
    _, probe = counter([error])
    with pytest.raises(AssertionError, match=r"^timed out after 1 s waiting for condition; "
                                             r"the last probe raised RpcError\('no socket'\)$"
                       ) as failed:
        await eventually(probe, timeout=1)
    assert failed.value.__cause__ is error


async def test_other_exceptions_and_not_yet_none_propagate_at_once(
        autojump_clock: trio.testing.MockClock) -> None:
    calls, probe = counter([False, ValueError("broken")])
    with pytest.raises(ValueError, match="broken"):
        await eventually(probe)
    assert len(calls) == 2
    calls, probe = counter([grpc.RpcError("refused")])
    with pytest.raises(grpc.RpcError):
        await eventually(probe, not_yet=())
    assert len(calls) == 1


async def test_a_probe_still_running_at_the_timeout_is_cancelled(
        autojump_clock: trio.testing.MockClock) -> None:
    async def hangs() -> bool:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    started = trio.current_time()
    with pytest.raises(AssertionError, match=r"waiting for an answer; no probe finished$"):
        await eventually(hangs, timeout=5, what="an answer")
    assert trio.current_time() - started == pytest.approx(5)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeClock]:
    fake = FakeClock()
    monkeypatch.setattr(testing, "time", fake)
    yield fake


def test_blocking_returns_the_first_value_that_holds(clock: FakeClock) -> None:
    calls, probe = counter([0, 5, 7])
    assert eventually_blocking(probe, lambda v: v == 7) == 7
    assert len(calls) == 3 and clock.sleeps == [0.2, 0.2]  # the default interval


def test_blocking_times_out_with_what_and_the_last_value(clock: FakeClock) -> None:
    calls, probe = counter([{"epoch": 1}])
    with pytest.raises(AssertionError) as failed:
        eventually_blocking(probe, lambda v: v["epoch"] >= 2, timeout=1,  # type: ignore[index]
                            interval=0.3, what="epoch 2 to be final")
    assert str(failed.value) == ("timed out after 1 s waiting for epoch 2 to be final; "
                                 "the last value was {'epoch': 1}")
    assert len(calls) == 5 and clock.sleeps == [0.3] * 4  # 0, 0.3, 0.6, 0.9, 1.2 s


def test_blocking_rpc_errors_are_not_yet_unless_told_otherwise(clock: FakeClock) -> None:
    calls, probe = counter([grpc.RpcError("down"), "up"])
    assert eventually_blocking(probe) == "up"
    assert len(calls) == 2
    calls, probe = counter([grpc.RpcError("down"), "up"])
    with pytest.raises(grpc.RpcError):
        eventually_blocking(probe, not_yet=())
    assert len(calls) == 1 and clock.sleeps == [0.2]
