"""meshctl's root command: where meshd is, and the nouns."""

from __future__ import annotations

import importlib
from pathlib import Path

import click

from meshcore.paths import default_socket_path
from meshcore.version import __version__
from meshctl import (
    completion,
    dht,
    doctor,
    events,
    gov,
    ledger,
    network,
    node,
    peers,
    plugins,
    pubsub,
    rewards,
    tasks,
    testnet,
    token,
)
from meshctl.client import DEFAULT_TIMEOUT, MeshClient, Target
from meshctl.context import Session, fail, json_option


def _template(name: str, module: str, summary: str) -> click.Command:
    """A first-party template's command group (``meshctl storage``, ``meshctl compute``),
    or, when its plugin's package is not installed beside meshctl, a command
    that says so."""
    try:
        group: click.Command = getattr(importlib.import_module(module), name)
        return group
    except ImportError as missing:
        why = str(missing)

    @click.command(name, context_settings={"ignore_unknown_options": True},
                   add_help_option=False, help=f"{summary} (its package is not installed).")
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def absent(args: tuple[str, ...]) -> None:
        fail(f"meshctl {name} needs the {name} plugin's package beside meshctl "
             f"(pip install ./plugins/{name}, or `make setup`): {why}")
    return absent


storage_commands = _template("storage", "meshctl.storage",
                             "Store files on the network's storage plugin")
compute_commands = _template("compute", "meshctl.compute",
                             "Run WebAssembly modules on the network")

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(context_settings=CONTEXT)
# readable=False: meshctl checks the socket itself, with a hint (meshctl/client.py).
@click.option("--socket", type=click.Path(path_type=Path, readable=False), envvar="MESH_SOCKET",
              default=default_socket_path, show_default="<data dir>/meshd.sock",
              help="meshd's API socket [env: MESH_SOCKET].")
@click.option("--addr", envvar="MESH_ADDR", metavar="HOST:PORT",
              help="Reach meshd over TCP (TLS + token) instead [env: MESH_ADDR].")
@click.option("--tls-ca", type=click.Path(dir_okay=False, path_type=Path), envvar="MESH_TLS_CA",
              help="CA certificate to trust for --addr [env: MESH_TLS_CA].")
@click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path),
              envvar="MESH_TOKEN_FILE",
              help="File with the API token for --addr [env: MESH_TOKEN_FILE; or MESH_TOKEN].")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=DEFAULT_TIMEOUT,
              show_default=True, help="Seconds to wait for meshd.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts (every command).")
@click.version_option(__version__, prog_name="meshctl")
@click.pass_context
def cli(ctx: click.Context, socket: Path, addr: str | None, tls_ca: Path | None,
        token_file: Path | None, timeout: float, as_json: bool) -> None:
    """meshctl: control a Mesh node (meshd) and create Mesh networks.

    \b
    meshctl network init --name StorageNet --token-name STORE --token-symbol STR
    meshctl status
    meshctl --json status     (or: meshctl status --json)
    """
    client = MeshClient(Target(socket, addr, tls_ca, token_file, timeout))
    ctx.obj = Session(client, as_json)
    ctx.call_on_close(client.close)


@cli.command()
@json_option
def version(as_json: bool) -> None:
    """Print meshctl's version (the daemon's is in 'meshctl status')."""
    from meshctl.output import emit

    emit({"version": __version__}, as_json, lambda d: f"meshctl {d['version']}")


cli.add_command(node.status)
cli.add_command(doctor.doctor)
cli.add_command(events.events)
cli.add_command(network.network)
cli.add_command(peers.peers)
cli.add_command(ledger.ledger)
cli.add_command(rewards.rewards)
cli.add_command(token.token)
cli.add_command(gov.gov)
cli.add_command(dht.dht)
cli.add_command(pubsub.pubsub)
cli.add_command(plugins.plugins)
cli.add_command(tasks.tasks)
cli.add_command(testnet.testnet)
cli.add_command(storage_commands)
cli.add_command(compute_commands)
cli.add_command(completion.completion)


def main() -> None:
    cli(prog_name="meshctl")
