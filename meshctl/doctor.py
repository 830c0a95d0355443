"""meshctl doctor: is this node, and its network, working? One line per check, with what to do.

Each check is a pure function of what the API (and, for a local socket, the
file system) answered, so that its verdicts are tested on their own
(tests/unit/test_doctor.py); :func:`doctor` gathers the answers and prints.
Exit status: 0 every check passed (or was skipped), 1 a warning, 2 a failure.
"""

from __future__ import annotations

import datetime as dt
import os
import stat
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click

from mesh.ledger.v1 import ledger_pb2, ledger_pb2_grpc
from mesh.network.v1 import network_pb2, network_pb2_grpc
from mesh.node.v1 import node_pb2, node_pb2_grpc
from mesh.peers.v1 import peers_pb2, peers_pb2_grpc
from mesh.plugins.v1 import plugins_pb2, plugins_pb2_grpc
from meshcore import genesis as genesis_doc
from meshcore.genesis import Genesis
from meshcore.version import __version__
from meshctl.client import ClientError, MeshClient
from meshctl.context import Session, json_option
from meshctl.node import status_to_dict
from meshctl.output import emit

PASS, WARN, FAIL, SKIP = "pass", "warn", "fail", "skip"
_RANK = {PASS: 0, SKIP: 0, WARN: 1, FAIL: 2}

SETTLE_LAG_WARN = 2  # epochs behind the clock before a warning
SETTLE_LAG_FAIL = 3  # ... and before a failure (writes are refused past 3, docs/ledger.md §11)
QUORUM = 2 / 3  # of validator weight, for a settlement
CLOCK_WARN = 2.0  # seconds of skew against the peers' median
CLOCK_FAIL = 10.0
DISK_WARN = 1 << 30
DISK_FAIL = 100 << 20
UNSPECIFIED = ("/ip4/0.0.0.0/", "/ip6/::/")
LOOPBACK = ("/ip4/127.", "/ip6/::1/")


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    detail: str
    hint: str = ""


@dataclass
class Facts:
    """What doctor learnt from the node (None: not available)."""

    status: dict[str, Any] | None = None
    status_error: str = ""
    genesis: Genesis | None = None
    routing_table_size: int = 0
    peers: list[str] | None = None
    peer_addrs: list[str] | None = None  # where the connections come from
    clock_offsets_ms: list[int] | None = None  # peers' clocks minus ours, from the handshakes
    validators: list[tuple[str, int]] | None = None  # V(final + 1), from the ledger
    final_epoch: int | None = None
    plugins: list[dict[str, Any]] | None = None
    socket: Path | None = None  # the local API socket, when reached through one


# --- the checks ---------------------------------------------------------------------------------

def check_daemon(facts: Facts, client_version: str = __version__) -> Check:
    if facts.status is None:
        return Check("daemon", FAIL, f"meshd does not answer: {facts.status_error}",
                     "start it (meshd run, or systemctl start meshd), or point meshctl at "
                     "it with --socket / MESH_SOCKET")
    version = facts.status["version"]
    if version != client_version:
        return Check("daemon", WARN, f"meshd {version} answers; this meshctl is "
                                     f"{client_version}",
                     "install the same version of both (pip install -c constraints.txt .)")
    return Check("daemon", PASS, f"meshd {version} answers, state {facts.status['state']}")


def check_files(facts: Facts) -> Check:
    if facts.socket is None:
        return Check("files", SKIP, "reached over TCP: the data dir is not on this machine")
    if not facts.socket.exists():
        return Check("files", SKIP, f"no API socket at {facts.socket}")
    try:
        socket_mode = stat.S_IMODE(facts.socket.stat().st_mode)
        dir_mode = stat.S_IMODE(facts.socket.parent.stat().st_mode)
    except OSError as exc:
        return Check("files", FAIL, f"cannot read {facts.socket}: {exc.strerror}")
    if socket_mode & 0o077:
        return Check("files", FAIL, f"the API socket {facts.socket} is mode "
                                    f"{socket_mode:04o}: other users can control the node",
                     f"chmod 600 {facts.socket} (meshd creates it 0600; restart it)")
    if dir_mode & 0o077:
        return Check("files", WARN, f"{facts.socket.parent} is mode {dir_mode:04o}",
                     f"chmod 700 {facts.socket.parent}: it holds the node's identity key")
    return Check("files", PASS, f"socket 0600, {facts.socket.parent} {dir_mode:04o}")


