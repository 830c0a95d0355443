"""The genesis document of a Mesh network and the Network ID derived from it.

A genesis is written once by ``meshctl network init`` (TOML) and fixes what a
network is: its name, token, reward policy, governance parameters, required
plugins, initial validators and bootstrap addresses. Validation normalises it
(defaults filled in, sets sorted, text NFC-normalised), so that two documents
with the same meaning have the same canonical encoding and so the same
Network ID, and any change of meaning gives another one. docs/genesis.md
specifies the format and the encoding.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import json
import re
import tomllib
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w
from packaging.specifiers import InvalidSpecifier, SpecifierSet

from meshcore.errors import FieldError

FORMAT = 1
NETWORK_ID_PREFIX = "net_"
# Domain separation: a genesis digest can never collide with another Mesh hash.
_DIGEST_CONTEXT = b"mesh/genesis/v1\x00"
# 16 bytes of SHA-256: 128 bits keep accidental and forged collisions out of reach.
_ID_DIGEST_BYTES = 16

SPLIT_KEYS = ("uptime", "tasks", "governance")
MAX_AMOUNT = 2**63 - 1  # TOML integers are signed 64-bit.
MUTABLE_PATHS = (  # the parameters a genesis may let governance change
    "governance.proposal_stake",
    "governance.quorum_percent",
    "governance.threshold_percent",
    "governance.veto_percent",
    "governance.voting_period_seconds",
    "market.max_change_bps",
    "market.min_base_price",
    "market.spot_check_bps",
    "market.target_units",
    "penalties.failed_task_bps",
    "rewards.emission_per_epoch",
    "rewards.epoch_seconds",
    "rewards.split",
)
# What ``governance.mutable`` means when a document leaves it out: the list as
# it was when networks were first named by such documents. A path added later
# is left out of it, so that those documents keep their ID; `meshctl network
# init` writes MUTABLE_PATHS out in full.
DEFAULT_MUTABLE = tuple(p for p in MUTABLE_PATHS
                        if p != "penalties.failed_task_bps" and not p.startswith("market."))

_SYMBOL = re.compile(r"[A-Z][A-Z0-9]{1,9}")
_PLUGIN_NAME = re.compile(r"[a-z][a-z0-9_-]{0,63}")
_BASE58 = re.compile(r"[1-9A-HJ-NP-Za-km-z]{40,128}")
_MULTIADDR = re.compile(r"(/[A-Za-z0-9_.:-]+)+/p2p/[1-9A-HJ-NP-Za-km-z]{40,128}")


class GenesisError(FieldError):
    """A genesis document (or an init option) is invalid; ``field`` names the field."""


@dataclass(frozen=True)
class Allocation:
    account: str
    amount: int


@dataclass(frozen=True)
class Token:
    name: str
    symbol: str
    decimals: int = 6
    allocations: tuple[Allocation, ...] = ()
    # Base units no account holds, spent only by governance (docs/governance.md §5).
    community_pool: int = 0


@dataclass(frozen=True)
class RewardSplit:
    """Percent of each epoch's emission per contribution category (sums to 100)."""

    uptime: int = 40
    tasks: int = 40
    governance: int = 20


@dataclass(frozen=True)
class RewardPolicy:
    epoch_seconds: int = 3600
    emission_per_epoch: int = 1_000_000_000
    split: RewardSplit = field(default_factory=RewardSplit)


@dataclass(frozen=True)
class GovernanceParams:
    quorum_percent: int = 33
    threshold_percent: int = 50
    veto_percent: int = 33
    voting_period_seconds: int = 7 * 24 * 3600
    proposal_stake: int = 100_000_000
    mutable: tuple[str, ...] = DEFAULT_MUTABLE


@dataclass(frozen=True)
class PenaltyPolicy:
    """What offences cost (docs/ledger.md §7.2), in basis points of the stake at risk."""

    # A failed task: a result two eligible nodes found wrong, or a storage
    # holder that failed the audit of a piece it had promised to keep.
    failed_task_bps: int = 1000


@dataclass(frozen=True)
class MarketPolicy:
    """The base price of paid tasks (docs/ledger.md §12.4, EIP-1559).

    Prices are base units per 1000 units of work (a compute plugin's units
    are thousands of fuel, so per million fuel). The base fee is burned; a
    ``base_price`` of 0 at genesis turns it off for good unless
    ``min_base_price`` is above 0."""

    base_price: int = 0  # at genesis
    min_base_price: int = 0
    target_units: int = 1_000_000  # paid units per epoch that keep the price where it is
    max_change_bps: int = 1250  # the most it moves in one epoch: 12.5 %
    # The share of accepted results a verifying node runs again itself (plugins
    # that spot-check, such as compute, read it: docs/compute.md §5).
    spot_check_bps: int = 1000


