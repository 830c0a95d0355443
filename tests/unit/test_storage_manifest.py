"""The storage template's manifest: what `meshctl storage put` writes and `get` reads."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from mesh_storage.manifest import (
    MAX_CHUNK,
    Manifest,
    ManifestError,
    NotAManifest,
    parse_manifest,
)

NAME = "ab" * 32


def test_a_manifest_reads_back_as_written() -> None:
    manifest = Manifest("photo.jpg", 1234, "cd" * 32, (NAME, NAME))
    assert parse_manifest(manifest.encode()) == manifest


@pytest.mark.parametrize("data", [b"\xff\xfe", b"plain chunk bytes", b"[1, 2]",
                                  json.dumps({"format": "other/1"}).encode()])
def test_a_chunk_is_not_a_manifest(data: bytes) -> None:
    with pytest.raises(NotAManifest):
        parse_manifest(data)


@pytest.mark.parametrize("change", [{"chunks": ["not-a-hash"]}, {"chunks": "x"},
                                    {"size": -1}, {"size": True}, {"size": "12"},
                                    {"sha256": 7}, {"name": None}, {"chunk_size": "big"}])
def test_a_malformed_manifest_is_refused(change: dict[str, object]) -> None:
    fields = json.loads(Manifest("f", 1, "cd" * 32, (NAME,)).encode()) | change
    with pytest.raises(ManifestError, match="malformed"):
        parse_manifest(json.dumps(fields).encode())


def test_a_manifest_must_fit_in_one_chunk() -> None:
    with pytest.raises(ManifestError, match="too many"):
        Manifest("huge", 1, "cd" * 32, (NAME,) * (MAX_CHUNK // 64)).encode()


def test_meshctl_without_the_storage_package_says_what_to_install() -> None:
    # meshctl installed alone: every other noun works, storage says why it cannot.
    hide = ("import sys; sys.modules['mesh_storage'] = None; "
            "sys.modules['mesh_storage.manifest'] = None; from meshctl.main import main; "
            "sys.argv = ['meshctl'] + sys.argv[1:]; main()")
    storage = subprocess.run([sys.executable, "-c", hide, "storage", "get", NAME, "-o", "x"],
                             capture_output=True, text=True, timeout=60)
    assert storage.returncode == 1
    assert "needs the storage plugin's package" in storage.stderr
    version = subprocess.run([sys.executable, "-c", hide, "version"], capture_output=True,
                             text=True, timeout=60)
    assert version.returncode == 0 and "meshctl" in version.stdout
