"""RUN payloads and results (mesh_compute/runs.py), offers and requirements (offers.py)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest
from mesh_compute.offers import (
    FEATURES,
    STORED_MODULES,
    Offer,
    Requirements,
    measure,
    offer_from_json,
    rank,
)
from mesh_compute.runs import (
    RunFormatError,
    RunRequest,
    RunResult,
    parse_request,
    parse_result,
    units_of,
)
from mesh_compute.sandbox import Limits

MODULE = b"\x00asm\x01\x00\x00\x00"
CID = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"


def test_a_request_reads_back_as_written() -> None:
    request = RunRequest(MODULE, b"input \n bytes", fn="main", fuel=1234)
    assert parse_request(request.encode()) == request
    assert parse_request(RunRequest(MODULE, b"").encode()).data == b""


def test_a_request_naming_a_stored_module_carries_its_input_only() -> None:
    request = RunRequest(b"", b"in\n put", fn="main", fuel=99, module_cid=CID)
    payload = request.encode()
    assert parse_request(payload) == request
    assert payload.endswith(b"\nin\n put") and b"module_bytes" not in payload
    assert request.module_key == CID
    assert RunRequest(MODULE, b"").module_key == hashlib.sha256(MODULE).hexdigest()
    head = json.loads(payload.partition(b"\n")[0])
    for changes, why in (({"module_cid": "Qm123"}, "not a stored file's CID"),
                         ({"module_cid": 7}, "not a stored file's CID"),
                         ({"module_bytes": 3}, "not both"),
                         ({"module": "00" * 32}, "not both")):
        with pytest.raises(RunFormatError, match=why):
            parse_request(json.dumps(head | changes).encode() + b"\nin")


@pytest.mark.parametrize(("payload", "why"), [
    (b"", "starts with a JSON header line"),
    (b"{nope\n", "not JSON"),
    (b"[1]\n", "not a JSON object"),
    (b"x" * 5000 + b"\n", "starts with a JSON header line"),
])
def test_a_payload_without_a_header_is_refused(payload: bytes, why: str) -> None:
    with pytest.raises(RunFormatError, match=why):
        parse_request(payload)


def _tampered(**changes: object) -> bytes:
    head, _, rest = RunRequest(MODULE, b"in").encode().partition(b"\n")
    header = json.loads(head) | changes
    return json.dumps(header).encode() + b"\n" + rest


@pytest.mark.parametrize(("changes", "why"), [
    ({"v": 2}, "version 2"),
    ({"fn": "1run"}, "not an export name"),
    ({"fn": "a" * 65}, "not an export name"),
    ({"fuel": 0}, "at least 1"),
    ({"fuel": True}, "at least 1"),
    ({"fuel": 1.5}, "at least 1"),
    ({"module_bytes": 0}, "does not fit"),
    ({"module_bytes": 100}, "does not fit"),
    ({"module": "00" * 32}, "SHA-256"),
])
def test_a_payload_whose_header_lies_is_refused(changes: dict[str, object], why: str) -> None:
    with pytest.raises(RunFormatError, match=why):
        parse_request(_tampered(**changes))


def test_a_result_reads_back_and_a_failed_run_has_no_output() -> None:
    for result in (RunResult(117, b"\x01\x02"), RunResult(10, error="trapped", message="x"),
                   RunResult(5, error="out_of_fuel", message="spent all")):
        assert parse_result(result.encode()) == result
    assert RunResult(117, b"out").encode() == RunResult(117, b"out").encode()  # deterministic
    with pytest.raises(RunFormatError, match="has no output"):
        parse_result(b'{"error": "trapped", "fuel": 1, "message": ""}\nout')
    with pytest.raises(RunFormatError, match="not one of"):
        parse_result(b'{"error": "segfault", "fuel": 1, "message": ""}\n')
    with pytest.raises(RunFormatError, match="not a whole number"):
        parse_result(b'{"error": "", "fuel": -1, "message": ""}\n')


def test_units_are_thousands_of_fuel_at_least_one() -> None:
    assert [units_of(f) for f in (0, 1, 1000, 1001, 10**8)] == [1, 1, 1, 2, 100_000]


def _offer(peer: str, **fields: object) -> Offer:
    base: dict[str, object] = {"cores": 4, "memory_bytes": 64 << 20, "max_fuel": 10**8,
                               "arch": "x86_64", "score": 100, "busy": 0}
    return Offer(peer, **(base | fields))  # type: ignore[arg-type]


def test_requirements_leave_out_providers_with_why_and_rank_the_rest() -> None:
    offers = [_offer("slow", score=10), _offer("fast", score=500),
              _offer("busy", score=900, busy=4), _offer("tiny", memory_bytes=16 << 20),
              _offer("arm", arch="aarch64"), _offer("few", cores=1, max_fuel=1000)]
    fit, why = rank(offers, Requirements(cores=2, memory_bytes=32 << 20, fuel=10**6,
                                         arch="x86_64"))
    assert [o.peer_id for o in fit] == ["fast", "slow", "busy"]
    assert why == {"tiny": "offers 16 MiB of memory per run, not 32 MiB",
                   "arm": "is aarch64, not x86_64", "few": "offers 1 cores, not 2"}
    assert rank(offers, Requirements(fuel=10**6))[1] == {"few": "runs at most 1000 fuel, "
                                                                "not 1000000"}


def test_a_run_of_a_stored_module_leaves_out_providers_that_cannot_read_one() -> None:
    reads = _offer("reads", features=(*FEATURES, STORED_MODULES))
    fit, why = rank([_offer("plain"), reads], Requirements(stored_module=True))
    assert [o.peer_id for o in fit] == ["reads"]
    assert why == {"plain": "runs no storage plugin, so it cannot read a module by CID"}
    assert offer_from_json("reads", reads.to_json()).features == reads.features


def test_an_offer_from_a_peer_is_checked() -> None:
    offer = _offer("p")
    assert offer_from_json("p", json.loads(json.dumps(offer.to_json()))) == offer
    for bad in ({}, {"cores": "4"}, offer.to_json() | {"cores": -1},
                offer.to_json() | {"features": [1]}, offer.to_json() | {"busy": True}, []):
        with pytest.raises(ValueError, match="offer"):
            offer_from_json("p", bad)  # type: ignore[arg-type]


def test_this_machines_offer_is_measured_and_capped_by_its_operator() -> None:
    offer = measure({}, Limits())
    assert offer.cores >= 1 and offer.score > 1_000_000 and offer.max_fuel == Limits().fuel
    assert measure({"cores": 1}, Limits(memory_bytes=1 << 20)).cores == 1
    assert measure({}, Limits(memory_bytes=1 << 20)).memory_bytes == 1 << 20
    assert measure({}, Limits(fuel=1000)).max_fuel == 1000  # the benchmark needs more: its own
    assert measure({"cores": 4096}, Limits()).cores == offer.cores  # never more than it has
    with pytest.raises(ValueError, match="cores is a whole number"):
        measure({"cores": 0}, Limits())


def test_a_price_is_the_start_fee_plus_the_fuel_rounded_up_and_bounds_who_is_asked() -> None:
    free, cheap, dear = (_offer("free"), _offer("cheap", price_per_mfuel=10, start_fee=2),
                         _offer("dear", price_per_mfuel=1000, start_fee=50))
    assert cheap.quote(0) == 2 and cheap.quote(1) == 3 and cheap.quote(10**6) == 12
    assert free.quote(10**8) == 0
    fit, why = rank([dear, cheap, free], Requirements(fuel=10**6, max_price=100))
    assert [o.peer_id for o in fit] == ["free", "cheap"]  # the cheapest first
    assert why == {"dear": "asks 1050 for 1000000 fuel (50 to start, 1000 per million fuel), "
                           "over the 100 offered"}
    fit, why = rank([dear, cheap, free], Requirements(fuel=10**6))  # unpaid: the free only
    assert [o.peer_id for o in fit] == ["free"] and "(--max-price)" in why["cheap"]
    with pytest.raises(ValueError, match="start_fee is a whole number of at least 0"):
        measure({"start_fee": -1}, Limits())
    assert measure({"price_per_mfuel": 7}, Limits()).quote(10**6) == 7


def test_among_equals_the_provider_with_the_better_record_here_comes_first() -> None:
    offers = [_offer("new"), _offer("good", score=1), _offer("bad", score=10**9)]
    fit, _ = rank(offers, Requirements(), {"good": 0.95, "bad": 0.1})
    assert [o.peer_id for o in fit] == ["good", "new", "bad"]  # whatever their scores


def test_among_equal_records_uptime_then_age_in_the_ledger_come_first() -> None:
    offers = [_offer("new"), _offer("flaky", score=10**9), _offer("steady"),
              _offer("elder", score=1)]
    fit, _ = rank(offers, Requirements(), {p.peer_id: 0.9 for p in offers},
                  uptime={"flaky": 0.3, "steady": 0.9, "elder": 0.9, "new": 0.5},
                  age={"steady": 10, "elder": 700, "new": 0})
    assert [o.peer_id for o in fit] == ["elder", "steady", "new", "flaky"]


def test_meshctl_without_the_compute_package_says_what_to_install() -> None:
    hide = ("import sys; sys.modules['mesh_compute'] = None; "
            "sys.modules['mesh_compute.runs'] = None; from meshctl.main import main; "
            "sys.argv = ['meshctl'] + sys.argv[1:]; main()")
    compute = subprocess.run([sys.executable, "-c", hide, "compute", "run", "m.wat", "-i", "-"],
                             capture_output=True, text=True, timeout=60)
    assert compute.returncode == 1
    assert "needs the compute plugin's package beside meshctl" in compute.stderr
    helped = subprocess.run([sys.executable, "-c", hide, "--help"], capture_output=True,
                            text=True, timeout=60)
    assert "Run WebAssembly modules on the network" in helped.stdout  # listed all the same
