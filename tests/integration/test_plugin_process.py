"""An external plugin's process never outlives meshd, even one that ignores its stream.

These run plain commands (sleep) under PluginProcess, so only the process
layer keeps them from being orphaned: the kernel's parent-death signal when
the parent is SIGKILLed, the process group on a normal stop.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import trio

from meshd.plugin_host.process import PluginExited, PluginProcess
from meshd.testing import eventually, eventually_blocking
from tests.integration.test_external_plugins import _alive

# A parent that runs `sleep` as a plugin and prints its pid, then waits to be killed.
PARENT = textwrap.dedent("""
    import os, sys, trio
    from meshd.plugin_host.process import PluginProcess

    async def main():
        process = PluginProcess("sleeper", ["sleep", "1000"], dict(os.environ), None)
        async with trio.open_nursery() as nursery:
            await nursery.start(process.run)
            print(process.pid, flush=True)
            await trio.sleep_forever()

    trio.run(main)
""")


def test_the_plugin_dies_when_its_parent_is_killed_with_sigkill() -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        pid = int(parent.stdout.readline())
        assert _alive(pid)
        # Longer than trio's idle worker threads live: the signal must follow
        # the trio thread, not the thread that forked.
        subprocess.run(["sleep", "11"], check=True)
        assert _alive(pid)
        parent.send_signal(signal.SIGKILL)
        parent.wait(5)
        eventually_blocking(lambda: not _alive(pid), timeout=5, interval=0.05,
                            what="the plugin to die with its SIGKILLed parent")
    finally:
        parent.kill()


async def test_stopping_the_plugin_stops_its_whole_process_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    # The child ignores SIGTERM, so the group's SIGKILL after the grace is what ends it.
    script = f"trap '' TERM; sleep 1000 & echo $! > {pid_file}; wait"
    process = PluginProcess("group", ["sh", "-c", script], dict(os.environ), None)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(process.run)
            await eventually(lambda: pid_file.exists() and pid_file.read_text().strip() != "",
                             timeout=10, interval=0.02, what="the child to write its pid")
            grandchild = int(pid_file.read_text())
            assert _alive(grandchild)
            nursery.cancel_scope.cancel()
    assert process.exited.is_set() and not _alive(process.pid)
    # SIGKILL reaches the rest of the group at once, but its death is not synchronous.
    await eventually(lambda: not _alive(grandchild), timeout=2, interval=0.02,
                     what="the grandchild to die")


async def test_the_exit_of_the_process_is_reported_with_its_output_logged(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mesh.plugin.talker")
    process = PluginProcess("talker", ["sh", "-c", "echo hello from the plugin; exit 3"],
                            dict(os.environ), None)
    with trio.fail_after(10), pytest.raises(PluginExited, match="exit code 3"):
        await process.run()
    assert any(r.name == "mesh.plugin.talker" and r.getMessage() == "hello from the plugin"
               for r in caplog.records)


async def test_a_command_that_cannot_run_is_reported_before_any_fork() -> None:
    process = PluginProcess("missing", ["/nonexistent/plugin"], dict(os.environ), None)
    with pytest.raises(PluginExited, match="cannot start '/nonexistent/plugin': not found"):
        await process.run()
