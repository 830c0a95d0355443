"""meshd configuration: sources, precedence, validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshd.config import Config, ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "meshd.toml"
    path.write_text(text)
    return path


def test_defaults(tmp_path: Path) -> None:
    config = Config.load(overrides={"node.data_dir": tmp_path})
    assert config.p2p.listen == ("/ip4/0.0.0.0/tcp/4001",)
    assert config.socket_path == tmp_path / "meshd.sock"
    assert config.token_path == tmp_path / "api.token"
    assert (config.log.level, config.log.format, config.node.role) == ("info", "text", "node")


def test_file_then_environment_then_flags(tmp_path: Path) -> None:
    path = write(tmp_path, '[log]\nlevel = "debug"\nformat = "json"\n'
                           '[p2p]\nlisten = ["/ip4/127.0.0.1/tcp/1"]\n')
    config = Config.load(path, env={"MESHD_LOG_LEVEL": "warning"},
                         overrides={"log.level": None, "p2p.listen": ()})
    assert config.log.level == "warning"  # env beats file
    assert config.log.format == "json"  # file beats default
    assert config.p2p.listen == ("/ip4/127.0.0.1/tcp/1",)  # no flag given: file value stays
    config = Config.load(path, env={"MESHD_LOG_LEVEL": "warning"},
                         overrides={"log.level": "error"})
    assert config.log.level == "error"  # flag beats env


def test_environment_lists_are_comma_separated() -> None:
    config = Config.load(env={"MESHD_P2P_LISTEN": "/ip4/127.0.0.1/tcp/1, /ip6/::1/tcp/2"})
    assert config.p2p.listen == ("/ip4/127.0.0.1/tcp/1", "/ip6/::1/tcp/2")


def test_unrelated_environment_is_ignored_and_meshd_config_is_allowed() -> None:
    Config.load(env={"HOME": "/root", "MESH_SOCKET": "/x", "MESHD_CONFIG": "/etc/mesh.toml"})


@pytest.mark.parametrize(("text", "field"), [
    ("[node]\ncolour = 1\n", "node.colour"),
    ("[colours]\nred = 1\n", "colours"),
    ('[log]\nlevel = "loud"\n', "log.level"),
    ('[log]\nformat = "xml"\n', "log.format"),
    ("[log]\nlevel = 3\n", "log.level"),
    ("[p2p]\nlisten = [1]\n", "p2p.listen"),
    ('[p2p]\nlisten = ["0.0.0.0:4001"]\n', "p2p.listen[0]"),
    ("[p2p]\nlisten = []\n", "p2p.listen"),
    ('[p2p]\nbootstrap = ["/ip4/1.2.3.4/tcp/1"]\n', "p2p.bootstrap[0]"),
    ('[p2p]\nannounce = ["/ip4/1.2.3.4/tcp/1/p2p/12D3KooW"]\n', "p2p.announce[0]"),
    ('[p2p]\nannounce = ["1.2.3.4:4001"]\n', "p2p.announce[0]"),
    ('[p2p]\nno_announce = ["10.0.0.0/8"]\n', "p2p.no_announce[0]"),
    ('[api]\ntcp_listen = "127.0.0.1:7443"\n', "api.tcp_listen"),
    ('[api]\ntcp_listen = "nonsense"\ntls_cert = "c"\ntls_key = "k"\n', "api.tcp_listen"),
    ('[node]\nrole = "king"\n', "node.role"),
    ('[metrics]\nlisten = "9090"\n', "metrics.listen"),
    ("[p2p]\nlow_watermark = 9\ntarget_peers = 8\n", "p2p.target_peers"),
    ('[p2p]\nlow_watermark = "many"\n', "p2p.low_watermark"),
    ("[node\n", "config"),
    ('[p2p]\nmdns = "sometimes"\n', "p2p.mdns"),
    ("[p2p]\nmdns = 1\n", "p2p.mdns"),
    ('[p2p]\nreachability = "maybe"\n', "p2p.reachability"),
    ("[relay]\nmax_circuits = 0\n", "relay.max_circuits"),
    ("[relay]\ncircuit_mib = -1\n", "relay.circuit_mib"),
    ('[relay]\nserve = "yes please"\n', "relay.serve"),
    ('[http]\nlisten = "8080"\n', "http.listen"),
    ('[http]\nlisten = "0.0.0.0:8080"\n', "http.listen"),  # not loopback: TLS needed
    ('[http]\nlisten = "127.0.0.1:8080"\ncors_origins = ["*"]\n', "http.cors_origins[0]"),
    ('[http]\ncors_origins = ["https://a.example/path"]\n', "http.cors_origins[0]"),
    ("[http]\nmax_body = 10\n", "http.max_body"),
])
def test_invalid_files_are_refused_naming_the_key(tmp_path: Path, text: str,
                                                  field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Config.load(write(tmp_path, text))
    assert caught.value.field == field


def test_switches_are_booleans_from_a_file_or_words_from_the_environment(
        tmp_path: Path) -> None:
    config = Config.load(write(tmp_path, "[p2p]\nmdns = false\n[relay]\nserve = false\n"))
    assert config.p2p.mdns is False and config.relay.serve is False
    assert Config().p2p.mdns is True and Config().relay.serve is True
    for word, meaning in (("off", False), ("0", False), ("Yes", True), ("true", True)):
        loaded = Config.load(env={"MESHD_P2P_MDNS": word, "MESHD_RELAY_SERVE": word})
        assert loaded.p2p.mdns is meaning and loaded.relay.serve is meaning
    pinned = Config.load(write(tmp_path, '[p2p]\nreachability = "private"\n'))
    assert pinned.p2p.reachability == "private"


def test_a_string_is_read_as_a_comma_separated_list(tmp_path: Path) -> None:
    config = Config.load(write(tmp_path, '[p2p]\nlisten = "/ip4/127.0.0.1/tcp/1"\n'))
    assert config.p2p.listen == ("/ip4/127.0.0.1/tcp/1",)


def test_unknown_environment_variable_is_named() -> None:
    with pytest.raises(ConfigError, match="MESHD_LOG_LEVL"):
        Config.load(env={"MESHD_LOG_LEVL": "debug"})


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        Config.load(tmp_path / "nope.toml")


def test_socket_path_longer_than_sun_path_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="longer than 107 bytes"):
        Config.load(overrides={"api.socket": tmp_path / ("x" * 120)})


def test_http_gateway_on_loopback_or_with_tls(tmp_path: Path) -> None:
    loopback = Config.load(write(tmp_path, '[http]\nlisten = "[::1]:8080"\n'),
                           overrides={"node.data_dir": tmp_path})
    assert loopback.http.listen == "[::1]:8080" and not loopback.http.writes_without_token
    public = Config.load(write(tmp_path, '[http]\nlisten = "0.0.0.0:8443"\n'
                                         'cors_origins = ["https://ops.example:8443"]\n'
                               '[api]\ntls_cert = "c.pem"\ntls_key = "k.pem"\n'),
                         overrides={"node.data_dir": tmp_path})
    assert public.http.cors_origins == ("https://ops.example:8443",)


def test_tcp_listener_with_tls(tmp_path: Path) -> None:
    config = Config.load(write(tmp_path, '[api]\ntcp_listen = "127.0.0.1:7443"\n'
                                         'tls_cert = "/c.pem"\ntls_key = "/k.pem"\n'))
    assert config.api.tls_cert == Path("/c.pem")


def test_plugin_settings_are_tables_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "meshd.toml"
    path.write_text('[plugins]\nenable = ["storage"]\ninit_timeout = 3\n'
                    '[plugins.settings.storage]\ncapacity_bytes = 1000\n'
                    '[plugins.settings.other]\nmode = "fast"\n')
    config = Config.load(path, env={"MESHD_PLUGINS_RESTART_BACKOFF_MAX": "5"})
    assert config.plugins.enable == ("storage",)
    assert config.plugins.settings == {"storage": {"capacity_bytes": 1000},
                                       "other": {"mode": "fast"}}
    assert (config.plugins.init_timeout, config.plugins.restart_backoff_max) == (3, 5)


@pytest.mark.parametrize(("source", "field", "message"), [
    ({"MESHD_PLUGINS_SETTINGS": "x"}, "plugins.settings", "must be a table of tables"),
    ({"MESHD_PLUGINS_ENABLE": "Storage"}, "plugins.enable[0]", "is not a plugin name"),
    ({"MESHD_PLUGINS_INIT_TIMEOUT": "0"}, "plugins.init_timeout", "1 to 600 seconds"),
])
def test_bad_plugin_settings_are_refused(source: dict[str, str], field: str,
                                         message: str) -> None:
    with pytest.raises(ConfigError, match=message) as refused:
        Config.load(env=source)
    assert refused.value.field == field
