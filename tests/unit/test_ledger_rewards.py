"""Rewards of epoch E (docs/ledger.md §6): amounts against the formulas, by hand.

Every expectation is worked out here from the evidence the test writes; the
code under test is only asked for its result.
"""

from __future__ import annotations

from dataclasses import replace

from meshcore.ledger import accounts
from meshcore.ledger.constants import MAX_UNITS_PER_RECEIPT, REQUESTER_UNITS_CAP
from meshcore.ledger.entry import Verified
from meshcore.ledger.explain import explain_json, explain_lines
from meshcore.ledger.record import RewardLine
from meshcore.ledger.settle import Settlement, settle
from meshcore.ledger.state import Account, Settled
from tests.unit.settle_helpers import PS, Author, start, task_claim, value

STAKED = Account(bonded=PS // 10)  # exactly MIN_ATTEST_STAKE
EMISSION = 1_000_000  # pools: uptime 400000, tasks 400000, governance 200000


def run(prev: Settled, *cut: Verified) -> Settlement:
    return settle(prev, prev.epoch + 1, 1, value(prev.epoch + 1), list(cut))


def lines(result: Settlement, pool: str) -> dict[bytes, RewardLine]:
    return {line.account: line for line in result.record.lines if line.pool == pool}


def test_uptime_is_the_lower_median_of_eligible_attesters() -> None:
    a1, a2, a3, sybil, p, q, r = (Author(n) for n in range(30, 37))
    prev = start({a1.key: STAKED, a2.key: STAKED, a3.key: STAKED,
                  sybil.key: Account(bonded=PS // 10 - 1)}, emission=EMISSION)
    cut = [a1.attest(0, (p, 40, 39), (q, 10, 5), (r, 3, 3)),
           a1.attest(0, (p, 10, 0)),  # a second attestation: only the lowest seq counts
           a2.attest(0, (p, 60, 59), (r, 3, 1)),
           a3.attest(0, (p, 12, 12)),
           sybil.attest(0, (p, 10, 10), (q, 10, 10))]
    result = run(prev, *cut)
    up = lines(result, "uptime")
    # p: [975, 983, 1000] -> 983; r: [1000, 333] -> 333 (index (2-1)//2 = 0); q: one -> 0
    assert (up[p.key].points, up[p.key].rule) == (983, "uptime.lower_median")
    assert (up[r.key].points, up[q.key].points) == (333, 0)
    assert up[q.key].rule == "uptime.too_few"
    assert up[p.key].amount == 400_000 * 983 // (983 + 333) == 298_784
    assert up[r.key].amount == 400_000 * 333 // (983 + 333) == 101_215
    assert {i.rule for i in up[p.key].ignored} == {"uptime.not_first",
                                                    "uptime.attester_ineligible"}
    assert [i.author for i in up[q.key].ignored] == [sybil.key]
    # tasks and governance had no points: not minted; nor are the remainders
    minted = 298_784 + 101_215
    assert result.settled.minted_total == result.record.minted == minted
    assert result.settled.emission_burned_total == EMISSION - minted
    assert result.settled.account(p.key).liquid == 298_784
    assert result.settled.supply == prev.supply + minted


def test_sybils_earn_their_subjects_nothing() -> None:
    sybils = [Author(n) for n in range(40, 45)]
    subject = Author(45)
    cut = [s.attest(0, (subject, 10, 10)) for s in sybils]
    cut += [s.receipt(0, subject, task=i, units=1000) for i, s in enumerate(sybils)]
    result = run(start({}, emission=EMISSION), *cut)
    assert result.record.minted == 0 and result.settled.emission_burned_total == EMISSION
    (up,) = lines(result, "uptime").values()
    (tasks,) = lines(result, "tasks").values()
    assert (up.points, up.rule, len(up.ignored)) == (0, "uptime.too_few", 5)
    assert {i.rule for i in up.ignored} == {"uptime.attester_ineligible"}
    assert {i.rule for i in tasks.ignored} == {"tasks.requester_ineligible"}
    assert tasks.points == 0


def test_sybils_earn_nothing_even_with_a_proposal_stake_below_ten() -> None:
    # MIN_ATTEST_STAKE = PS // 10 was 0 for PS < 10: every unstaked account counted.
    prev = start({}, emission=EMISSION)
    tiny = replace(prev.params, governance=replace(prev.params.governance, proposal_stake=5))
    prev = replace(prev, params=tiny, params_after=tiny)
    sybils = [Author(n) for n in range(40, 45)]
    subject = Author(45)
    result = run(prev, *[s.attest(0, (subject, 10, 10)) for s in sybils])
    assert result.record.minted == 0
    (up,) = lines(result, "uptime").values()
    assert {i.rule for i in up.ignored} == {"uptime.attester_ineligible"}


def test_task_points_are_units_capped_per_receipt_and_scaled_per_requester() -> None:
    r1, r2, p1, p2, p3, p4 = (Author(n) for n in range(50, 56))
    prev = start({r1.key: STAKED, r2.key: STAKED}, emission=EMISSION)
    cut = [r1.receipt(0, p1, task=1, units=120),
           r1.receipt(0, p2, task=2, units=2_000_000),  # counts MAX_UNITS_PER_RECEIPT
           r1.receipt(0, p1, task=1, units=500)]  # same task again: ignored
    cut += [r2.receipt(0, p3 if i < 6 else p4, task=100 + i, units=1_000_000)
            for i in range(11)]  # r2 directs 11,000,000 > REQUESTER_UNITS_CAP
    result = run(prev, *cut)
    t = lines(result, "tasks")
    assert MAX_UNITS_PER_RECEIPT == 1_000_000 and REQUESTER_UNITS_CAP == 10_000_000
    scaled = 1_000_000 * 10_000_000 // 11_000_000  # 909090 per receipt of r2
    points = {p1.key: 120, p2.key: 1_000_000, p3.key: 6 * scaled, p4.key: 5 * scaled}
    assert {k: line.points for k, line in t.items()} == points
    total = sum(points.values())
    assert {k: line.amount for k, line in t.items()} == {
        k: 400_000 * v // total for k, v in points.items()}
    assert [i.rule for i in t[p1.key].ignored] == ["tasks.duplicate"]


def test_a_failed_claim_earns_nothing_and_a_jailed_subject_nothing() -> None:
    req, prov, v1, v2, att1, att2 = (Author(n) for n in range(60, 66))
    prev = start({req.key: STAKED, v1.key: STAKED, v2.key: STAKED, att1.key: STAKED,
                  att2.key: STAKED, prov.key: Account(bonded=PS, jailed=True)},
                 emission=EMISSION)
    claim = task_claim(req, prov, task=7, units=10, epoch=0)
    cut = [v1.verdict(0, claim, prov), v2.verdict(0, claim, prov),
           req.receipt(0, prov, task=7, units=10),
           att1.attest(0, (prov, 10, 10)), att2.attest(0, (prov, 10, 10))]
    result = run(prev, *cut)
    assert lines(result, "tasks")[prov.key].ignored[0].rule == "tasks.failed_claim"
    assert lines(result, "uptime")[prov.key].rule == "uptime.subject_jailed"
    assert result.record.minted == 0
    assert result.settled.account(prov.key).bonded == PS - PS // 10


def test_governance_points_are_precommits_for_the_previous_decision() -> None:
    v1, v2, v3, other = (Author(n) for n in range(70, 74))
    prev = start({}, validators=(v1.key, v2.key, v3.key), emission=EMISSION)
    decided = run(prev).settled  # epoch 0 decided in round 1 with value(0)
    cut = [v1.precommit(1, 0, 1, value(0)), v2.precommit(1, 0, 1, value(0)),
           v3.precommit(1, 0, 2, value(0)),  # another round: not the decision
           other.precommit(1, 0, 1, value(9))]
    result = run(decided, *cut)
    gov = lines(result, "governance")
    assert set(gov) == {v1.key, v2.key}
    assert all((line.points, line.amount) == (1, 100_000) for line in gov.values())
    assert result.record.minted == 200_000
    assert lines(run(prev, *cut), "governance") == {}  # epoch 0 has no previous decision


def test_explain_names_the_evidence_and_sums_to_the_minted_amounts() -> None:
    a1, a2, p, sybil = (Author(n) for n in range(80, 84))
    prev = start({a1.key: STAKED, a2.key: STAKED}, emission=EMISSION)
    cut = [a1.attest(0, (p, 40, 39)), a2.attest(0, (p, 60, 59)), sybil.attest(0, (p, 3, 3))]
    result = run(prev, *cut)
    data = explain_json(result.settled)
    for pool in data["pools"]:
        assert pool["minted"] == sum(line["amount"] for line in data["lines"]
                                     if line["pool"] == pool["pool"])
    named = {e["entry"] for line in data["lines"] for e in line["evidence"] + line["ignored"]}
    assert named == {e.hash.hex() for e in cut}
    text = "\n".join(explain_lines(result.settled, short=False))
    assert f"points 975 (uptime.lower_median: lower median of [975 ({accounts.peer_id_of(a1.key)}" \
        in text
    assert "amount 400000 = 400000 · 975 // 975" in text
    assert f"ignored: {accounts.peer_id_of(sybil.key)} entry {cut[2].hash.hex()} " \
           "(uptime.attester_ineligible: bonded 0 < 100)" in text
    assert "not minted: uptime 0, tasks 400000 (no points), governance 200000 (no points)" \
        in text
    assert explain_json(result.settled, account=sybil.key)["lines"] == []
