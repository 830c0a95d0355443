"""Capabilities of the files this user sealed (`storage put --encrypt`), kept for them.

A capability, ``CID#key``, is the only way to read a sealed file: no node
has the key. ``put --encrypt`` prints it and keeps a copy in a file of this
user's, mode 0600 like an SSH key: ``$MESH_CAPABILITIES``, or
``$XDG_CONFIG_HOME/mesh/capabilities.json`` (``~/.config/mesh/...``). Then
``storage get CID`` on this machine opens the file without the key typed
again. Sharing a file is still handing its capability over; ``put
--no-keep`` keeps no copy. The file is JSON, ``{"version": 1,
"capabilities": {CID: capability}}``, rewritten whole (a temporary file,
fsync, rename), so a crash leaves the old one or the new one.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

from mesh_storage import sealing
from mesh_storage.chunks import write_atomically

ENV = "MESH_CAPABILITIES"
VERSION = 1


class KeyringError(Exception):
    """The capabilities file cannot be read or written; the message says why."""


def path() -> Path:
    """Where this user's capabilities are kept."""
    if os.environ.get(ENV):
        return Path(os.environ[ENV])
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "mesh" / "capabilities.json"


def keep(cid: str, key: bytes) -> Path:
    """Keep file ``cid``'s key; returns the file it is kept in. Two meshctl at once
    take turns (a lock file beside it): neither loses the other's key."""
    where = path()
    try:
        where.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with (where.parent / f".{where.name}.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            _write(where, cid, key)
    except OSError as exc:
        raise KeyringError(f"cannot write {where}: {exc.strerror or exc}") from None
    return where


def _write(where: Path, cid: str, key: bytes) -> None:
    kept = _read(where)
    kept[cid] = sealing.capability(cid, key)
    data = json.dumps({"version": VERSION, "capabilities": kept}, indent=1, sort_keys=True)
    write_atomically(where, (data + "\n").encode())  # a temporary file of mode 0600


def key_of(cid: str) -> bytes | None:
    """The kept key of file ``cid``, or None."""
    capability = _read(path()).get(cid)
    if capability is None:
        return None
    try:
        kept_cid, key = sealing.parse_capability(capability)
    except sealing.SealError as exc:
        raise KeyringError(f"{path()}: the capability kept for {cid} is not one: {exc}") \
            from None
    return key if kept_cid == cid else None


def _read(where: Path) -> dict[str, str]:
    try:
        text = where.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise KeyringError(f"cannot read {where}: {exc.strerror or exc}") from None
    try:
        document = json.loads(text)
        kept = document["capabilities"]
        if document.get("version") != VERSION or not isinstance(kept, dict) \
                or not all(isinstance(k, str) and isinstance(v, str) for k, v in kept.items()):
            raise ValueError
    except (ValueError, KeyError, TypeError, AttributeError):
        raise KeyringError(f"{where} is not a capabilities file (version {VERSION}): move it "
                           "aside or mend it; nothing was changed") from None
    return dict(kept)
