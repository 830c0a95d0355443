"""meshctl network: create a network (init), read a genesis (inspect), ask a node (info)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import click

from mesh.network.v1 import network_pb2, network_pb2_grpc
from meshcore import genesis as genesis_doc
from meshcore.genesis import (
    MUTABLE_PATHS,
    Allocation,
    Genesis,
    GenesisError,
    GovernanceParams,
    MarketPolicy,
    PenaltyPolicy,
    RewardPolicy,
    Token,
    Validator,
)
from meshcore.paths import default_data_dir
from meshctl.client import MeshClient
from meshctl.context import EXIT_INVALID, fail, json_option, with_client
from meshctl.local import LocalError, node_identity
from meshctl.output import emit, fields

GENESIS_FILE = "genesis.toml"


@click.group()
def network() -> None:
    """Create and inspect Mesh networks."""


@network.command()
@click.option("--name", required=True, help="Network name, e.g. StorageNet.")
@click.option("--token-name", required=True, help="Token name, e.g. STORE.")
@click.option("--token-symbol", required=True, help="Token symbol: 2-10 of A-Z0-9, e.g. STR.")
@click.option("--token-decimals", type=int, default=6, show_default=True,
              help="Decimal places of the token (0-18).")
@click.option("--token-distribution", default="uptime:40,tasks:40,governance:20",
              show_default=True, help="Split of each epoch's rewards, in percent (sum 100).")
@click.option("--plugin", "plugins", multiple=True, metavar="NAME[RANGE]",
              help="Plugin every node must run, e.g. storage or 'storage>=1.0' (repeatable).")
@click.option("--plugin-setting", "plugin_settings", multiple=True, metavar="NAME.KEY=VALUE",
              help="A network-wide setting of a --plugin, e.g. storage.k=4 (VALUE is JSON, "
                   "else text; repeatable). A node's own config overrides it.")
@click.option("--bootstrap-port", type=int, default=4001, show_default=True,
              help="Port 'meshd bootstrap' listens on.")
@click.option("--bootstrap", "bootstrap_addrs", multiple=True, metavar="MULTIADDR",
              help="Bootstrap address /ip4/.../tcp/PORT/p2p/ID (repeatable).")
@click.option("--validator", "validators", multiple=True, metavar="PEER_ID[:WEIGHT]",
              help="Initial validator (repeatable).")
@click.option("--allocate", "allocations", multiple=True, metavar="PEER_ID:AMOUNT",
              help="Initial token allocation in base units (repeatable).")
@click.option("--epoch-seconds", type=int, default=RewardPolicy().epoch_seconds,
              show_default=True, help="Length of a reward epoch.")
@click.option("--emission", type=int, default=RewardPolicy().emission_per_epoch,
              show_default=True, help="Tokens minted per epoch, in base units.")
@click.option("--community-pool", type=int, default=0, show_default=True,
              help="Base units no account holds, spent only by governance.")
@click.option("--proposal-stake", type=int, default=GovernanceParams().proposal_stake,
              show_default=True, help="Deposit a governance proposal locks, in base units.")
@click.option("--voting-period", type=int, default=GovernanceParams().voting_period_seconds,
              show_default=True, metavar="SECONDS",
              help="How long a proposal is open for votes (rounded up to whole epochs).")
@click.option("--quorum", type=int, default=GovernanceParams().quorum_percent,
              show_default=True, metavar="PERCENT",
              help="Share of the tokens that must vote for a tally to count.")
@click.option("--threshold", type=int, default=GovernanceParams().threshold_percent,
              show_default=True, metavar="PERCENT",
              help="Share of yes among yes/no/veto a proposal needs, strictly more.")
@click.option("--veto", type=int, default=GovernanceParams().veto_percent, show_default=True,
              metavar="PERCENT", help="Share of veto among all votes that vetoes a proposal.")
@click.option("--failed-task-slash", type=int, default=PenaltyPolicy().failed_task_bps,
              show_default=True, metavar="BPS",
              help="Basis points of its stake a provider loses for a failed task or a failed "
                   "storage audit (governance can change it: penalties.failed_task_bps).")
@click.option("--base-price", type=int, default=MarketPolicy().base_price, show_default=True,
              metavar="UNITS",
              help="Paid tasks' base price at genesis, base units per 1000 units of work "
                   "(per million fuel for compute), burned from each payment; 0: no base fee "
                   "(docs/ledger.md §12.4).")
@click.option("--min-base-price", type=int, default=MarketPolicy().min_base_price,
              show_default=True, metavar="UNITS", help="The base price never falls below this.")
@click.option("--target-units", type=int, default=MarketPolicy().target_units,
              show_default=True, metavar="UNITS",
              help="Paid units of work per epoch that hold the base price steady; more raise "
                   "it, fewer lower it.")
@click.option("--max-price-change", type=int, default=MarketPolicy().max_change_bps,
              show_default=True, metavar="BPS",
              help="The most the base price moves in one epoch, in basis points.")
@click.option("--spot-checks", type=int, default=MarketPolicy().spot_check_bps,
              show_default=True, metavar="BPS",
              help="Basis points of accepted results a verifying node runs again itself "
                   "(compute spot checks, docs/compute.md §5), and of counted receipts the "
                   "validators audit (docs/tasks.md §5d); governance can change it: "
                   "market.spot_check_bps.")
@click.option("--genesis-time", type=click.DateTime(["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S"]),
              help="Genesis time (UTC if no offset). Default: now.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
              show_default=True, help=f"Directory to write {GENESIS_FILE} into.")
@click.option("--force", is_flag=True, help=f"Overwrite an existing {GENESIS_FILE}.")
@click.option("--founder/--no-founder", default=True, show_default=True,
              help="Without --validator: make this machine's node (its identity in "
                   "--data-dir) the first validator and, without --allocate, give it "
                   "--founder-allocation tokens.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              help="The founder node's data directory (its identity key is created if "
                   "missing). Default: meshd's, /var/lib/mesh for root, else "
                   "~/.local/share/mesh.")
@click.option("--founder-allocation", type=click.IntRange(min=1), default=1_000_000,
              show_default=True, metavar="TOKENS",
              help="Whole tokens allocated to the founder's node (times 10^decimals).")
@click.option("--allow-no-validators", is_flag=True,
              help="Write a genesis without validators. It never settles: no rewards, "
                   "no stake, no governance; only the allocations are ever spendable.")
@json_option
def init(name: str, token_name: str, token_symbol: str, token_decimals: int,
         token_distribution: str, plugins: tuple[str, ...], plugin_settings: tuple[str, ...],
         bootstrap_port: int,
         bootstrap_addrs: tuple[str, ...], validators: tuple[str, ...],
         allocations: tuple[str, ...], epoch_seconds: int, emission: int,
         community_pool: int, proposal_stake: int, voting_period: int, quorum: int,
         threshold: int, veto: int, failed_task_slash: int, base_price: int,
         min_base_price: int, target_units: int, max_price_change: int, spot_checks: int,
         genesis_time: dt.datetime | None,
         out: Path, force: bool,
         founder: bool, data_dir: Path | None, founder_allocation: int,
         allow_no_validators: bool, as_json: bool) -> None:
    """Create a network: write its genesis and print its Network ID.

    Without --validator, this machine's node (meshd identity) becomes the first
    validator and holds --founder-allocation tokens, so that epochs settle and
    rewards are minted from the start; add the others' peer IDs with
    --validator and --allocate (each runs `meshd identity`).

    \b
    meshctl network init --name StorageNet --token-name STORE --token-symbol STR \\
        --token-distribution uptime:40,tasks:40,governance:20 --plugin storage \\
        --bootstrap-port 8080
    """
    founder_id = None
    if not validators and founder and not allow_no_validators:
        founder_id = _founder(data_dir or default_data_dir())
        validators = (founder_id,)
        if not allocations:
            allocations = (f"{founder_id}:{founder_allocation * 10 ** token_decimals}",)
    if not validators and not allow_no_validators:
        fail("a network without validators never settles an epoch: no rewards are minted, "
             "nothing can be staked, no proposal is ever decided. Name them with "
             "--validator PEER_ID (each node's `meshd identity`), or pass "
             "--allow-no-validators if that is what you want", EXIT_INVALID)
    moment = genesis_time or dt.datetime.now(dt.UTC)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    try:
        genesis = build_genesis(Genesis(
            name=name, genesis_time=moment,
            token=Token(token_name, token_symbol, token_decimals),
            rewards=RewardPolicy(epoch_seconds, emission,
                                 genesis_doc.parse_split(token_distribution)),
            governance=GovernanceParams(quorum, threshold, veto, voting_period, proposal_stake,
                                        mutable=MUTABLE_PATHS),
            penalties=PenaltyPolicy(failed_task_slash),
            market=MarketPolicy(base_price, min_base_price, target_units, max_price_change,
                                spot_checks),
            plugins=tuple(genesis_doc.parse_plugin(p) for p in plugins),
            validators=tuple(_validator(v) for v in validators),
            bootstrap=bootstrap_addrs, bootstrap_port=bootstrap_port),
            tuple(map(_allocation, allocations)), community_pool,
            _plugin_settings(plugin_settings))
    except GenesisError as exc:
        fail(f"invalid {_option_for(exc.field)}: {exc}", EXIT_INVALID)
    path = write_genesis(genesis, out, force)
    result = {"network_id": genesis.network_id, "name": genesis.name, "genesis": str(path),
              "founder": founder_id}
    emit(result, as_json, lambda r: fields([("Network ID", r["network_id"]),
                                            ("Genesis", r["genesis"])]
                                           + ([("Founder node", f"{r['founder']} (first "
                                                "validator; meshd identity)")]
                                              if r["founder"] else []))
         + f"\n\nStart a bootstrap node:  meshd bootstrap --genesis {path}"
         + f"\nJoin as a peer:          meshd run --genesis {path} --bootstrap <its address>")


@network.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@json_option
def inspect(file: Path, as_json: bool) -> None:
    """Validate a genesis file and show it with its Network ID."""
    try:
        genesis = genesis_doc.load(file)
    except GenesisError as exc:
        fail(f"{file} is not a valid genesis: {exc}", EXIT_INVALID)
    data = genesis_doc.to_dict(genesis)
    data["genesis_time"] = genesis_doc.format_time(genesis.genesis_time)
    emit({"network_id": genesis.network_id, "genesis": data}, as_json, _human_genesis)


@network.command()
@json_option
@with_client
def info(client: MeshClient, as_json: bool) -> None:
    """Show the network the node belongs to and how many peers it sees."""
    stub = network_pb2_grpc.NetworkServiceStub(client.channel())
    response = client.unary(stub.GetNetwork, network_pb2.GetNetworkRequest())
    genesis = genesis_doc.loads(response.genesis_toml)
    data = genesis_doc.to_dict(genesis)
    data["genesis_time"] = genesis_doc.format_time(genesis.genesis_time)
    emit({"network_id": response.network_id, "peer_count": response.peer_count,
          "routing_table_size": response.routing_table_size, "genesis": data},
         as_json, _human_genesis)


def _human_genesis(result: dict[str, Any]) -> str:
    g = result["genesis"]
    token, rewards, gov = g["token"], g["rewards"], g["governance"]
    slash_bps = g.get("penalties", {}).get("failed_task_bps", PenaltyPolicy().failed_task_bps)
    rows: list[tuple[str, Any]] = [
        ("Network ID", result["network_id"]),
        ("Name", g["name"]),
        ("Genesis time", g["genesis_time"]),
        ("Token", f"{token['name']} ({token['symbol']}, {token['decimals']} decimals)"),
        ("Allocations", [f"{a['account']}: {a['amount']}" for a in token["allocations"]]),
        ("Reward split", ", ".join(f"{k} {v}%" for k, v in rewards["split"].items())),
        ("Epoch", f"{rewards['epoch_seconds']} s, {rewards['emission_per_epoch']} minted"),
        ("Governance", f"quorum {gov['quorum_percent']}%, threshold "
                       f"{gov['threshold_percent']}%, veto {gov['veto_percent']}%, voting "
                       f"period {gov['voting_period_seconds']} s"),
        ("Slashing", f"{slash_bps / 100:g}% of stake for a failed task or storage audit"),
        ("Paid tasks", _market_text(g.get("market", {}))),
        ("Plugins", [f"{p['name']}{p['version']}" + _settings_shown(p) for p in g["plugins"]]),
        ("Validators", [f"{v['peer_id']} (weight {v['weight']})" for v in g["validators"]]),
        ("Bootstrap", [*g["bootstrap"], f"(bootstrap port {g['bootstrap_port']})"]),
    ]
    if "peer_count" in result:
        rows.append(("Connected peers", result["peer_count"]))
        rows.append(("DHT routing table", f"{result['routing_table_size']} peers"))
    return fields(rows)


def _market_text(table: dict[str, Any]) -> str:
    market = MarketPolicy(**table)
    checks = f"; spot checks of {market.spot_check_bps / 100:g}% of results"
    if not market.base_price and not market.min_base_price:
        return "no base fee" + checks
    return (f"base price {market.base_price} per 1000 units of work at genesis (at least "
            f"{market.min_base_price}), moving up to {market.max_change_bps / 100:g}% an "
            f"epoch toward {market.target_units} paid units per epoch" + checks)


def _founder(data_dir: Path) -> str:
    """The peer ID of this machine's node, whose data dir is ``data_dir``."""
    try:
        return node_identity(data_dir)
    except LocalError as exc:
        fail(f"cannot read this machine's node identity to make it the first validator "
             f"({exc}). Pass --data-dir, or --validator PEER_ID, or --no-founder "
             "--allow-no-validators", EXIT_INVALID)