@dataclass(frozen=True)
class RequiredPlugin:
    name: str
    version: str = ""
    # The plugin's network-wide settings ([plugins.settings] under its entry),
    # as canonical JSON ("" for none): a node's own [plugins.settings.NAME]
    # overrides them key by key (docs/plugins.md, "Configuration").
    settings_json: str = ""

    @property
    def settings(self) -> dict[str, Any]:
        return dict(json.loads(self.settings_json)) if self.settings_json else {}


@dataclass(frozen=True)
class Validator:
    peer_id: str
    weight: int = 1


@dataclass(frozen=True)
class Genesis:
    """A validated, normalised genesis document."""

    name: str
    genesis_time: dt.datetime
    token: Token
    rewards: RewardPolicy = field(default_factory=RewardPolicy)
    governance: GovernanceParams = field(default_factory=GovernanceParams)
    penalties: PenaltyPolicy = field(default_factory=PenaltyPolicy)
    market: MarketPolicy = field(default_factory=MarketPolicy)
    plugins: tuple[RequiredPlugin, ...] = ()
    validators: tuple[Validator, ...] = ()
    bootstrap: tuple[str, ...] = ()
    bootstrap_port: int = 4001
    format: int = FORMAT

    @property
    def network_id(self) -> str:
        return network_id(self)


# --- reading -----------------------------------------------------------------


class _Reader:
    """Pops typed values out of one table, naming fields in every error."""

    def __init__(self, data: Any, path: str) -> None:
        if not isinstance(data, Mapping):
            raise GenesisError(path or "genesis", f"must be a table, not {_kind(data)}")
        self._data = dict(data)
        self._path = path

    def name(self, key: str) -> str:
        return f"{self._path}.{key}" if self._path else key

    def has(self, key: str) -> bool:
        return key in self._data

    def raw(self, key: str, default: Any) -> Any:
        return self._data.pop(key, default)

    def integer(self, key: str, default: int | None, low: int, high: int) -> int:
        value = self.raw(key, default)
        if value is None:
            raise GenesisError(self.name(key), "is required")
        if isinstance(value, bool) or not isinstance(value, int):
            raise GenesisError(self.name(key), f"must be an integer, not {_kind(value)}")
        if not low <= value <= high:
            raise GenesisError(self.name(key), f"must be between {low} and {high}, got {value}")
        return value

    def text(self, key: str, default: str | None = None) -> str:
        value = self.raw(key, default)
        if value is None:
            raise GenesisError(self.name(key), "is required")
        if not isinstance(value, str):
            raise GenesisError(self.name(key), f"must be a string, not {_kind(value)}")
        return unicodedata.normalize("NFC", value)

    def table(self, key: str) -> _Reader:
        return _Reader(self.raw(key, {}), self.name(key))

    def tables(self, key: str) -> list[_Reader]:
        value = self.raw(key, [])
        if not isinstance(value, list):
            raise GenesisError(self.name(key), f"must be an array of tables, not {_kind(value)}")
        return [_Reader(item, f"{self.name(key)}[{i}]") for i, item in enumerate(value)]

    def strings(self, key: str, default: Iterable[str] = ()) -> list[str]:
        value = self.raw(key, list(default))
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise GenesisError(self.name(key), "must be an array of strings")
        return [unicodedata.normalize("NFC", v) for v in value]

    def remaining(self) -> list[str]:
        return sorted(self._data)

    def done(self) -> None:
        if self._data:
            unknown = [self.name(k) for k in self.remaining()]
            raise GenesisError(unknown[0], f"unknown key (all unknown: {', '.join(unknown)})")


def _kind(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a float", str: "a string",
            list: "an array", dict: "a table"}.get(type(value), type(value).__name__)


def _display_name(value: str, path: str, limit: int) -> str:
    if not value.strip():
        raise GenesisError(path, "must not be empty")
    if value != value.strip():
        raise GenesisError(path, "must not start or end with whitespace")
    if len(value) > limit:
        raise GenesisError(path, f"must be at most {limit} characters, got {len(value)}")
    if any(unicodedata.category(c).startswith("C") for c in value):
        raise GenesisError(path, "must not contain control characters")
    return value


