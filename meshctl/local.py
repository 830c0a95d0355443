"""meshd's programs on this machine: where ``meshd`` is, and a node's identity.

meshctl never imports the daemon (an import contract); what it needs of the
local node it asks ``meshd`` for, as a founder would by hand.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

IDENTITY_TIMEOUT = 30.0  # seconds for `meshd identity`


class LocalError(Exception):
    """meshd is missing, or could not answer."""


def meshd_binary() -> str:
    """meshd beside this Python (a venv), else on PATH."""
    beside = Path(sys.executable).parent / "meshd"
    found = str(beside) if beside.exists() else shutil.which("meshd")
    if found is None:
        raise LocalError("meshd is not installed beside meshctl nor on PATH")
    return found


def start_identity(data_dir: Path) -> subprocess.Popen[str]:
    """``meshd identity --data-dir DATA_DIR`` started (the key is created if missing)."""
    return subprocess.Popen([meshd_binary(), "identity", "--data-dir", str(data_dir)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish_identity(process: subprocess.Popen[str]) -> str:
    """The peer ID a :func:`start_identity` process printed."""
    try:
        out, err = process.communicate(timeout=IDENTITY_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        raise LocalError(f"meshd identity did not answer within {IDENTITY_TIMEOUT:g} s") \
            from None
    if process.returncode != 0:
        message = (err.strip() or out.strip()).removeprefix("meshd: ")
        raise LocalError(f"meshd identity failed: {message}")
    return out.strip()


def node_identity(data_dir: Path) -> str:
    """The peer ID of the node whose data dir is ``data_dir``."""
    return finish_identity(start_identity(data_dir))
