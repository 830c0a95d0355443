"""meshctl doctor's verdicts, each check on the facts it reads (meshctl/doctor.py)."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

from meshcore.genesis import Genesis, RewardPolicy, Token, Validator
from meshctl import doctor
from meshctl.doctor import FAIL, PASS, SKIP, WARN, Facts

A = "12D3KooWKCWSgyLv9QfiTbHNxqgmdaoEQwKdf5snKrvxQL9rTBVS"
B = "12D3KooWRR5eKAzy45xvZeJXJUZtZxocBkzoa7HodmPyNrDRt8eY"
C = "12D3KooWAx8DHFHTYjd6LNYxXyQCSdG861YTqiTFDKqD1eqdCWcT"
T0 = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)


def genesis(validators: tuple[Validator, ...] = (Validator(A), Validator(B), Validator(C)),
            epoch: int = 10) -> Genesis:
    return Genesis(name="N", genesis_time=T0, token=Token("T", "TT", 6),
                   rewards=RewardPolicy(epoch_seconds=epoch), validators=validators)


def status(**changes: Any) -> dict[str, Any]:
    return {"peer_id": A, "state": "active", "version": "0.1.0", "peer_count": 2,
            "listen_addrs": ["/ip4/192.168.1.5/tcp/4001/p2p/" + A], "reachability": "public",
            **changes}


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def test_a_daemon_that_does_not_answer_fails_and_stops_the_other_checks() -> None:
    checks = doctor.run_checks(Facts(status_error="no such socket"), at(100))
    assert [(c.name, c.status) for c in checks] == [("daemon", FAIL), ("files", SKIP)]
    assert "start it" in checks[0].hint
    assert doctor.check_daemon(Facts(status=status()), "0.2.0").status == WARN


def test_socket_and_data_dir_modes(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    sock = data / "meshd.sock"
    sock.write_text("")
    sock.chmod(0o600)
    assert doctor.check_files(Facts(socket=sock)).status == PASS
    sock.chmod(0o644)
    bad = doctor.check_files(Facts(socket=sock))
    assert bad.status == FAIL and "chmod 600" in bad.hint
    sock.chmod(0o600)
    data.chmod(0o755)
    assert doctor.check_files(Facts(socket=sock)).status == WARN
    assert doctor.check_files(Facts(socket=None)).status == SKIP  # over TCP


def test_addresses() -> None:
    assert doctor.check_addresses(Facts(status=status())).status == PASS
    wildcard = doctor.check_addresses(Facts(status=status(listen_addrs=["/ip4/0.0.0.0/tcp/1"])))
    assert wildcard.status == FAIL
    loop = status(listen_addrs=["/ip4/127.0.0.1/tcp/1/p2p/" + A])
    assert doctor.check_addresses(Facts(status=loop, peer_addrs=["/ip4/10.0.0.2/tcp/1"])) \
        .status == WARN
    assert doctor.check_addresses(Facts(status=loop, peer_addrs=["/ip4/127.0.0.1/tcp/9"])) \
        .status == PASS  # a network on this machine
    assert doctor.check_addresses(Facts(status=status(listen_addrs=[]))).status == FAIL


def test_peers_and_dht() -> None:
    assert doctor.check_peers(Facts(status=status(peer_count=0))).status == FAIL
    assert doctor.check_peers(Facts(status=status(peer_count=1))).status == WARN
    assert doctor.check_peers(Facts(status=status(peer_count=5))).status == PASS
    degree = {"low_watermark": 4, "target_peers": 8, "high_watermark": 16}
    # Below the low watermark: all a 4-node network has, or short of known peers.
    small = Facts(status=status(peer_count=3, **degree), routing_table_size=3)
    assert doctor.check_peers(small).status == PASS and "4 / 8 / 16" in \
        doctor.check_peers(small).detail
    short = Facts(status=status(peer_count=3, **degree), routing_table_size=12)
    assert doctor.check_peers(short).status == WARN
    assert "below the low watermark" in doctor.check_peers(short).detail
    assert doctor.check_dht(Facts(status=status(), routing_table_size=0)).status == WARN
    assert doctor.check_dht(Facts(status=status(), routing_table_size=3)).status == PASS


def test_settlement_follows_the_clock() -> None:
    facts = Facts(status=status(), genesis=genesis(), final_epoch=8)
    assert doctor.check_settlement(facts, at(95)).status == PASS     # epoch 9 running
    assert doctor.check_settlement(facts, at(105)).status == PASS    # 9 due, a few s late
    assert doctor.check_settlement(facts, at(115)).status == WARN    # 2 behind
    stopped = doctor.check_settlement(facts, at(125))                # 3 behind
    assert stopped.status == FAIL and "validators" in stopped.hint
    never = Facts(status=status(), genesis=genesis(validators=()), final_epoch=-1)
    assert doctor.check_settlement(never, at(500)).status == FAIL
    assert doctor.check_settlement(Facts(genesis=genesis(), final_epoch=-1), at(5)).status \
        == PASS  # the first epoch has not ended
    assert doctor.check_clock(Facts(genesis=genesis()), at(-60)).status == FAIL
    assert doctor.check_clock(Facts(genesis=genesis(), clock_offsets_ms=[40, -20, 15]),
                              at(100)).status == PASS
    behind = doctor.check_clock(Facts(genesis=genesis(), clock_offsets_ms=[4000, 3900, 9]),
                                at(100))
    assert behind.status == WARN and "+3.9 s" in behind.detail and "NTP" in behind.hint
    assert doctor.check_clock(Facts(genesis=genesis(), clock_offsets_ms=[-60000, -59000]),
                              at(100)).status == FAIL


def test_validators_need_two_thirds_of_the_weight_reachable() -> None:
    three = genesis()
    assert doctor.check_validators(Facts(status=status(), genesis=three, peers=[B])).status \
        == PASS  # A (itself) and B: 2/3
    down = doctor.check_validators(Facts(status=status(), genesis=three, peers=[]))
    assert down.status == FAIL and "1 of 3" in down.detail
    weighted = genesis(validators=(Validator(A, 1), Validator(B, 5)))
    assert doctor.check_validators(Facts(status=status(), genesis=weighted, peers=[])) \
        .status == FAIL
    # The set the ledger elected wins over the genesis.
    elected = Facts(status=status(), genesis=three, peers=[], validators=[(A, 10), (C, 2)])
    check = doctor.check_validators(elected)
    assert check.status == PASS and "validators of the next epoch" in check.detail
    assert doctor.check_validators(Facts(status=status(), genesis=three, peers=[],
                                         validators=[])).status == FAIL


def test_plugins_and_bootstrap() -> None:
    def plugin(name: str, state: str, required: bool) -> dict[str, Any]:
        return {"name": name, "state": state, "required": required, "last_error": ""}

    ok = Facts(plugins=[plugin("storage", "running", True)])
    assert doctor.check_plugins(ok).status == PASS
    crashed = Facts(plugins=[plugin("storage", "backoff", True)])
    failed = doctor.check_plugins(crashed)
    assert failed.status == FAIL and "storage (backoff)" in failed.detail
    assert doctor.check_plugins(Facts(plugins=[plugin("x", "backoff", False)])).status == WARN
    boot = Genesis(name="N", genesis_time=T0, token=Token("T", "TT", 6),
                   bootstrap=(f"/ip4/203.0.113.5/tcp/4001/p2p/{B}",))
    assert doctor.check_bootstrap(Facts(status=status(), genesis=boot, peers=[B])).status == PASS
    assert doctor.check_bootstrap(Facts(status=status(), genesis=boot, peers=[C])).status == WARN


def test_disk_space(tmp_path: Path) -> None:
    sock = tmp_path / "meshd.sock"

    def free(size: int) -> Any:
        return lambda path: os.statvfs_result((4096, 4096, 1 << 30, 0, size // 4096,
                                               0, 0, 0, 0, 255))

    assert doctor.check_disk(Facts(socket=sock), free(10 << 30)).status == PASS
    assert doctor.check_disk(Facts(socket=sock), free(500 << 20)).status == WARN
    assert doctor.check_disk(Facts(socket=sock), free(50 << 20)).status == FAIL
    assert doctor.worst([doctor.Check("a", PASS, ""), doctor.Check("b", SKIP, "")]) == PASS