def _peer_id(value: str, path: str) -> str:
    if not _BASE58.fullmatch(value):
        raise GenesisError(path, f"{value!r} is not a peer ID (base58, like 12D3KooW...)")
    return value


def _timestamp(value: Any, path: str) -> dt.datetime:
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            raise GenesisError(path, f"{value!r} is not an RFC 3339 date-time") from None
    if not isinstance(value, dt.datetime):
        raise GenesisError(path, f"must be a date-time, not {_kind(value)}")
    if value.tzinfo is None:
        raise GenesisError(path, "must include a UTC offset, e.g. 2026-01-01T00:00:00Z")
    # Whole seconds in UTC: the canonical encoding has one spelling per instant.
    return value.astimezone(dt.UTC).replace(microsecond=0)


def parse_split(text: str) -> RewardSplit:
    """Parse a distribution such as ``uptime:40,tasks:40,governance:20``."""
    values: dict[str, int] = {}
    for part in text.split(","):
        key, sep, number = (s.strip() for s in part.partition(":"))
        if not sep or not number.isdigit():
            raise GenesisError("rewards.split", f"{part.strip()!r} is not KEY:PERCENT "
                               "(e.g. uptime:40,tasks:40,governance:20)")
        if key in values:
            raise GenesisError("rewards.split", f"{key!r} is given twice")
        values[key] = int(number)
    return _split({**{k: 0 for k in SPLIT_KEYS if k not in values}, **values}, "rewards.split")


def _split(values: Mapping[str, Any], path: str) -> RewardSplit:
    reader = _Reader(values, path)
    split = RewardSplit(**{k: reader.integer(k, 0, 0, 100) for k in SPLIT_KEYS})
    if reader.remaining():
        unknown = ", ".join(repr(k) for k in reader.remaining())
        raise GenesisError(path, f"unknown category {unknown}; the categories are "
                           f"{', '.join(SPLIT_KEYS)}")
    total = split.uptime + split.tasks + split.governance
    if total != 100:
        raise GenesisError(path, f"percentages must sum to 100, they sum to {total}")
    return split



def from_dict(data: Mapping[str, Any]) -> Genesis:
    """Validate and normalise a parsed genesis document.

    Raises:
        GenesisError: naming the first invalid field.
    """
    top = _Reader(data, "")
    fmt = top.integer("format", FORMAT, FORMAT, FORMAT)
    name = _display_name(top.text("name"), "name", 64)
    if not top.has("genesis_time"):
        raise GenesisError("genesis_time", "is required")
    genesis_time = _timestamp(top.raw("genesis_time", None), "genesis_time")
    token = _token(top.table("token"))
    rewards = _rewards(top.table("rewards"))
    governance = _governance(top.table("governance"))
    penalties = _penalties(top.table("penalties"))
    market = _market(top.table("market"))
    plugins = _plugins(top.tables("plugins"))
    validators = _validators(top.tables("validators"))
    bootstrap = _bootstrap(top.strings("bootstrap"))
    bootstrap_port = top.integer("bootstrap_port", 4001, 1, 65535)
    top.done()
    return Genesis(name=name, genesis_time=genesis_time, token=token, rewards=rewards,
                   governance=governance, penalties=penalties, market=market,
                   plugins=plugins,
                   validators=validators,
                   bootstrap=bootstrap, bootstrap_port=bootstrap_port, format=fmt)


def _token(reader: _Reader) -> Token:
    name = _display_name(reader.text("name"), reader.name("name"), 32)
    symbol = reader.text("symbol")
    if not _SYMBOL.fullmatch(symbol):
        raise GenesisError(reader.name("symbol"), f"{symbol!r} is not a token symbol: use 2-10 "
                           "uppercase letters or digits, starting with a letter (e.g. STR)")
    decimals = reader.integer("decimals", 6, 0, 18)
    allocations: dict[str, Allocation] = {}
    for item in reader.tables("allocations"):
        account = _peer_id(item.text("account"), item.name("account"))
        amount = item.integer("amount", None, 1, MAX_AMOUNT)
        item.done()
        if account in allocations:
            raise GenesisError(item.name("account"), f"{account} is allocated twice")
        allocations[account] = Allocation(account, amount)
    pool = reader.integer("community_pool", 0, 0, MAX_AMOUNT)
    if sum(a.amount for a in allocations.values()) + pool > MAX_AMOUNT:
        raise GenesisError(reader.name("allocations"), f"total with the community pool exceeds "
                           f"{MAX_AMOUNT} base units")
    reader.done()
    return Token(name, symbol, decimals, tuple(sorted(allocations.values(),
                                                      key=lambda a: a.account)), pool)


