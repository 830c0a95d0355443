"""meshctl's kept capabilities of sealed files (meshctl/capabilities.py)."""

from __future__ import annotations

import concurrent.futures
import json
from pathlib import Path

import pytest
from mesh_storage import sealing

from meshctl import capabilities
from meshctl.capabilities import KeyringError

CID = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi"
OTHER = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"


@pytest.fixture
def keyring(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    where = tmp_path / "conf" / "capabilities.json"
    monkeypatch.setenv(capabilities.ENV, str(where))
    return where


def test_a_kept_key_is_found_again_and_readable_by_its_user_only(keyring: Path) -> None:
    assert capabilities.key_of(CID) is None  # no file yet
    key, other = sealing.new_key(), sealing.new_key()
    assert capabilities.keep(CID, key) == keyring
    assert capabilities.keep(OTHER, other) == keyring
    assert (capabilities.key_of(CID), capabilities.key_of(OTHER)) == (key, other)
    assert keyring.stat().st_mode & 0o777 == 0o600
    kept = json.loads(keyring.read_text())
    assert kept == {"version": 1, "capabilities": {CID: sealing.capability(CID, key),
                                                   OTHER: sealing.capability(OTHER, other)}}
    # No temporary file left; the lock file that makes two meshctl take turns stays.
    assert [p.name for p in keyring.parent.iterdir() if p.name.startswith(".")] == \
        [".capabilities.json.lock"]


def test_two_keepers_at_once_lose_neither_key(keyring: Path) -> None:
    cids = [f"bafkrei{i:052d}" for i in range(8)]
    keys = {cid: sealing.new_key() for cid in cids}
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda cid: capabilities.keep(cid, keys[cid]), cids))
    assert {cid: capabilities.key_of(cid) for cid in cids} == keys


def test_without_the_variable_it_lives_in_the_users_config(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(capabilities.ENV, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert capabilities.path() == tmp_path / "mesh" / "capabilities.json"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    assert capabilities.path() == Path.home() / ".config" / "mesh" / "capabilities.json"


@pytest.mark.parametrize("text", ["not json", "[]", '{"version": 2, "capabilities": {}}',
                                  '{"version": 1, "capabilities": {"a": 1}}'])
def test_a_file_that_is_not_one_is_named_and_left_as_it_is(keyring: Path, text: str) -> None:
    keyring.parent.mkdir(parents=True)
    keyring.write_text(text)
    with pytest.raises(KeyringError, match="is not a capabilities file"):
        capabilities.key_of(CID)
    with pytest.raises(KeyringError, match="nothing was changed"):
        capabilities.keep(CID, sealing.new_key())
    assert keyring.read_text() == text


def test_a_bad_kept_capability_and_an_unwritable_place_say_why(keyring: Path) -> None:
    keyring.parent.mkdir(parents=True)
    keyring.write_text(json.dumps({"version": 1, "capabilities": {CID: CID + "#short"}}))
    with pytest.raises(KeyringError, match="is not one"):
        capabilities.key_of(CID)
    keyring.write_text(json.dumps({"version": 1, "capabilities": {
        CID: sealing.capability(OTHER, sealing.new_key())}}))
    assert capabilities.key_of(CID) is None  # kept under the wrong name: not its key

def test_a_place_that_cannot_hold_the_file_says_why(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv(capabilities.ENV, str(blocker / "capabilities.json"))
    with pytest.raises(KeyringError, match=r"cannot write .*a-file/capabilities\.json"):
        capabilities.keep(CID, sealing.new_key())
