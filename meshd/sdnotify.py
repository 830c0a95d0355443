"""systemd's readiness protocol (sd_notify), without a dependency.

With ``Type=notify`` systemd passes a datagram socket in ``NOTIFY_SOCKET``;
meshd sends ``READY=1`` once its API answers and ``STOPPING=1`` on shutdown.
Outside systemd the variable is unset and this does nothing.
"""

from __future__ import annotations

import logging
import os
import socket

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