def _rewards(reader: _Reader) -> RewardPolicy:
    defaults = RewardPolicy()
    epoch = reader.integer("epoch_seconds", defaults.epoch_seconds, 1, 366 * 24 * 3600)
    emission = reader.integer("emission_per_epoch", defaults.emission_per_epoch, 0, MAX_AMOUNT)
    raw_split = reader.raw("split", None)
    split = defaults.split if raw_split is None else _split(raw_split, reader.name("split"))
    reader.done()
    return RewardPolicy(epoch, emission, split)


def _penalties(reader: _Reader) -> PenaltyPolicy:
    defaults = PenaltyPolicy()
    policy = PenaltyPolicy(
        failed_task_bps=reader.integer("failed_task_bps", defaults.failed_task_bps, 0, 10_000))
    reader.done()
    return policy


def penalties_table(policy: PenaltyPolicy) -> dict[str, Any]:
    """The ``penalties`` table, empty when every value is the default: the
    encodings of networks made before the table existed stay as they were."""
    return {} if policy == PenaltyPolicy() else {"failed_task_bps": policy.failed_task_bps}


def _market(reader: _Reader) -> MarketPolicy:
    d = MarketPolicy()
    policy = MarketPolicy(
        base_price=reader.integer("base_price", d.base_price, 0, MAX_AMOUNT),
        min_base_price=reader.integer("min_base_price", d.min_base_price, 0, MAX_AMOUNT),
        target_units=reader.integer("target_units", d.target_units, 1, MAX_AMOUNT),
        max_change_bps=reader.integer("max_change_bps", d.max_change_bps, 1, 10_000),
        spot_check_bps=reader.integer("spot_check_bps", d.spot_check_bps, 0, 10_000))
    reader.done()
    return policy


def market_table(policy: MarketPolicy) -> dict[str, Any]:
    """The ``market`` table, empty when every value is the default, and without
    ``spot_check_bps`` at its default: the encodings of networks made before the
    table, or the field, existed stay as they were."""
    if policy == MarketPolicy():
        return {}
    table = dataclasses.asdict(policy)
    if policy.spot_check_bps == MarketPolicy.spot_check_bps:
        del table["spot_check_bps"]
    return table


def _governance(reader: _Reader) -> GovernanceParams:
    d = GovernanceParams()
    params = GovernanceParams(
        quorum_percent=reader.integer("quorum_percent", d.quorum_percent, 0, 100),
        threshold_percent=reader.integer("threshold_percent", d.threshold_percent, 1, 100),
        veto_percent=reader.integer("veto_percent", d.veto_percent, 1, 100),
        voting_period_seconds=reader.integer("voting_period_seconds", d.voting_period_seconds,
                                             1, 366 * 24 * 3600),
        proposal_stake=reader.integer("proposal_stake", d.proposal_stake, 0, MAX_AMOUNT),
        mutable=tuple(sorted(set(reader.strings("mutable", d.mutable)))),
    )
    for path in params.mutable:
        if path not in MUTABLE_PATHS:
            raise GenesisError(reader.name("mutable"), f"{path!r} cannot be made mutable; "
                               f"choose from {', '.join(MUTABLE_PATHS)}")
    reader.done()
    return params


def changed_params(rewards: RewardPolicy, governance: GovernanceParams,
                   penalties: PenaltyPolicy, market: MarketPolicy, changes: Mapping[str, Any]
                   ) -> tuple[RewardPolicy, GovernanceParams, PenaltyPolicy, MarketPolicy]:
    """The four tables with ``changes`` (path -> parsed JSON value) applied.

    Each value is read by the same rules as in a genesis document, so a
    governance change can never produce tables a genesis could not hold.

    Raises:
        GenesisError: a path is not in :data:`MUTABLE_PATHS` or a value breaks
            its rule (the error names the path).
    """
    tables: dict[str, dict[str, Any]] = {
        "rewards": {"epoch_seconds": rewards.epoch_seconds,
                    "emission_per_epoch": rewards.emission_per_epoch,
                    "split": {k: getattr(rewards.split, k) for k in SPLIT_KEYS}},
        "governance": {k: getattr(governance, k) for k in (
            "quorum_percent", "threshold_percent", "veto_percent", "voting_period_seconds",
            "proposal_stake")} | {"mutable": list(governance.mutable)},
        "penalties": {"failed_task_bps": penalties.failed_task_bps},
        "market": dataclasses.asdict(market),
    }
    for path, value in changes.items():
        if path not in MUTABLE_PATHS:
            raise GenesisError(path, f"is not a parameter governance can change; the "
                               f"parameters are {', '.join(MUTABLE_PATHS)}")
        section, key = path.split(".")
        tables[section][key] = value
    return (_rewards(_Reader(tables["rewards"], "rewards")),
            _governance(_Reader(tables["governance"], "governance")),
            _penalties(_Reader(tables["penalties"], "penalties")),
            _market(_Reader(tables["market"], "market")))


