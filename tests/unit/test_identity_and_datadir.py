"""Identity key file and data directory ownership."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from meshcore import genesis as genesis_doc
from meshd import datadir
from meshd.identity import IDENTITY_FILE, IdentityError, load_or_create_identity
from tests.unit.test_genesis import DOC


def test_identity_is_created_0600_and_reused(tmp_path: Path) -> None:
    seed = load_or_create_identity(tmp_path)
    assert len(seed) == 32
    assert stat.S_IMODE((tmp_path / IDENTITY_FILE).stat().st_mode) == 0o600
    assert load_or_create_identity(tmp_path) == seed
    assert (tmp_path / IDENTITY_FILE).read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")


def test_identity_readable_by_others_is_refused(tmp_path: Path) -> None:
    load_or_create_identity(tmp_path)
    os.chmod(tmp_path / IDENTITY_FILE, 0o644)
    with pytest.raises(IdentityError, match="chmod 600"):
        load_or_create_identity(tmp_path)


def test_garbage_identity_is_refused(tmp_path: Path) -> None:
    path = tmp_path / IDENTITY_FILE
    path.write_text("hello")
    path.chmod(0o600)
    with pytest.raises(IdentityError, match="not a PEM private key"):
        load_or_create_identity(tmp_path)


def test_second_lock_is_refused_with_the_holder_pid(tmp_path: Path) -> None:
    with datadir.lock(tmp_path), \
            pytest.raises(datadir.DataDirError, match=f"pid {os.getpid()}"), \
            datadir.lock(tmp_path):
        pass
    with datadir.lock(tmp_path):  # released on exit
        pass


def test_genesis_is_stored_on_first_start_then_optional(tmp_path: Path) -> None:
    given = tmp_path / "genesis.in.toml"
    given.write_text(DOC)
    data = datadir.prepare(tmp_path / "data")
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    with pytest.raises(datadir.DataDirError, match="pass --genesis"):
        datadir.bind_genesis(data, None)
    first, _ = datadir.bind_genesis(data, given)
    again, text = datadir.bind_genesis(data, None)
    assert first == again
    assert text == DOC


def test_another_network_on_the_same_data_dir_is_refused(tmp_path: Path) -> None:
    given = tmp_path / "genesis.toml"
    given.write_text(DOC)
    data = datadir.prepare(tmp_path / "data")
    datadir.bind_genesis(data, given)
    other = tmp_path / "other.toml"
    other.write_text(genesis_doc.dumps(genesis_doc.loads(DOC.replace("StorageNet", "Other"))))
    with pytest.raises(datadir.DataDirError, match="belongs to network net_"):
        datadir.bind_genesis(data, other)


def test_invalid_genesis_names_file_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(DOC.replace('symbol = "STR"', 'symbol = "s"'))
    with pytest.raises(datadir.DataDirError, match=r"bad.toml is invalid: token.symbol"):
        datadir.bind_genesis(datadir.prepare(tmp_path / "d"), bad)
