"""systemd readiness notification."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from meshd.sdnotify import notify


def test_sends_to_notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(str(path))
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        assert notify("READY=1")
        assert receiver.recv(100) == b"READY=1"


def test_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind("\0mesh-test-notify")
        monkeypatch.setenv("NOTIFY_SOCKET", "@mesh-test-notify")
        assert notify("STOPPING=1")
        assert receiver.recv(100) == b"STOPPING=1"


def test_not_under_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not notify("READY=1")


def test_unreachable_socket_is_logged_not_raised(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))
    assert not notify("STOPPING=1")
    assert "cannot notify the service manager" in caplog.text