def check_addresses(facts: Facts) -> Check:
    assert facts.status is not None
    addrs: list[str] = facts.status["listen_addrs"]
    if not addrs:
        return Check("addresses", FAIL, "the node advertises no address",
                     "set p2p.listen (docs/configuration.md)")
    if any(a.startswith(UNSPECIFIED) for a in addrs):
        return Check("addresses", FAIL, f"an unspecified address is advertised: {addrs[0]}",
                     "set p2p.announce to the address peers should dial")
    if all(a.startswith(LOOPBACK) for a in addrs):
        if facts.peer_addrs and all(a.startswith(LOOPBACK) for a in facts.peer_addrs):
            return Check("addresses", PASS, f"loopback only, as every peer: a network on "
                                            f"this machine ({addrs[0]})")
        return Check("addresses", WARN, f"only loopback: {addrs[0]}",
                     "peers on other machines cannot dial it: listen on /ip4/0.0.0.0/tcp/4001 "
                     "or announce a reachable address (--announce)")
    reach = facts.status.get("reachability", "unknown")
    return Check("addresses", PASS, f"{addrs[0]} (+{len(addrs) - 1} more); reachability {reach}")


def check_peers(facts: Facts) -> Check:
    assert facts.status is not None
    count = facts.status["peer_count"]
    low = facts.status.get("low_watermark", 0)
    target = facts.status.get("target_peers", 0)
    degree = f"watermarks {low} / {target} / {facts.status.get('high_watermark', 0)}"
    if count == 0:
        return Check("peers", FAIL, f"no peer ({degree})",
                     "check --bootstrap / the genesis' bootstrap list, and that this machine "
                     "reaches them (meshctl peers connect ADDRESS says why not)")
    # Fewer than the low watermark is all a small network has: a concern only
    # when the node knows more peers (its DHT routing table) than it holds.
    if count < low and facts.routing_table_size > count:
        return Check("peers", WARN, f"{count} peers, below the low watermark ({degree}), "
                                    f"with {facts.routing_table_size} known",
                     "the connection manager is dialling; if it stays so, see 'dial "
                     "failed' in the log (firewall, NAT)")
    if count == 1:
        return Check("peers", WARN, f"1 peer: the node depends on it alone ({degree})",
                     "give it more bootstrap peers, or wait for peer exchange")
    return Check("peers", PASS, f"{count} peers ({degree})")


def check_dht(facts: Facts) -> Check:
    assert facts.status is not None
    if facts.routing_table_size > 0:
        return Check("dht", PASS, f"{facts.routing_table_size} peers in the routing table")
    if facts.status["peer_count"] == 0:
        return Check("dht", WARN, "routing table empty (no peer)")
    return Check("dht", WARN, "routing table empty although peers are connected",
                 "wait a few seconds after joining; if it stays empty, see the log for DHT errors")


def check_bootstrap(facts: Facts) -> Check:
    if facts.genesis is None or facts.peers is None:
        return Check("bootstrap", SKIP, "the genesis or the peers could not be read")
    wanted = {a.rsplit("/p2p/", 1)[-1] for a in facts.genesis.bootstrap if "/p2p/" in a}
    if not wanted:
        return Check("bootstrap", PASS, "the genesis names no bootstrap node (joined by "
                                        "--bootstrap or by its peer book)")
    own = facts.status["peer_id"] if facts.status else ""
    met = wanted & (set(facts.peers) | {own})
    if met:
        return Check("bootstrap", PASS, f"{len(met)} of {len(wanted)} genesis bootstrap "
                                        "nodes connected")
    return Check("bootstrap", WARN, f"none of the {len(wanted)} genesis bootstrap nodes is "
                                    "connected",
                 "fine once the node has other peers; otherwise check that they run and are "
                 "reachable from here (meshctl peers connect ADDRESS)")


