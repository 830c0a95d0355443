"""meshctl's command tree and client behaviour that needs no daemon."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import click
from click.testing import CliRunner

from meshctl.client import MeshClient, Target
from meshctl.main import cli


def leaves(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    found = []
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found += leaves(command, f"{prefix}{name} ")
        else:
            found.append((prefix + name, command))
    return found


def test_every_command_has_json() -> None:
    missing = [name for name, command in leaves(cli)
               if name != "completion" and not any("--json" in p.opts for p in command.params)]
    assert missing == []


def test_missing_socket_gives_hint_and_exit_1(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["--socket", str(tmp_path / "meshd.sock"), "status"])
    assert result.exit_code == 1
    assert "cannot reach meshd" in result.output
    assert "is it running?" in result.output


def test_socket_closed_to_us_gives_permission_hint(tmp_path: Path, monkeypatch: Any) -> None:
    path = tmp_path / "meshd.sock"
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(path))
        # Tests run as root, for whom file modes do not apply: deny as a non-owner is denied.
        monkeypatch.setattr("meshctl.client.os.access", lambda p, mode: False)
        result = CliRunner().invoke(cli, ["--socket", str(path), "status"])
    assert result.exit_code == 1
    assert "permission denied" in result.output and "run meshctl as that user" in result.output


def test_a_file_that_is_not_a_socket(tmp_path: Path) -> None:
    path = tmp_path / "genesis.toml"
    path.write_text("")
    result = CliRunner().invoke(cli, ["--socket", str(path), "status"])
    assert result.exit_code == 1 and "is not a socket" in result.output


def test_socket_env_variable(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["status"], env={"MESH_SOCKET": str(tmp_path / "s.sock")})
    assert str(tmp_path / "s.sock") in result.output


def test_completion_scripts() -> None:
    for shell, marker in (("bash", "complete "), ("zsh", "compdef"), ("fish", "complete ")):
        result = CliRunner().invoke(cli, ["completion", shell])
        assert result.exit_code == 0, result.output
        assert marker in result.output and "_MESHCTL_COMPLETE" in result.output


def test_version_json() -> None:
    result = CliRunner().invoke(cli, ["--json", "version"])
    assert json.loads(result.output)["version"]


def test_version_mismatch_warns_once(capsys: object) -> None:
    client = MeshClient(Target(Path("/nonexistent")))
    client._check_version((("mesh-version", "99.0.0"),))
    client._check_version((("mesh-version", "99.0.0"),))
    err = capsys.readouterr().err  # type: ignore[attr-defined]
    assert err.count("warning: meshctl") == 1 and "meshd 99.0.0" in err


def test_init_and_inspect(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, [
        "network", "init", "--allow-no-validators", "--name", "StorageNet", "--token-name", "STORE",
        "--token-symbol", "STR", "--token-distribution", "uptime:40,tasks:40,governance:20",
        "--plugin", "storage", "--bootstrap-port", "8080", "--out", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    created = json.loads(result.output)
    assert created["network_id"].startswith("net_")
    result = runner.invoke(cli, ["network", "inspect", str(tmp_path / "genesis.toml"), "--json"])
    shown = json.loads(result.output)
    assert shown["network_id"] == created["network_id"]
    assert shown["genesis"]["bootstrap_port"] == 8080
    assert shown["genesis"]["plugins"] == [{"name": "storage", "version": ""}]
    # Every parameter governance can change is made mutable, the slash rate too.
    assert "penalties.failed_task_bps" in shown["genesis"]["governance"]["mutable"]
    human = runner.invoke(cli, ["network", "inspect", str(tmp_path / "genesis.toml")])
    assert "10% of stake for a failed task or storage audit" in human.output
    # A plugin's network-wide settings: VALUE is JSON, else text.
    tuned = runner.invoke(cli, [
        "network", "init", "--allow-no-validators", "--name", "Tuned", "--token-name", "T",
        "--token-symbol", "TT", "--plugin", "storage", "--plugin-setting", "storage.k=2",
        "--plugin-setting", "storage.n=3", "--plugin-setting", "storage.label=cold",
        "--out", str(tmp_path / "tuned"), "--json"])
    assert tuned.exit_code == 0, tuned.output
    shown = json.loads(runner.invoke(cli, ["network", "inspect",
                                           str(tmp_path / "tuned" / "genesis.toml"),
                                           "--json"]).output)
    assert shown["genesis"]["plugins"] == [
        {"name": "storage", "version": "", "settings": {"k": 2, "n": 3, "label": "cold"}}]
    # no silent overwrite
    again = runner.invoke(cli, ["network", "init", "--allow-no-validators",
                                "--name", "X", "--token-name", "X",
                                "--token-symbol", "XX", "--out", str(tmp_path)])
    assert again.exit_code == 2 and "--force" in again.output


def test_init_refuses_bad_values_naming_the_option(tmp_path: Path) -> None:
    base = ["network", "init", "--allow-no-validators",
            "--name", "N", "--token-name", "T", "--out", str(tmp_path)]
    cases = [
        (["--token-symbol", "ab"], "--token-symbol"),
        (["--token-symbol", "AB", "--token-distribution", "uptime:50,tasks:60"],
         "--token-distribution"),
        (["--token-symbol", "AB", "--token-distribution", "uptime:50,fun:50"],
         "--token-distribution"),
        (["--token-symbol", "AB", "--plugin", "Bad Plugin"], "--plugin"),
        (["--token-symbol", "AB", "--validator", "nope"], "--validator"),
        (["--token-symbol", "AB", "--bootstrap-port", "70000"], "--bootstrap-port"),
        (["--token-symbol", "AB", "--failed-task-slash", "10001"], "--failed-task-slash"),
        (["--token-symbol", "AB", "--plugin-setting", "storage.k=4"], "add it with --plugin"),
        (["--token-symbol", "AB", "--plugin", "storage", "--plugin-setting", "storage.k"],
         "--plugin-setting"),
        (["--token-symbol", "AB", "--plugin", "storage", "--plugin-setting", "storage.k=1.5"],
         "--plugin-setting"),
    ]
    for extra, option in cases:
        result = CliRunner().invoke(cli, base + extra)
        assert result.exit_code == 2, (extra, result.output)
        assert option in result.output, (extra, result.output)
    empty = CliRunner().invoke(cli, ["network", "init", "--allow-no-validators",
                                     "--name", "", "--token-name", "T",
                                     "--token-symbol", "AB", "--out", str(tmp_path)])
    assert empty.exit_code == 2 and "--name" in empty.output
    assert not (tmp_path / "genesis.toml").exists()


def test_inspect_invalid_file(tmp_path: Path) -> None:
    path = tmp_path / "g.toml"
    path.write_text('name = "x"\n')
    result = CliRunner().invoke(cli, ["network", "inspect", str(path)])
    assert result.exit_code == 2
    assert "genesis_time: is required" in result.output


def test_token_amounts_show_base_units_and_tokens_exactly() -> None:
    from meshctl.output import token_amount

    assert token_amount("1500000", 6, "STR") == "1500000 (1.5 STR)"
    assert token_amount("10", 0, "STR") == "10 (10 STR)"
    assert token_amount(str(2**64 - 1), 18, "X") == \
        "18446744073709551615 (18.446744073709551615 X)"


def test_epochs_are_checked_before_calling_meshd(tmp_path: Path) -> None:
    socket_path = str(tmp_path / "meshd.sock")
    for args in (["ledger", "state-root", "--epoch", "-2"], ["rewards", "ls", "--epoch", "-1"],
                 ["rewards", "explain", "x"], ["rewards", "explain"]):
        result = CliRunner().invoke(cli, ["--socket", socket_path, *args])
        assert result.exit_code == 2, (args, result.output)


INIT = ["network", "init", "--name", "N", "--token-name", "T", "--token-symbol", "TT"]


def test_init_refuses_a_network_that_can_never_settle(tmp_path: Path) -> None:
    refused = CliRunner().invoke(cli, [*INIT, "--no-founder", "--out", str(tmp_path)])
    assert refused.exit_code == 2
    assert "never settles" in refused.output and "--allow-no-validators" in refused.output
    assert not (tmp_path / "genesis.toml").exists()
    allowed = CliRunner().invoke(cli, [*INIT, "--no-founder", "--allow-no-validators",
                                       "--out", str(tmp_path), "--json"])
    assert allowed.exit_code == 0, allowed.output
    assert json.loads(allowed.output)["founder"] is None


def test_init_makes_the_founders_node_the_first_validator_with_tokens(tmp_path: Path) -> None:
    from meshctl.local import node_identity

    node_dir = tmp_path / "node"
    created = CliRunner().invoke(cli, [*INIT, "--token-decimals", "2", "--founder-allocation",
                                       "500", "--data-dir", str(node_dir),
                                       "--out", str(tmp_path / "net"), "--json"])
    assert created.exit_code == 0, created.output
    founder = json.loads(created.output)["founder"]
    assert founder == node_identity(node_dir)  # the key it created, read again
    shown = json.loads(CliRunner().invoke(
        cli, ["network", "inspect", str(tmp_path / "net" / "genesis.toml"), "--json"]).output)
    assert shown["genesis"]["validators"] == [{"peer_id": founder, "weight": 1}]
    assert shown["genesis"]["token"]["allocations"] == [{"account": founder, "amount": 50_000}]


def test_init_with_validators_leaves_the_founders_node_alone(tmp_path: Path) -> None:
    validator = "12D3KooWKCWSgyLv9QfiTbHNxqgmdaoEQwKdf5snKrvxQL9rTBVS"
    created = CliRunner().invoke(cli, [*INIT, "--validator", validator,
                                       "--data-dir", str(tmp_path / "node"),
                                       "--out", str(tmp_path), "--json"])
    assert created.exit_code == 0, created.output
    assert json.loads(created.output)["founder"] is None
    assert not (tmp_path / "node").exists()
