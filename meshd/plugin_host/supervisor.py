"""Restart with backoff: keeps one plugin (in-process or external) running.

A start that fails is logged and retried after a delay that doubles up to a
ceiling; a start that ran for ``reset_after`` seconds counts as healthy and
resets the delay. The daemon itself never sees the failure.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio

log = logging.getLogger(__name__)

STARTING, RUNNING, BACKOFF = "starting", "running", "backoff"
MAX_ERROR_CHARS = 500


def describe(exc: BaseException) -> str:
    """``Type: message`` of the errors behind ``exc`` (nursery groups unwrapped)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    if isinstance(exc, BaseExceptionGroup):  # several at once: name each, not the group
        return "; ".join(describe(e) for e in exc.exceptions)[:MAX_ERROR_CHARS]
    return f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]


@dataclass(frozen=True)
class Backoff:
    initial: float = 1.0
    maximum: float = 60.0
    reset_after: float = 60.0  # a start that lived this long resets the delay


@dataclass
class Health:
    """What ``meshctl plugins ls|info`` shows of a supervised plugin."""

    state: str = STARTING
    restarts: int = 0
    last_error: str = ""
    last_error_at: float = 0.0  # time.time()
    started_at: float = 0.0  # time.time() of the current start
    next_start_at: float = 0.0  # time.time(), while in BACKOFF
    changed: trio.Event = field(default_factory=trio.Event)

    def set(self, state: str, **changes: object) -> None:
        self.state = state
        for key, value in changes.items():
            setattr(self, key, value)
        self.changed.set()
        self.changed = trio.Event()


async def supervise(name: str, start: Callable[[Health], Awaitable[None]],
                    health: Health, backoff: Backoff) -> None:
    """Run ``start(health)`` again and again until cancelled.

    ``start`` sets ``health`` to RUNNING once it is up, and raises (or returns)
    when this start ends. Runs until cancelled; never raises an Exception.
    """
    delay = backoff.initial
    while True:
        began = trio.current_time()
        health.set(STARTING)
        try:
            await start(health)
            error = "stopped by itself"
        except Exception as exc:  # contained: the plugin's failure is not the daemon's
            error = describe(exc)
            log.warning("plugin failed; restarting after a backoff", exc_info=exc, extra={
                "plugin": name, "error": error, "backoff_seconds": delay})
        else:
            log.warning("plugin ended; restarting after a backoff", extra={
                "plugin": name, "backoff_seconds": delay})
        if trio.current_time() - began >= backoff.reset_after:
            delay = backoff.initial
        health.set(BACKOFF, last_error=error, last_error_at=time.time(),
                   next_start_at=time.time() + delay)
        await trio.sleep(delay)
        health.restarts += 1
        delay = min(delay * 2, backoff.maximum)
