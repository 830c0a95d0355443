"""deploy/systemd/meshd.service: valid for systemd, and its restart policy matches meshd's exits."""

from __future__ import annotations

import configparser
import subprocess
import sys
from pathlib import Path

from meshd import cli

UNIT = Path(__file__).parents[2] / "deploy" / "systemd" / "meshd.service"


def _service() -> configparser.SectionProxy:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    return parser["Service"]


def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    # ExecStart must name an executable that exists: this venv's meshd.
    meshd = Path(sys.executable).parent / "meshd"
    unit = tmp_path / "meshd.service"
    unit.write_text(UNIT.read_text().replace("/opt/mesh/venv/bin/meshd", str(meshd)))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout + result.stderr == ""  # no warning either (an unknown key, a typo)


def test_a_crash_is_restarted_and_what_the_operator_must_fix_is_not() -> None:
    service = _service()
    assert service["Restart"] == "on-failure"
    prevented = {int(code) for code in service["RestartPreventExitStatus"].split()}
    assert prevented == {cli.EXIT_FAILURE, cli.EXIT_CONFIG}
    assert cli.EXIT_CRASH not in prevented
    assert service["Type"] == "notify" and service["WatchdogSec"] == "30s"