def _plugins(readers: list[_Reader]) -> tuple[RequiredPlugin, ...]:
    plugins: dict[str, RequiredPlugin] = {}
    for item in readers:
        name = item.text("name")
        if not _PLUGIN_NAME.fullmatch(name):
            raise GenesisError(item.name("name"), f"{name!r} is not a plugin name "
                               "(lowercase letters, digits, '-' and '_', starting with a letter)")
        version = _specifier(item.text("version", ""), item.name("version"))
        settings = _plugin_settings(item.raw("settings", {}), item.name("settings"))
        item.done()
        if name in plugins:
            raise GenesisError(item.name("name"), f"plugin {name!r} is listed twice")
        plugins[name] = RequiredPlugin(name, version, settings)
    return tuple(sorted(plugins.values(), key=lambda p: p.name))


MAX_PLUGIN_SETTINGS = 4096  # bytes of a plugin's settings as canonical JSON
_SETTING_KEY = re.compile(r"[a-z][a-z0-9_]{0,63}")


def _plugin_settings(value: Any, path: str) -> str:
    """A plugin's genesis settings as canonical JSON ("" when empty).

    Tables with lowercase keys of integers, strings, booleans, arrays and
    tables: no floats or times, whose spellings would not be canonical.
    """
    if not isinstance(value, Mapping):
        raise GenesisError(path, f"must be a table, not {_kind(value)}")

    def check(item: Any, where: str) -> None:
        if isinstance(item, Mapping):
            for key, inner in item.items():
                if not isinstance(key, str) or not _SETTING_KEY.fullmatch(key):
                    raise GenesisError(where, f"{key!r} is not a setting name (lowercase "
                                       "letters, digits and '_', starting with a letter)")
                check(inner, f"{where}.{key}")
        elif isinstance(item, list):
            for index, inner in enumerate(item):
                check(inner, f"{where}[{index}]")
        elif isinstance(item, bool | str):
            return
        elif isinstance(item, int):
            if not -2**63 <= item < 2**63:
                raise GenesisError(where, "is out of the 64-bit integer range")
        else:
            raise GenesisError(where, f"must be an integer, string, boolean, array or table, "
                               f"not {_kind(item)}")

    check(value, path)
    if not value:
        return ""

    def normalised(item: Any) -> Any:  # text is NFC, as everywhere in a genesis
        if isinstance(item, str):
            return unicodedata.normalize("NFC", item)
        if isinstance(item, list):
            return [normalised(i) for i in item]
        if isinstance(item, Mapping):
            return {k: normalised(v) for k, v in item.items()}
        return item

    value = normalised(value)
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    if len(text.encode("utf-8")) > MAX_PLUGIN_SETTINGS:
        raise GenesisError(path, f"is over {MAX_PLUGIN_SETTINGS} bytes as JSON")
    return text


def _specifier(text: str, path: str) -> str:
    try:
        return str(SpecifierSet(text))
    except InvalidSpecifier:
        raise GenesisError(path, f"{text!r} is not a version range (e.g. '>=1.0,<2')") from None


def _validators(readers: list[_Reader]) -> tuple[Validator, ...]:
    validators: dict[str, Validator] = {}
    for item in readers:
        peer_id = _peer_id(item.text("peer_id"), item.name("peer_id"))
        weight = item.integer("weight", 1, 1, MAX_AMOUNT)
        item.done()
        if peer_id in validators:
            raise GenesisError(item.name("peer_id"), f"validator {peer_id} is listed twice")
        validators[peer_id] = Validator(peer_id, weight)
    return tuple(sorted(validators.values(), key=lambda v: v.peer_id))


