"""meshd's typed configuration: defaults < TOML file < environment < flags.

Every key has one spelling in each source:

    TOML            [api] tcp_listen = "127.0.0.1:7443"
    environment     MESHD_API_TCP_LISTEN=127.0.0.1:7443
    flag            meshd run --api-tcp-listen 127.0.0.1:7443 (where a flag exists)

Unknown keys are refused in every source (a typo must not silently fall back
to a default). docs/configuration.md lists every key.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from meshcore.addresses import (
    AddressError,
    is_loopback_host,
    parse_announce,
    parse_no_announce,
    parse_peer_address,
)
from meshcore.errors import FieldError
from meshcore.paths import MAX_SOCKET_PATH, SOCKET_NAME, default_data_dir

ENV_PREFIX = "MESHD_"
# MESHD_* variables that are not config keys (MESHD_CONFIG names the file).
ENV_NOT_KEYS = frozenset({"MESHD_CONFIG"})
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")
REACHABILITY = ("auto", "public", "private")
ROLES = ("node", "bootstrap")
DEFAULT_P2P_PORT = 4001

_LISTEN_MULTIADDR = re.compile(r"/(ip4|ip6)/[0-9A-Fa-f.:]+/tcp/\d{1,5}(/ws)?")
_NETWORK_ID = re.compile(r"net_[a-z2-7]{26}")
_CAPABILITY = re.compile(r"[A-Za-z0-9_.=:-]{1,64}")
_PLUGIN_NAME = re.compile(r"[a-z][a-z0-9_-]{0,63}")
_ORIGIN = re.compile(r"https?://[A-Za-z0-9.-]+(:\d{1,5})?|https?://\[[0-9A-Fa-f:]+\](:\d{1,5})?")
_HOST_PORT = re.compile(r"(\[[0-9A-Fa-f:]+\]|[A-Za-z0-9.-]+):(\d{1,5})")


class ConfigError(FieldError):
    """The configuration is invalid; ``field`` is ``section.key``."""


@dataclass(frozen=True)
class NodeSection:
    data_dir: Path = field(default_factory=default_data_dir)
    genesis: Path | None = None
    role: str = "node"
    # Join by Network ID: with no genesis given or stored, fetch it from a
    # bootstrap peer and keep it only if it hashes to this ID.
    network_id: str = ""


@dataclass(frozen=True)
class P2PSection:
    listen: tuple[str, ...] = (f"/ip4/0.0.0.0/tcp/{DEFAULT_P2P_PORT}",)
    bootstrap: tuple[str, ...] = ()
    # What this node tells peers its addresses are (meshd/p2p/addresses.py):
    # announce replaces the listeners' addresses (e.g. a port forward, a DNS
    # name); no_announce removes some (an address, or /ip4/10.0.0.0/ipcidr/8).
    announce: tuple[str, ...] = ()
    no_announce: tuple[str, ...] = ()
    # Admitted peers: dial below low_watermark up to target_peers; prune above
    # high_watermark down to target_peers.
    low_watermark: int = 4
    target_peers: int = 8
    high_watermark: int = 16
    # Whether peers can dial this node: "auto" asks them (AutoNAT); "public"
    # or "private" when the operator knows (a firewall AutoNAT cannot see).
    reachability: str = "auto"
    # Find members on the LAN by mDNS (multicast on the node's private LAN
    # interfaces only; meshd/p2p/mdns.py).
    mdns: bool = True


@dataclass(frozen=True)
class ApiSection:
    # Unix socket of the API; empty means <data_dir>/meshd.sock.
    socket: Path | None = None
    # host:port for a TCP listener (TLS + bearer token required); empty: none.
    tcp_listen: str = ""
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # File holding the bearer token for TCP clients; empty: <data_dir>/api.token,
    # created with a random token on first start.
    token_file: Path | None = None


@dataclass(frozen=True)
class HttpSection:
    # HOST:PORT of the REST/JSON gateway and the dashboard (docs/http.md); empty:
    # off. Loopback is plain HTTP; any other address needs api.tls_cert and
    # api.tls_key, and the API token on every call, like api.tcp_listen.
    listen: str = ""
    # On loopback, serve calls that change anything without the token too.
    writes_without_token: bool = False
    # Web origins (https://app.example) whose pages may call the gateway (CORS).
    cors_origins: tuple[str, ...] = ()
    # Largest request body, in bytes.
    max_body: int = 4 << 20


@dataclass(frozen=True)
class MetricsSection:
    # HOST:PORT of the Prometheus endpoint (/metrics); empty: off.
    listen: str = ""


@dataclass(frozen=True)
class LogSection:
    level: str = "info"
    format: str = "text"


@dataclass(frozen=True)
class ExternalCommand:
    """One ``[plugins.external.<name>]`` table."""

    name: str
    command: tuple[str, ...]
    env: Mapping[str, str]
    cwd: Path | None


def _external_command(name: str, table: Mapping[str, Any]) -> ExternalCommand:
    key = f"plugins.external.{name}"
    if not _PLUGIN_NAME.fullmatch(name):
        raise ConfigError(key, f"{name!r} is not a plugin name "
                          "(lowercase letters, digits, '_' and '-')")
    unknown = sorted(set(table) - {"command", "env", "cwd"})
    if unknown:
        raise ConfigError(f"{key}.{unknown[0]}", "unknown key (known: command, env, cwd)")
    command = table.get("command")
    if not isinstance(command, list) or not command or not all(
            isinstance(part, str) and part for part in command):
        raise ConfigError(f"{key}.command", "must be a non-empty array of strings, "
                          'e.g. ["node", "/opt/plugin/index.js"]')
    env = table.get("env", {})
    if not isinstance(env, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
        raise ConfigError(f"{key}.env", 'must be a table of strings, e.g. {LEVEL = "debug"}')
    cwd = table.get("cwd", "")
    if not isinstance(cwd, str):
        raise ConfigError(f"{key}.cwd", "must be a path string")
    return ExternalCommand(name, tuple(command), dict(env),
                           Path(cwd).expanduser() if cwd else None)


@dataclass(frozen=True)
class PluginsSection:
    # In-process plugins to run beyond those the genesis requires.
    enable: tuple[str, ...] = ()
    # [plugins.settings.<name>] tables: each plugin's own configuration (ctx.config).
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Seconds a plugin's init may take; a failed plugin restarts after 1 s,
    # doubling up to restart_backoff_max.
    init_timeout: int = 10
    restart_backoff_max: int = 60
    # [plugins.external.<name>] tables: external plugins meshd launches and
    # supervises (command, env, cwd; docs/plugins.md "External plugins").
    external: dict[str, dict[str, Any]] = field(default_factory=dict)
    # An external plugin that answers no health check for this long is restarted.
    health_timeout: int = 15

    def external_commands(self) -> list[ExternalCommand]:
        """The [plugins.external.<name>] tables, checked (ConfigError names the key)."""
        return [_external_command(name, table) for name, table in sorted(self.external.items())]


@dataclass(frozen=True)
class TasksSection:
    # Labels this node advertises to requesters (e.g. "gpu", "region=eu"); a
    # task may require some.
    capabilities: tuple[str, ...] = ()
    # Tasks this node executes for peers at once; more are refused as busy.
    max_concurrent: int = 8


@dataclass(frozen=True)
class RelaySection:
    # Relay for members behind NAT while AutoNAT finds this node publicly
    # reachable (meshd/p2p/relay_server.py); false: never.
    serve: bool = True
    max_reservations: int = 128
    max_circuits: int = 64
    # A circuit ends after this many seconds or MiB each way (the two
    # nodes then reconnect): a bound on what one relayed pair costs.
    circuit_seconds: int = 1800
    circuit_mib: int = 64


@dataclass(frozen=True)
class Config:
    """The whole configuration of one meshd."""

    node: NodeSection = field(default_factory=NodeSection)
    p2p: P2PSection = field(default_factory=P2PSection)
    api: ApiSection = field(default_factory=ApiSection)
    http: HttpSection = field(default_factory=HttpSection)
    metrics: MetricsSection = field(default_factory=MetricsSection)
    log: LogSection = field(default_factory=LogSection)
    plugins: PluginsSection = field(default_factory=PluginsSection)
    tasks: TasksSection = field(default_factory=TasksSection)
    relay: RelaySection = field(default_factory=RelaySection)

    @property
    def socket_path(self) -> Path:
        return self.api.socket or self.node.data_dir / SOCKET_NAME

    @property
    def token_path(self) -> Path:
        return self.api.token_file or self.node.data_dir / "api.token"

    @classmethod
    def load(
        cls,
        path: Path | None = None,
        env: Mapping[str, str] | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> Config:
        """Build the configuration from its sources, later ones winning.

        Args:
            path: TOML file, or None for none.
            env: environment (only ``MESHD_*`` variables are read).
            overrides: ``section.key`` → value, from command-line flags; None
                values are ignored (flag not given).

        Raises:
            ConfigError: naming the source and the key.
        """
        values: dict[str, dict[str, Any]] = {name: {} for name in _sections()}
        if path is not None:
            _merge(values, _read_toml(path), source=str(path))
        _merge(values, _from_env(env or {}), source="environment")
        flags: dict[str, dict[str, Any]] = {}
        for dotted, value in (overrides or {}).items():
            if value is not None and value != ():
                section, _, key = dotted.partition(".")
                flags.setdefault(section, {})[key] = value
        _merge(values, flags, source="command line")
        config = cls(**{name: _build(section_type, values[name], name)
                        for name, section_type in _sections().items()})
        config.validate()
        return config

    def validate(self) -> None:
        """Check values that depend on each other or on their form."""
        if self.node.role not in ROLES:
            raise ConfigError("node.role", f"{self.node.role!r} is not one of {', '.join(ROLES)}")
        if self.node.network_id and not _NETWORK_ID.fullmatch(self.node.network_id):
            raise ConfigError("node.network_id", f"{self.node.network_id!r} is not a Network ID "
                              "(net_ and 26 base32 characters, as 'meshctl network init' "
                              "prints it)")
        if self.log.level not in LOG_LEVELS:
            raise ConfigError("log.level", f"{self.log.level!r} is not one of "
                              f"{', '.join(LOG_LEVELS)}")
        if self.log.format not in LOG_FORMATS:
            raise ConfigError("log.format", f"{self.log.format!r} is not one of "
                              f"{', '.join(LOG_FORMATS)}")
        for i, address in enumerate(self.p2p.listen):
            if not _LISTEN_MULTIADDR.fullmatch(address):
                raise ConfigError(f"p2p.listen[{i}]", f"{address!r} is not a TCP listen "
                                  "multiaddr (e.g. /ip4/0.0.0.0/tcp/4001, or "
                                  "/ip4/0.0.0.0/tcp/8080/ws for WebSocket)")
        if not self.p2p.listen:
            raise ConfigError("p2p.listen", "needs at least one address")
        for i, address in enumerate(self.p2p.bootstrap):
            try:
                parse_peer_address(address)
            except AddressError as exc:
                raise ConfigError(f"p2p.bootstrap[{i}]", str(exc)) from None
        for key, entries, parse in (("p2p.announce", self.p2p.announce, parse_announce),
                                    ("p2p.no_announce", self.p2p.no_announce,
                                     parse_no_announce)):
            for i, entry in enumerate(entries):
                try:
                    parse(entry)
                except AddressError as exc:
                    raise ConfigError(f"{key}[{i}]", str(exc)) from None
        p2p = self.p2p
        if p2p.reachability not in REACHABILITY:
            raise ConfigError("p2p.reachability", f"{p2p.reachability!r} is not one of "
                              f"{', '.join(REACHABILITY)}")
        for key, value, top in (("max_reservations", self.relay.max_reservations, 100_000),
                                ("max_circuits", self.relay.max_circuits, 100_000),
                                ("circuit_seconds", self.relay.circuit_seconds, 86_400),
                                ("circuit_mib", self.relay.circuit_mib, 1 << 20)):
            if not 1 <= value <= top:
                raise ConfigError(f"relay.{key}", f"must be between 1 and {top}, got {value}")
        if not 0 <= p2p.low_watermark <= p2p.target_peers <= p2p.high_watermark <= 1000 \
                or p2p.high_watermark < 1:
            raise ConfigError("p2p.target_peers", "need 0 <= low_watermark <= target_peers "
                              f"<= high_watermark <= 1000, got {p2p.low_watermark} / "
                              f"{p2p.target_peers} / {p2p.high_watermark}")
        for i, name in enumerate(self.plugins.enable):
            if not _PLUGIN_NAME.fullmatch(name):
                raise ConfigError(f"plugins.enable[{i}]", f"{name!r} is not a plugin name "
                                  "(lowercase letters, digits, '_' and '-')")
        if not 1 <= self.plugins.init_timeout <= 600:
            raise ConfigError("plugins.init_timeout", "must be 1 to 600 seconds")
        if not 1 <= self.plugins.restart_backoff_max <= 3600:
            raise ConfigError("plugins.restart_backoff_max", "must be 1 to 3600 seconds")
        if not 2 <= self.plugins.health_timeout <= 600:
            raise ConfigError("plugins.health_timeout", "must be 2 to 600 seconds")
        self.plugins.external_commands()
        for i, label in enumerate(self.tasks.capabilities):
            if not _CAPABILITY.fullmatch(label):
                raise ConfigError(f"tasks.capabilities[{i}]", f"{label!r} is not a capability "
                                  "label (1 to 64 letters, digits, '_', '.', '-', '=', ':')")
        if not 1 <= self.tasks.max_concurrent <= 1024:
            raise ConfigError("tasks.max_concurrent", "must be 1 to 1024")
        socket = str(self.socket_path.absolute())
        if len(socket.encode()) > MAX_SOCKET_PATH:
            raise ConfigError("api.socket", f"{socket} is longer than {MAX_SOCKET_PATH} bytes, "
                              "the limit of a Unix socket path; choose a shorter one")
        if self.metrics.listen:
            match = _HOST_PORT.fullmatch(self.metrics.listen)
            if not match or not 0 <= int(match[2]) <= 65535:
                raise ConfigError("metrics.listen", f"{self.metrics.listen!r} is not HOST:PORT")
        if self.api.tcp_listen:
            match = _HOST_PORT.fullmatch(self.api.tcp_listen)
            if not match or not 0 <= int(match[2]) <= 65535:
                raise ConfigError("api.tcp_listen", f"{self.api.tcp_listen!r} is not HOST:PORT")
            if self.api.tls_cert is None or self.api.tls_key is None:
                raise ConfigError("api.tcp_listen", "the TCP API is served only over TLS: "
                                  "set api.tls_cert and api.tls_key too")
        self._validate_http()

    def _validate_http(self) -> None:
        http = self.http
        if http.listen:
            match = _HOST_PORT.fullmatch(http.listen)
            if not match or not 0 <= int(match[2]) <= 65535:
                raise ConfigError("http.listen", f"{http.listen!r} is not HOST:PORT "
                                  "(e.g. 127.0.0.1:8080)")
            if not is_loopback_host(match[1]) and (self.api.tls_cert is None
                                                   or self.api.tls_key is None):
                raise ConfigError("http.listen", f"{http.listen} is not a loopback address: "
                                  "the gateway is served there only over TLS; set "
                                  "api.tls_cert and api.tls_key, or listen on 127.0.0.1")
        for i, origin in enumerate(http.cors_origins):
            if not _ORIGIN.fullmatch(origin):
                raise ConfigError(f"http.cors_origins[{i}]", f"{origin!r} is not a web origin "
                                  "(scheme://host[:port], e.g. https://app.example)")
        if not 1024 <= http.max_body <= 1 << 30:
            raise ConfigError("http.max_body", "must be 1024 bytes to 1 GiB")


def _sections() -> dict[str, type]:
    hints = typing.get_type_hints(Config)
    return {f.name: hints[f.name] for f in dataclasses.fields(Config)}


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError("config", f"cannot read {path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError("config", f"{path} is not valid TOML: {exc}") from None


def _from_env(env: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    sections = _sections()
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or name in ENV_NOT_KEYS:
            continue
        rest = name[len(ENV_PREFIX):].lower()
        section = next((s for s in sections if rest.startswith(s + "_")), None)
        key = rest[len(section) + 1:] if section else ""
        known = {f.name for f in dataclasses.fields(sections[section])} if section else set()
        if section is None or key not in known:
            variables = sorted(f"{ENV_PREFIX}{s.upper()}_{f.name.upper()}"
                               for s, t in sections.items() for f in dataclasses.fields(t))
            raise ConfigError(name, f"unknown environment variable (known: "
                              f"{', '.join(variables)})")
        found.setdefault(section, {})[key] = value
    return found


def _merge(into: dict[str, dict[str, Any]], new: Mapping[str, Any], source: str) -> None:
    sections = _sections()
    for section, table in new.items():
        if section not in sections:
            raise ConfigError(section, f"unknown section in {source} "
                              f"(known: {', '.join(sections)})")
        if not isinstance(table, Mapping):
            raise ConfigError(section, f"must be a table in {source}")
        known = {f.name for f in dataclasses.fields(sections[section])}
        for key, value in table.items():
            if key not in known:
                raise ConfigError(f"{section}.{key}", f"unknown key in {source} "
                                  f"(known in [{section}]: {', '.join(sorted(known))})")
            into[section][key] = value


def _build(section_type: type, values: Mapping[str, Any], section: str) -> Any:
    hints = typing.get_type_hints(section_type)
    kwargs = {key: _convert(value, hints[key], f"{section}.{key}")
              for key, value in values.items()}
    return section_type(**kwargs)


_BOOLEANS = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False,
             "on": True, "off": False}


def _convert(value: Any, hint: Any, name: str) -> Any:
    """Coerce a TOML value, an environment string or a flag value to ``hint``."""
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):  # "Path | None": empty means None
        inner = next(a for a in typing.get_args(hint) if a is not type(None))
        return None if value in ("", None) else _convert(value, inner, name)
    if hint is Path:
        if not isinstance(value, str | Path):
            raise ConfigError(name, f"must be a path string, not {type(value).__name__}")
        return Path(value).expanduser()
    if hint is bool:
        if isinstance(value, str) and value.strip().lower() in _BOOLEANS:
            value = _BOOLEANS[value.strip().lower()]
        if not isinstance(value, bool):
            raise ConfigError(name, f"must be true or false, not {value!r}")
        return value
    if hint is int:
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(name, f"must be an integer, not {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(name, f"must be a string, not {type(value).__name__}")
        return value
    if origin is dict:  # a table of tables, as plugins.settings: only TOML can say it
        if not isinstance(value, Mapping) or not all(
                isinstance(k, str) and isinstance(v, Mapping) for k, v in value.items()):
            raise ConfigError(name, "must be a table of tables (set it in the config file, "
                              f"e.g. [{name}.NAME])")
        return {k: dict(v) for k, v in value.items()}
    if origin is tuple:  # tuple[str, ...]: a TOML array, or a comma-separated string
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise ConfigError(name, "must be an array of strings")
        return tuple(value)
    raise AssertionError(f"unsupported config type {hint} for {name}")
