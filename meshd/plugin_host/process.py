"""The process of an external plugin: started, logged, and never left behind.

Three layers keep a plugin from outliving the meshd that started it:

* the command runs under ``setpriv --pdeathsig KILL``, so the kernel kills it
  when meshd dies, even by SIGKILL. The signal follows the *thread* that
  forked (prctl(2)), and trio forks on a worker thread that exits when idle
  (trio.lowlevel.open_process runs Popen via trio.to_thread): so we fork on
  the trio thread itself, which lives as long as meshd;
* it leads a process group of its own, and stopping it signals the whole
  group (SIGTERM, then SIGKILL after a grace period), children included;
* its stream to meshd ends when meshd dies, and a plugin exits when its stream
  ends (the protocol asks it to; the examples do).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

import trio

log = logging.getLogger(__name__)

STOP_GRACE = 3.0  # seconds between SIGTERM and SIGKILL
MAX_LINE = 4096  # longer output lines are cut
LINES_PER_SECOND = 100  # output beyond this is dropped, and the drop is logged


class PluginExited(Exception):
    """The plugin's process ended."""


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-returncode).name}"
        return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


class PluginProcess:
    """One run of an external plugin's command."""

    def __init__(self, name: str, command: Sequence[str], env: Mapping[str, str],
                 cwd: Path | None) -> None:
        self.name = name
        self._command = list(command)
        self._env = dict(env)
        self._cwd = cwd
        self.exited = trio.Event()
        self._drained = trio.Event()  # all output read
        self.returncode: int | None = None
        self.pid = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                  ) -> None:
        """Start the command, log its output, and raise PluginExited when it ends.

        Cancelling this stops the process group (SIGTERM, then SIGKILL).
        """
        popen = self._spawn()
        self.pid = popen.pid
        assert popen.stdout is not None
        output = trio.lowlevel.FdStream(os.dup(popen.stdout.fileno()))
        popen.stdout.close()
        pidfd = os.pidfd_open(popen.pid)
        try:
            task_status.started()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._forward_output, output)
                await trio.lowlevel.wait_readable(pidfd)
                self.returncode = popen.wait()
                # Output the process wrote just before it ended is still worth reading.
                with trio.move_on_after(0.5):
                    await self._drained.wait()
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await self._stop_group(popen, pidfd)
                os.close(pidfd)
                await output.aclose()
                self.exited.set()
        raise PluginExited(f"the plugin process {describe_exit(self.returncode)}")

    def _spawn(self) -> subprocess.Popen[bytes]:
        program = self._command[0]
        if "/" in program and self._cwd is not None:
            program = str(self._cwd / program)
        if shutil.which(program, path=self._env.get("PATH", os.defpath)) is None:
            raise PluginExited(f"cannot start {self._command[0]!r}: not found or not "
                               "executable (check plugins.external.*.command and PATH)")
        setpriv = shutil.which("setpriv")
        argv = self._command
        if setpriv is not None:
            argv = [setpriv, "--pdeathsig", "KILL", "--", *argv]
        else:  # pragma: no cover  # util-linux is in every Debian; say so if it is not
            log.warning("setpriv (util-linux) is not installed: an external plugin may "
                        "outlive meshd if meshd is killed", extra={"plugin": self.name})
        try:
            # On the trio thread, on purpose: see the module docstring.
            return subprocess.Popen(
                argv, env=self._env, cwd=self._cwd, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as exc:
            raise PluginExited(f"cannot start {self._command[0]!r}: {exc.strerror}") from None

    async def _stop_group(self, popen: subprocess.Popen[bytes], pidfd: int) -> None:
        """SIGTERM the group, SIGKILL what is left after the grace period, reap the leader."""
        _signal_group(popen.pid, signal.SIGTERM)
        if popen.poll() is None:
            with trio.move_on_after(STOP_GRACE):
                await trio.lowlevel.wait_readable(pidfd)
        # The leader is gone or had its chance; the rest of its group goes too.
        _signal_group(popen.pid, signal.SIGKILL)
        if popen.poll() is None:
            with trio.move_on_after(STOP_GRACE):
                await trio.lowlevel.wait_readable(pidfd)
        if popen.poll() is None:  # pragma: no cover  # SIGKILL is not refused
            log.error("plugin process survived SIGKILL", extra={"plugin": self.name,
                                                                "pid": popen.pid})
        if self.returncode is None:
            self.returncode = popen.returncode

    async def _forward_output(self, output: trio.lowlevel.FdStream) -> None:
        """The plugin's stdout and stderr, line by line, into meshd's log."""
        plugin_log = logging.getLogger(f"mesh.plugin.{self.name}")
        pending = b""
        budget, window_start, dropped = LINES_PER_SECOND, trio.current_time(), 0
        try:
            while chunk := await output.receive_some(65536):
                lines = (pending + chunk).split(b"\n")
                pending = lines.pop()[:MAX_LINE]
                for line in lines:
                    now = trio.current_time()
                    if now - window_start >= 1:
                        if dropped:
                            plugin_log.warning("dropped %d lines of plugin output", dropped)
                        budget, window_start, dropped = LINES_PER_SECOND, now, 0
                    if budget <= 0:
                        dropped += 1
                        continue
                    budget -= 1
                    plugin_log.info("%s", line[:MAX_LINE].decode(errors="replace").rstrip())
            if pending:
                plugin_log.info("%s", pending.decode(errors="replace").rstrip())
        except (trio.ClosedResourceError, OSError):
            pass
        finally:
            self._drained.set()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