def _bootstrap(addresses: list[str]) -> tuple[str, ...]:
    for i, address in enumerate(addresses):
        if not _MULTIADDR.fullmatch(address):
            raise GenesisError(f"bootstrap[{i}]", f"{address!r} is not a multiaddr ending in "
                               "/p2p/<peer id> (e.g. /dns4/boot.example.com/tcp/4001/p2p/12D3...)")
    # Order is kept (it is the dialling preference); repeats carry no meaning.
    return tuple(dict.fromkeys(addresses))


def parse_plugin(text: str) -> RequiredPlugin:
    """Parse ``name`` or ``name<specifier>`` as given to ``--plugin``, e.g. ``storage>=1.0``."""
    match = re.fullmatch(r"([a-z][a-z0-9_-]{0,63})\s*(.*)", text.strip())
    if not match:
        raise GenesisError("plugins", f"{text!r} is not NAME[VERSION-RANGE] (e.g. storage>=1.0)")
    return RequiredPlugin(match[1], _specifier(match[2], "plugins"))


# --- writing and identity ------------------------------------------------------


def to_dict(genesis: Genesis) -> dict[str, Any]:
    """The normalised document as plain data, every field explicit."""
    return {
        "format": genesis.format,
        "name": genesis.name,
        "genesis_time": genesis.genesis_time,
        "bootstrap_port": genesis.bootstrap_port,
        "bootstrap": list(genesis.bootstrap),
        "token": {
            "name": genesis.token.name,
            "symbol": genesis.token.symbol,
            "decimals": genesis.token.decimals,
            "allocations": [{"account": a.account, "amount": a.amount}
                            for a in genesis.token.allocations],
            # Present only when > 0, so networks made before it keep their ID.
            **({"community_pool": genesis.token.community_pool}
               if genesis.token.community_pool else {}),
        },
        "rewards": {
            "epoch_seconds": genesis.rewards.epoch_seconds,
            "emission_per_epoch": genesis.rewards.emission_per_epoch,
            "split": {k: getattr(genesis.rewards.split, k) for k in SPLIT_KEYS},
        },
        "governance": {
            "quorum_percent": genesis.governance.quorum_percent,
            "threshold_percent": genesis.governance.threshold_percent,
            "veto_percent": genesis.governance.veto_percent,
            "voting_period_seconds": genesis.governance.voting_period_seconds,
            "proposal_stake": genesis.governance.proposal_stake,
            "mutable": list(genesis.governance.mutable),
        },
        # Present only when not the defaults, so networks made before it keep their ID.
        **({"penalties": penalties_table(genesis.penalties)}
           if penalties_table(genesis.penalties) else {}),
        **({"market": market_table(genesis.market)} if market_table(genesis.market) else {}),
        # A plugin's settings are present only when it has some (IDs made before stay).
        "plugins": [{"name": p.name, "version": p.version,
                     **({"settings": p.settings} if p.settings_json else {})}
                    for p in genesis.plugins],
        "validators": [{"peer_id": v.peer_id, "weight": v.weight} for v in genesis.validators],
    }


def format_time(moment: dt.datetime) -> str:
    """RFC 3339 in UTC with whole seconds: the one spelling used for hashing."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def canonical_bytes(genesis: Genesis) -> bytes:
    """The canonical encoding: compact JSON, sorted keys, UTF-8 (docs/genesis.md)."""
    data = to_dict(genesis)
    data["genesis_time"] = format_time(genesis.genesis_time)
    return json.dumps(data, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode("utf-8")


def network_id(genesis: Genesis) -> str:
    """``net_`` + the first 128 bits of SHA-256 over the canonical encoding, base32."""
    digest = hashlib.sha256(_DIGEST_CONTEXT + canonical_bytes(genesis)).digest()
    text = base64.b32encode(digest[:_ID_DIGEST_BYTES]).decode("ascii")
    return NETWORK_ID_PREFIX + text.rstrip("=").lower()


def dumps(genesis: Genesis) -> str:
    """The document as TOML, with its Network ID in a leading comment."""
    header = (f"# Mesh network genesis: {genesis.name}\n"
              f"# Network ID: {genesis.network_id} (derived from the content below;\n"
              "# any change of meaning gives another ID)\n\n")
    return header + tomli_w.dumps(to_dict(genesis))


def loads(text: str) -> Genesis:
    """Parse and validate a TOML genesis document."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise GenesisError("genesis", f"not valid TOML: {exc}") from None
    return from_dict(data)


def load(path: Path) -> Genesis:
    """Read a genesis file; GenesisError names the file and the field."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise GenesisError("genesis", f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise GenesisError("genesis", f"{path} is not UTF-8 text") from None
    return loads(text)
