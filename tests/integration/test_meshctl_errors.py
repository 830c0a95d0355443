"""meshctl against a real daemon: errors meshd sends are shown as meshd worded them."""

from __future__ import annotations

from pathlib import Path

import trio
from click.testing import CliRunner, Result

from meshctl.main import cli
from meshd.testing import open_network, plugin_under_test
from tests.plugin_fixtures import EchoPlugin


def meshctl(socket: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--socket", str(socket), *args])


async def test_an_unavailable_answer_from_meshd_is_not_a_connection_failure(
        tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with open_network(tmp_path, 1,
                                plugins=[plugin_under_test("echo", EchoPlugin)]) as net:
            socket = net.nodes[0].socket
            # The plugin's handler outlives its 0.5 s: meshd answers UNAVAILABLE.
            slow = await trio.to_thread.run_sync(meshctl, socket, "plugins", "call", "echo",
                                                 "SLOW")
            assert slow.exit_code == 1
            assert "did not answer 'SLOW' within 0.5 s" in slow.output, slow.output
            assert "cannot reach meshd" not in slow.output
    # Once meshd is gone, the same command says so.
    gone = meshctl(socket, "plugins", "call", "echo", "SLOW")
    assert gone.exit_code == 1 and "cannot reach meshd" in gone.output, gone.output
