"""systemd's readiness protocol (sd_notify), without a dependency.

With ``Type=notify`` systemd passes a datagram socket in ``NOTIFY_SOCKET``;
meshd sends ``READY=1`` once its API answers and ``STOPPING=1`` on shutdown.
With ``WatchdogSec=`` it also passes ``WATCHDOG_USEC`` (and ``WATCHDOG_PID``),
and meshd sends ``WATCHDOG=1`` at half that interval from a trio task: a
daemon whose event loop hangs stops sending, and systemd restarts it.
Outside systemd the variables are unset and this does nothing.
"""

from __future__ import annotations

import logging
import os
import socket

import trio

log = logging.getLogger(__name__)


def notify(state: str) -> bool:
    """Send ``state`` (e.g. ``"READY=1"``) to systemd; False when not delivered.

    Like sd_notify(3), a notification that cannot be delivered is not an error
    of the daemon: it is logged and meshd goes on.
    """
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as exc:
        log.warning("cannot notify the service manager", extra={
            "state": state, "notify_socket": address, "error": str(exc)})
        return False
    return True


def watchdog_interval() -> float | None:
    """Seconds between two ``WATCHDOG=1`` (half of ``WATCHDOG_USEC``), or None
    when systemd asks for none (as sd_watchdog_enabled(3): not set, not a
    positive number, or meant for another process)."""
    pid = os.environ.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    try:
        usec = int(os.environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 2e6 if usec > 0 else None


async def feed_watchdog(interval: float) -> None:
    """Send ``WATCHDOG=1`` every ``interval`` seconds, for as long as trio runs it."""
    while True:
        notify("WATCHDOG=1")
        await trio.sleep(interval)
