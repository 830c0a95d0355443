"""Default locations, shared so that meshctl finds the socket meshd made."""

from __future__ import annotations

import os
from pathlib import Path

SYSTEM_DATA_DIR = Path("/var/lib/mesh")
SOCKET_NAME = "meshd.sock"
# sockaddr_un.sun_path holds 108 bytes including the terminating NUL.
MAX_SOCKET_PATH = 107


def default_data_dir() -> Path:
    """/var/lib/mesh for root (the system service), else the XDG data dir."""
    if os.geteuid() == 0:
        return SYSTEM_DATA_DIR
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "mesh"


def default_socket_path() -> Path:
    """The API socket of a meshd started with default settings."""
    return default_data_dir() / SOCKET_NAME