def build_genesis(draft: Genesis, allocations: tuple[Allocation, ...] = (),
                  community_pool: int = 0,
                  plugin_settings: dict[str, dict[str, Any]] | None = None) -> Genesis:
    """``draft`` with its allocations, community pool and plugins' settings, every
    field validated.

    Raises:
        GenesisError: a field is invalid (``exc.field`` names it).
    """
    data: dict[str, Any] = genesis_doc.to_dict(draft)
    data["token"]["allocations"] = [{"account": a.account, "amount": a.amount}
                                    for a in allocations]
    if community_pool:
        data["token"]["community_pool"] = community_pool
    settings = dict(plugin_settings or {})
    for plugin in data["plugins"]:
        if plugin["name"] in settings:
            plugin["settings"] = settings.pop(plugin["name"])
    if settings:
        raise GenesisError("plugins.settings", f"{', '.join(sorted(settings))} is not a "
                           "required plugin: add it with --plugin")
    return genesis_doc.from_dict(data)


def _settings_shown(plugin: dict[str, Any]) -> str:
    settings = plugin.get("settings")
    return f" {json.dumps(settings, sort_keys=True)}" if settings else ""


def _plugin_settings(texts: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """``NAME.KEY=VALUE`` options as NAME -> {KEY: VALUE}; VALUE is JSON, else text."""
    settings: dict[str, dict[str, Any]] = {}
    for text in texts:
        target, equals, raw = text.partition("=")
        name, dot, key = target.partition(".")
        if not equals or not dot or not name or not key:
            raise GenesisError("plugins.settings", f"{text!r} is not NAME.KEY=VALUE "
                               "(e.g. storage.k=4)")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        settings.setdefault(name, {})[key] = value
    return settings


def write_genesis(genesis: Genesis, out: Path, force: bool) -> Path:
    """Write ``genesis`` as ``out``/genesis.toml (not over an existing one unless
    ``force``); its path. Exits with a message when it cannot."""
    path = out / GENESIS_FILE
    if path.exists() and not force:
        fail(f"{path} exists; pass --force to overwrite it or --out for another directory",
             EXIT_INVALID)
    try:
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(genesis_doc.dumps(genesis), encoding="utf-8")
    except OSError as exc:
        fail(f"cannot write {path}: {exc.strerror}")
    return path


def _validator(text: str) -> Validator:
    peer_id, _, weight = text.partition(":")
    if weight and not weight.isdigit():
        raise GenesisError("validators", f"{text!r} is not PEER_ID[:WEIGHT]")
    return Validator(peer_id, int(weight) if weight else 1)


def _allocation(text: str) -> Allocation:
    account, _, amount = text.partition(":")
    if not amount.isdigit():
        raise GenesisError("token.allocations", f"{text!r} is not PEER_ID:AMOUNT")
    return Allocation(account, int(amount))


_OPTIONS = {"name": "--name", "token.name": "--token-name", "token.symbol": "--token-symbol",
            "token.decimals": "--token-decimals", "rewards.split": "--token-distribution",
            "plugins": "--plugin", "bootstrap_port": "--bootstrap-port",
            "bootstrap": "--bootstrap", "validators": "--validator",
            "token.allocations": "--allocate", "rewards.epoch_seconds": "--epoch-seconds",
            "rewards.emission_per_epoch": "--emission", "token.community_pool": "--community-pool",
            "governance.proposal_stake": "--proposal-stake",
            "governance.voting_period_seconds": "--voting-period",
            "governance.quorum_percent": "--quorum", "governance.threshold_percent": "--threshold",
            "governance.veto_percent": "--veto", "penalties.failed_task_bps": "--failed-task-slash",
            "market.base_price": "--base-price", "market.min_base_price": "--min-base-price",
            "market.target_units": "--target-units",
            "market.max_change_bps": "--max-price-change",
            "market.spot_check_bps": "--spot-checks"}


def _option_for(field: str) -> str:
    """The init option that sets a genesis field (for error messages)."""
    if field.startswith("plugins") and ".settings" in field:
        return "--plugin-setting"
    base = field.split("[")[0]
    return _OPTIONS.get(base, _OPTIONS.get(base.rsplit(".", 1)[0], field))
