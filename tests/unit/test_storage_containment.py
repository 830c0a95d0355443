"""Containment (silence as evidence): strikes once an epoch, kept across restarts."""

from __future__ import annotations

from pathlib import Path

import pytest
from mesh_storage import containment
from mesh_storage.containment import STRIKES, Contained, Containment


def entry(holder: str = "holder", piece: str = "piece") -> Contained:
    return Contained(holder, piece, "file", "00" * 32, 1024, 256, 1024)


def test_a_strike_counts_once_an_epoch_and_a_pass_releases(tmp_path: Path) -> None:
    held = Containment(tmp_path / "containment.json")
    assert held.strike(entry(), 4, "timeout").strikes == 1
    assert held.strike(entry(), 4, "timeout again").strikes == 1
    assert held.get("holder", "piece").reason == "timeout again"
    assert [c.piece for c in held.due(4)] == [] and [c.piece for c in held.due(5)] == ["piece"]
    for epoch in range(5, 4 + STRIKES):
        held.strike(entry(), epoch, "timeout")
    assert held.get("holder", "piece").strikes == STRIKES
    assert held.of("holder") == 1 and held.of("someone else") == 0
    held.release("holder", "piece")
    assert held.get("holder", "piece") is None and held.of("holder") == 0


def test_containment_survives_a_restart_and_a_damaged_file(tmp_path: Path) -> None:
    path = tmp_path / "containment.json"
    held = Containment(path)
    held.strike(entry(), 7, "timeout")
    held.hold_to("holder", "piece", {"provider": "holder"})
    again = Containment(path)
    assert again.get("holder", "piece") == held.get("holder", "piece")
    assert again.get("holder", "piece").report == {"provider": "holder"}
    path.write_text('[{"holder": "x"}, "nonsense", ')  # cut short by a crash
    assert Containment(path).held == {}
    path.write_text('[{"holder": "x"}, {"holder": "h", "piece": "p", "file": "f", "root": "",'
                    ' "size": 1, "segment": 1, "held_bytes": 1}]')
    assert list(Containment(path).held) == [("h", "p")]  # the bad entry skipped


def test_the_oldest_go_first_past_the_limit(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(containment, "KEPT", 2)
    held = Containment(tmp_path / "containment.json")
    for piece in ("a", "b", "c"):
        held.strike(entry(piece=piece), 1, "timeout")
    assert [p for _, p in held.held] == ["b", "c"]
