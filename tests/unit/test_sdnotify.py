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


def test_the_watchdog_interval_is_half_what_systemd_asks(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from meshd.sdnotify import watchdog_interval

    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert watchdog_interval() is None  # no WatchdogSec=
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    assert watchdog_interval() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert watchdog_interval() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))  # meant for another process
    assert watchdog_interval() is None
    monkeypatch.delenv("WATCHDOG_PID")
    for bad in ("0", "-5", "soon", ""):
        monkeypatch.setenv("WATCHDOG_USEC", bad)
        assert watchdog_interval() is None


def test_the_watchdog_is_fed_while_trio_runs(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import trio
    import trio.testing

    from meshd.sdnotify import feed_watchdog

    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(str(path))
        receiver.setblocking(False)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))

        async def main() -> None:
            with trio.move_on_after(10.5):  # virtual seconds (autojump clock)
                await feed_watchdog(5.0)

        trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
        sent = []
        with pytest.raises(BlockingIOError):
            while True:
                sent.append(receiver.recv(100))
    assert sent == [b"WATCHDOG=1"] * 3  # at 0, 5 and 10 s


def test_a_crash_while_running_exits_70_and_a_refusal_to_start_1(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from meshd import cli, logs
    from meshd.config import Config

    config = Config.load(None, {}, {"node.data_dir": tmp_path})
    monkeypatch.setattr(logs, "configure", lambda level, fmt: None)  # pytest's logging stays

    async def crash(config: Config) -> None:
        raise RuntimeError("a bug")

    async def refuse(config: Config) -> tuple[str, int]:
        return "data directory in use", cli.EXIT_FAILURE

    monkeypatch.setattr(cli, "_serve", crash)
    assert cli.serve(config) == cli.EXIT_CRASH == 70
    monkeypatch.setattr(cli, "_serve", refuse)
    assert cli.serve(config) == cli.EXIT_FAILURE == 1