def clock_epoch(genesis: Genesis, now: dt.datetime) -> int:
    return int((now - genesis.genesis_time).total_seconds() // genesis.rewards.epoch_seconds)


def check_clock(facts: Facts, now: dt.datetime) -> Check:
    if facts.genesis is None:
        return Check("clock", SKIP, "the genesis could not be read")
    if now < facts.genesis.genesis_time:
        return Check("clock", FAIL, f"this machine's clock ({now:%Y-%m-%d %H:%M:%S}Z) is "
                                    "before the genesis time",
                     "set the clock (NTP: timedatectl set-ntp true)")
    epoch = f"epoch {clock_epoch(facts.genesis, now)} by this machine's clock"
    offsets = facts.clock_offsets_ms or []
    if not offsets:
        return Check("clock", PASS, f"{epoch} (no peer to compare with)")
    # Median of the peers: this node's own skew, not one peer's.
    ordered = sorted(offsets)
    skew = ordered[len(ordered) // 2] / 1000
    detail = f"{epoch}; peers' clocks are {skew:+.1f} s from it (median of {len(offsets)})"
    hint = "synchronise the clock (NTP: timedatectl set-ntp true); epochs are counted on it"
    if abs(skew) >= CLOCK_FAIL:
        return Check("clock", FAIL, detail, hint)
    if abs(skew) >= CLOCK_WARN:
        return Check("clock", WARN, detail, hint)
    return Check("clock", PASS, detail)


def check_settlement(facts: Facts, now: dt.datetime) -> Check:
    if facts.genesis is None or facts.final_epoch is None:
        return Check("settlement", SKIP, "the genesis or the final epoch could not be read")
    if not facts.genesis.validators:
        return Check("settlement", FAIL, "the genesis has no validators: no epoch ever "
                                         "settles, nothing is minted",
                     "a network needs validators (meshctl network init --validator PEER_ID)")
    newest_due = clock_epoch(facts.genesis, now) - 1  # the one in progress cannot be final
    if newest_due < 0:
        return Check("settlement", PASS, "the first epoch has not ended yet")
    lag = newest_due - facts.final_epoch
    shown = "none" if facts.final_epoch < 0 else str(facts.final_epoch)
    if lag <= SETTLE_LAG_WARN - 1:
        return Check("settlement", PASS, f"final epoch {shown}, up to date")
    hint = ("are the validators running and connected? (see the validators check); "
            "a node that was down catches up by itself")
    if lag >= SETTLE_LAG_FAIL:
        return Check("settlement", FAIL, f"final epoch {shown}, {lag} epochs behind the "
                                         "clock: epochs stopped settling", hint)
    return Check("settlement", WARN, f"final epoch {shown}, {lag} epochs behind", hint)


def check_validators(facts: Facts) -> Check:
    if facts.peers is None or facts.status is None:
        return Check("validators", SKIP, "the peers could not be read")
    if facts.validators is not None:
        validators, source = facts.validators, "validators of the next epoch"
    elif facts.genesis is not None:
        validators = [(v.peer_id, v.weight) for v in facts.genesis.validators]
        source = "genesis validators"
    else:
        return Check("validators", SKIP, "neither the validator set nor the genesis was read")
    if not validators:
        return Check("validators", FAIL, f"no {source}: no epoch settles")
    reachable = set(facts.peers) | {facts.status["peer_id"]}
    total = sum(weight for _, weight in validators)
    online = sum(weight for peer, weight in validators if peer in reachable)
    share = online / total
    detail = (f"{sum(peer in reachable for peer, _ in validators)} of {len(validators)} "
              f"{source} reachable from here ({share:.0%} of the weight)")
    if share + 1e-9 >= QUORUM:
        return Check("validators", PASS, detail)
    return Check("validators", FAIL, detail,
                 "settlements need 2/3 of the weight: start the missing validators, or "
                 "connect to them (meshctl peers connect)")


def check_plugins(facts: Facts) -> Check:
    if facts.plugins is None:
        return Check("plugins", SKIP, "the plugins could not be listed")
    down = [p for p in facts.plugins if p["state"] != "running"]
    if not facts.plugins:
        return Check("plugins", PASS, "none required, none running")
    required_down = [p for p in down if p["required"]]
    names = ", ".join(f"{p['name']} ({p['state']}"
                      + (f": {p['last_error'][:80]}" if p["last_error"] else "") + ")"
                      for p in (required_down or down))
    if required_down:
        return Check("plugins", FAIL, f"required plugin not running: {names}",
                     "see meshctl plugins info NAME and the log")
    if down:
        return Check("plugins", WARN, f"not running: {names}", "see meshctl plugins info NAME")
    return Check("plugins", PASS, ", ".join(p["name"] for p in facts.plugins) + " running")


def check_disk(facts: Facts, statvfs: Callable[[str], os.statvfs_result] = os.statvfs) -> Check:
    if facts.socket is None:
        return Check("disk", SKIP, "reached over TCP: the data dir is not on this machine")
    try:
        info = statvfs(str(facts.socket.parent))
    except OSError as exc:
        return Check("disk", SKIP, f"cannot read {facts.socket.parent}: {exc.strerror}")
    free = info.f_bavail * info.f_frsize
    detail = f"{free / (1 << 30):.1f} GiB free for {facts.socket.parent}"
    if free < DISK_FAIL:
        return Check("disk", FAIL, detail, "free space: the ledger cannot grow (SQLite)")
    if free < DISK_WARN:
        return Check("disk", WARN, detail, "free space before the ledger fills the disk")
    return Check("disk", PASS, detail)


def run_checks(facts: Facts, now: dt.datetime) -> list[Check]:
    checks = [check_daemon(facts), check_files(facts)]
    if facts.status is None:
        return checks
    return [*checks, check_addresses(facts), check_peers(facts), check_dht(facts),
            check_bootstrap(facts), check_clock(facts, now), check_settlement(facts, now),
            check_validators(facts), check_plugins(facts), check_disk(facts)]


def worst(checks: Sequence[Check]) -> str:
    return max((c.status for c in checks), key=lambda s: _RANK[s], default=PASS)


# --- gathering and printing ---------------------------------------------------------------------

def gather(client: MeshClient) -> Facts:
    facts = Facts(socket=None if client.target.addr else client.target.socket)
    try:
        response = client.unary(node_pb2_grpc.NodeServiceStub(client.channel()).GetStatus,
                                node_pb2.GetStatusRequest())
    except ClientError as exc:
        facts.status_error = str(exc)
        return facts
    facts.status = status_to_dict(response.status)
    channel = client.channel()
    try:
        network = client.unary(network_pb2_grpc.NetworkServiceStub(channel).GetNetwork,
                               network_pb2.GetNetworkRequest())
        facts.genesis = genesis_doc.loads(network.genesis_toml)
        facts.routing_table_size = network.routing_table_size
    except (ClientError, genesis_doc.GenesisError):
        pass
    try:
        listed = client.unary(peers_pb2_grpc.PeersServiceStub(channel).ListPeers,
                              peers_pb2.ListPeersRequest())
        facts.peers = [p.peer_id for p in listed.peers]
        facts.peer_addrs = [a for p in listed.peers for a in p.addrs]
        facts.clock_offsets_ms = [p.clock_offset_ms for p in listed.peers
                                  if p.HasField("clock_offset_ms")]
    except ClientError:
        pass
    try:
        token = client.unary(ledger_pb2_grpc.LedgerServiceStub(channel).GetTokenInfo,
                             ledger_pb2.GetTokenInfoRequest())
        facts.final_epoch = token.final_epoch
    except ClientError:
        pass
    try:
        listed_validators = client.unary(
            ledger_pb2_grpc.LedgerServiceStub(channel).ListValidators,
            ledger_pb2.ListValidatorsRequest())
        facts.validators = [(v.account, int(v.weight)) for v in listed_validators.validators]
    except ClientError:
        pass
    try:
        plugins = client.unary(plugins_pb2_grpc.PluginsServiceStub(channel).ListPlugins,
                               plugins_pb2.ListPluginsRequest())
        facts.plugins = [{"name": p.name, "state": p.state, "required": p.required,
                          "last_error": p.last_error} for p in plugins.plugins]
    except ClientError:
        pass
    return facts


def _human(result: dict[str, Any]) -> str:
    lines = []
    for check in result["checks"]:
        lines.append(f"{check['status'].upper():<5} {check['name']:<11} {check['detail']}")
        if check["hint"] and check["status"] in (WARN, FAIL):
            lines.append(f"{'':<17}-> {check['hint']}")
    lines.append("")
    lines.append({PASS: "All checks passed.", WARN: "Warnings: see the lines above.",
                  FAIL: "Failed: see the lines above."}[result["status"]])
    return "\n".join(lines)


@click.command()
@json_option
@click.pass_context
def doctor(ctx: click.Context, as_json: bool) -> None:
    """Check the node and its network; one line each, with what to do.

    Checks: the daemon answers (and its version), the socket's and data dir's
    permissions, advertised addresses, peers, DHT routing table, genesis
    bootstrap nodes, the clock, that epochs settle, validators reachable,
    plugins running, disk space. Exit status: 0 all passed, 1 a warning,
    2 a failure.
    """
    session: Session = ctx.find_root().obj
    checks = run_checks(gather(session.client), dt.datetime.now(dt.UTC))
    overall = worst(checks)
    emit({"status": overall, "checks": [asdict(c) for c in checks]}, as_json, _human)
    raise click.exceptions.Exit(_RANK[overall])
