"""The data directory: exclusive ownership, and the network it belongs to.

A data directory is owned by one meshd at a time (an flock on ``meshd.lock``,
released by the kernel even on SIGKILL) and belongs to one network for life:
its first start stores the genesis there, and a later start with another
genesis is refused rather than mixing two networks' state.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from meshcore import genesis as genesis_doc
from meshcore.genesis import Genesis, GenesisError

LOCK_FILE = "meshd.lock"
GENESIS_FILE = "genesis.toml"


class DataDirError(Exception):
    """The data directory cannot be used."""


def prepare(data_dir: Path) -> Path:
    """Create the data directory (mode 0700) if needed; return its absolute path."""
    data_dir = data_dir.absolute()
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise DataDirError(f"cannot create data directory {data_dir}: {exc.strerror}") from None
    if not os.access(data_dir, os.W_OK | os.X_OK):
        raise DataDirError(f"data directory {data_dir} is not writable by this user")
    return data_dir


@contextlib.contextmanager
def lock(data_dir: Path) -> Iterator[None]:
    """Hold the data directory for this process; refuse if another meshd holds it."""
    path = data_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise DataDirError(f"data directory {data_dir} is in use by another meshd "
                               f"(pid {holder}); stop it or choose another --data-dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def bind_genesis(data_dir: Path, given: Path | None) -> tuple[Genesis, str]:
    """The genesis this data directory runs, and its TOML text.

    The first start stores ``given``; later starts may omit it, and must not
    name another network.
    """
    stored_path = data_dir / GENESIS_FILE
    stored = _load(stored_path, "stored genesis") if stored_path.exists() else None
    if given is None:
        if stored is None:
            raise DataDirError(f"no genesis for {data_dir}: pass --genesis FILE "
                               "(written by 'meshctl network init'), or join by ID: "
                               "--network-id NET_ID --bootstrap ADDRESS")
        return stored
    chosen = _load(given, "genesis")
    if stored is not None and stored[0].network_id != chosen[0].network_id:
        raise DataDirError(
            f"data directory {data_dir} belongs to network {stored[0].network_id} "
            f"({stored[0].name}), but {given} is network {chosen[0].network_id} "
            f"({chosen[0].name}); use another --data-dir for another network")
    if stored is None:
        store_genesis(data_dir, chosen[1])
    return chosen


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` by ``data`` whole: written beside it, flushed to disk, renamed
    over it, so a crash leaves the old file or the new one, never a torn one."""
    temporary = path.with_suffix(".tmp")
    with temporary.open("wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)


def has_genesis(data_dir: Path) -> bool:
    return (data_dir / GENESIS_FILE).exists()


def store_genesis(data_dir: Path, text: str) -> None:
    """Keep ``text`` as this data directory's genesis (atomically)."""
    stored_path = data_dir / GENESIS_FILE
    tmp = stored_path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, stored_path)


def _load(path: Path, what: str) -> tuple[Genesis, str]:
    try:
        text = path.read_text(encoding="utf-8")
        return genesis_doc.loads(text), text
    except OSError as exc:
        raise DataDirError(f"cannot read {what} {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise DataDirError(f"{what} {path} is not UTF-8 text") from None
    except GenesisError as exc:
        raise DataDirError(f"{what} {path} is invalid: {exc}") from None
