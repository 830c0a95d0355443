"""meshd's command line: ``meshd run``, ``meshd bootstrap``, ``meshd version``.

Exit codes: 0 after a clean shutdown (SIGTERM/SIGINT), 2 for invalid
configuration or genesis, 1 when the node cannot start or fails.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click
import trio

from meshcore import genesis as genesis_doc
from meshcore.paths import default_data_dir
from meshcore.version import __version__
from meshd import datadir, sdnotify, stopwatch
from meshd.config import DEFAULT_P2P_PORT, Config, ConfigError
from meshd.datadir import GENESIS_FILE, DataDirError

log = logging.getLogger("meshd")

# Exit statuses (docs/operations.md): a service manager restarts after a crash,
# not after what only the operator can fix (deploy/systemd/meshd.service).
EXIT_FAILURE = 1  # cannot start: data dir in use, another network's genesis, port in use
EXIT_CONFIG = 2  # invalid configuration or options
EXIT_CRASH = 70  # failed while running (sysexits' EX_SOFTWARE): worth a restart


def _node_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--genesis", type=click.Path(dir_okay=False, path_type=Path),
                     help="Genesis file of the network (from 'meshctl network init'). Needed "
                          "on first start; later the copy in the data dir is used."),
        click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
                     envvar="MESHD_CONFIG", help="TOML config file [env: MESHD_CONFIG]."),
        click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
                     help="Data directory (identity, genesis copy, socket). Default: "
                          "/var/lib/mesh for root, else ~/.local/share/mesh."),
        click.option("--bootstrap", multiple=True, metavar="ADDRESS",
                     help="Peer to join through: /ip4/.../tcp/PORT/p2p/ID, or a URL "
                          "tcp://HOST:PORT or ws://HOST:PORT (its peer ID is learnt on "
                          "first contact) (repeatable)."),
        click.option("--announce", multiple=True, metavar="MULTIADDR",
                     help="Address to tell peers instead of the listeners' own, e.g. a port "
                          "forward: /ip4/203.0.113.5/tcp/4001 (repeatable)."),
        click.option("--socket", type=click.Path(path_type=Path),
                     help="Unix socket of the API. Default: <data-dir>/meshd.sock."),
        click.option("--metrics-addr", metavar="HOST:PORT",
                     help="Serve Prometheus metrics on http://HOST:PORT/metrics (default: off)."),
        click.option("--http-listen", metavar="HOST:PORT",
                     help="Serve the REST/JSON gateway and the dashboard on http://HOST:PORT/ "
                          "(default: off; not loopback: TLS from api.tls_cert/tls_key)."),
        click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"])),
        click.option("--log-format", type=click.Choice(["text", "json"])),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


_listen_option = click.option(
    "--listen", multiple=True, metavar="MULTIADDR",
    help=f"p2p listen address (repeatable). Default: /ip4/0.0.0.0/tcp/{DEFAULT_P2P_PORT}.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="meshd")
def cli() -> None:
    """meshd, the Mesh daemon: one node of a Mesh network.

    \b
    Start a node of the network described by a genesis file:
      meshd run --genesis genesis.toml --bootstrap /ip4/203.0.113.5/tcp/4001/p2p/12D3KooW...
    Start a bootstrap node on the genesis' bootstrap port:
      meshd bootstrap --genesis genesis.toml
    Then talk to it with meshctl (meshctl --socket <data-dir>/meshd.sock status).
    """


@cli.command()
@_node_options
@_listen_option
@click.option("--network-id", metavar="NET_ID",
              help="Join this network: with no genesis given or stored, fetch it from a "
                   "--bootstrap peer and keep it only if it hashes to this ID.")
def run(listen: tuple[str, ...], **options: Any) -> None:
    """Run a node until SIGTERM or SIGINT."""
    sys.exit(serve(_load_config(options, role="node", listen=listen)))


@cli.command()
@_node_options
@_listen_option
@click.option("--network-id", metavar="NET_ID", required=True,
              help="The network to join, as its founder gave it (net_...).")
def join(listen: tuple[str, ...], **options: Any) -> None:
    """Join a network by its ID: fetch and check its genesis, then run.

    \b
      meshd join --network-id net_... --bootstrap /ip4/203.0.113.5/tcp/4001/p2p/12D3KooW...

    The genesis comes from the first --bootstrap peer that gives one hashing
    to the ID (others are refused, and the reason logged); it is kept in the
    data dir, so later starts need neither flag. Then the node runs as 'meshd
    run' does, until SIGTERM or SIGINT.
    """
    if not options.get("bootstrap"):
        _fail("meshd join needs a --bootstrap peer to fetch the genesis from", EXIT_CONFIG)
    sys.exit(serve(_load_config(options, role="node", listen=listen)))


@cli.command()
@_node_options
@click.option("--port", type=click.IntRange(1, 65535),
              help="Port to listen on (all interfaces), for libp2p over TCP and over "
                   "WebSocket (ws://HOST:PORT). Default: the genesis' bootstrap_port.")
@click.option("--listen", multiple=True, metavar="MULTIADDR",
              help="Listen here instead (repeatable), e.g. one interface: "
                   "/ip4/192.168.1.5/tcp/8080 and /ip4/192.168.1.5/tcp/8080/ws.")
def bootstrap(port: int | None, listen: tuple[str, ...], **options: Any) -> None:
    """Run a bootstrap node: a well-known entry point that others join through.

    It listens on all interfaces on PORT, for TCP and WebSocket (or on the
    --listen addresses), and logs its full addresses; put them in the
    genesis' ``bootstrap`` list or give them to joiners as --bootstrap (or
    tcp://HOST:PORT, ws://HOST:PORT).
    """
    if listen and port is not None:
        _fail("give --port or --listen, not both (--listen names the port itself)",
              EXIT_CONFIG)
    config = _load_config(options, role="bootstrap", listen=listen)
    if listen:
        sys.exit(serve(config))
    if port is None:
        port = _genesis_port(config)
    listen = (f"/ip4/0.0.0.0/tcp/{port}", f"/ip4/0.0.0.0/tcp/{port}/ws")
    sys.exit(serve(dataclasses.replace(config, p2p=dataclasses.replace(config.p2p,
                                                                      listen=listen))))


@cli.command()
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Data directory. Default: /var/lib/mesh for root, else "
                   "~/.local/share/mesh.")
def identity(data_dir: Path | None) -> None:
    """Print this node's peer ID, creating its identity key if there is none.

    A founder needs the peer IDs of the first nodes before writing the genesis
    (token allocations, validators): run this on each, then 'meshctl network
    init --allocate PEER_ID:AMOUNT --validator PEER_ID ...'.
    """
    from meshd.identity import IdentityError, load_or_create_identity
    from meshd.p2p.host import peer_id_of

    try:
        directory = datadir.prepare(data_dir or default_data_dir())
        click.echo(peer_id_of(load_or_create_identity(directory)))
    except (DataDirError, IdentityError, OSError) as exc:
        _fail(str(exc), EXIT_FAILURE)


@cli.command()
def version() -> None:
    """Print the version."""
    click.echo(f"meshd {__version__}")


def _genesis_port(config: Config) -> int:
    """The genesis' bootstrap port: from --genesis, or the data dir's copy."""
    path = config.node.genesis or config.node.data_dir / GENESIS_FILE
    try:
        return genesis_doc.load(path).bootstrap_port
    except genesis_doc.GenesisError:
        # Missing or invalid: the node refuses to start below, naming the problem.
        return DEFAULT_P2P_PORT


def _load_config(options: dict[str, Any], role: str, listen: tuple[str, ...]) -> Config:
    overrides = {
        "node.genesis": options.get("genesis"),
        "node.data_dir": options.get("data_dir"),
        "node.role": role,
        "node.network_id": options.get("network_id"),
        "p2p.listen": listen,
        "p2p.bootstrap": options.get("bootstrap"),
        "p2p.announce": options.get("announce"),
        "api.socket": options.get("socket"),
        "metrics.listen": options.get("metrics_addr"),
        "http.listen": options.get("http_listen"),
        "log.level": options.get("log_level"),
        "log.format": options.get("log_format"),
    }
    try:
        return Config.load(options.get("config_file"), os.environ, overrides)
    except ConfigError as exc:
        _fail(f"invalid configuration: {exc}", EXIT_CONFIG)


def serve(config: Config) -> int:
    """Run the daemon in this process until a signal; return the exit code."""
    # The API socket, identity and token files are the owner's alone, from birth.
    os.umask(0o077)
    # Imported here: libp2p takes ~0.6 s to import, and --help should be instant.
    from meshd import logs

    logs.configure(config.log.level, config.log.format)
    try:
        refusal = trio.run(functools.partial(_serve, config))
    except Exception:
        log.exception("meshd failed")
        return EXIT_CRASH
    if refusal is not None:  # one line on stderr (journald keeps it too), no traceback
        message, code = refusal
        print(f"meshd: {message}", file=sys.stderr)
        return code
    log.info("meshd stopped")
    return 0


async def _serve(config: Config) -> tuple[str, int] | None:
    """Run until a signal; return why the node could not start, and the exit
    status that says so, if it could not. A signal also stops a node that is
    still starting (e.g. waiting for a genesis to fetch)."""

    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:

            async def stop_on_signal() -> None:
                async for signum in signals:
                    log.info("shutting down", extra={"signal": signal.Signals(signum).name})
                    sdnotify.notify("STOPPING=1")
                    trio.lowlevel.spawn_system_task(stopwatch.report_slow_stop)
                    nursery.cancel_scope.cancel()
                    return

            nursery.start_soon(stop_on_signal)
            refusal = await _start(nursery, config)
            if refusal is not None:
                nursery.cancel_scope.cancel()
                return refusal
            sdnotify.notify("READY=1")
            interval = sdnotify.watchdog_interval()
            if interval is not None:  # WatchdogSec= in the unit: prove trio runs
                nursery.start_soon(sdnotify.feed_watchdog, interval)
    return None


async def _start(nursery: trio.Nursery, config: Config) -> tuple[str, int] | None:
    """Start the daemon in ``nursery``; why it could not start, if it could not."""
    from meshd import daemon

    try:
        await nursery.start(daemon.run_daemon, config)
    except ConfigError as exc:  # found once the node knows itself (its own address)
        return f"invalid configuration: {exc}", EXIT_CONFIG
    except daemon.STARTUP_ERRORS as exc:  # a reason the operator can fix
        return str(exc), EXIT_FAILURE
    except BaseExceptionGroup as group:  # raised from inside the daemon's nurseries
        refusals = group.subgroup(lambda e: isinstance(e, daemon.STARTUP_ERRORS))
        if refusals is None:
            raise
        return "; ".join(str(e) for e in _leaves(refusals)), EXIT_FAILURE
    return None


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    found: list[BaseException] = []
    for exc in group.exceptions:
        found += _leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc]
    return found


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"meshd: {message}", err=True)
    sys.exit(code)


def main() -> None:
    cli()
