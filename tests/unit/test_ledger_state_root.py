"""Settled state and its root (docs/ledger.md §4.1, §4.3).

The expected encoding is written out byte by byte from the documented rules
(uvarint integers, length-prefixed bytes, counted lists), not by the code
under test; the root is then pinned as hex so any change of encoding shows.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from meshcore import genesis
from meshcore.ledger import accounts
from meshcore.ledger.record import PoolTotal, Record, RewardLine, reward_record_digest
from meshcore.ledger.state import Account, Params, Settled, genesis_state
from meshcore.ledger.stateroot import encode_state, state_root

K1, K2 = bytes([0x11]) * 32, bytes([0x22]) * 32
VALUE, HEAD = bytes([0xAA]) * 32, bytes([0xCC]) * 32
PINNED_ROOT = "8f4fbb1729cf274f08c7adff361a1dc06cc0d3f50820434faa789e0f83f041b8"


def small_state() -> Settled:
    record = Record(epoch=3, emission=100,
                    pools=(PoolTotal("uptime", 40, 983, 40),),
                    lines=(RewardLine("uptime", K1, 983, 40, "uptime.lower_median"),))
    return Settled(
        epoch=3, network_id="net_x", decided_round=2, decided_value=VALUE,
        supply=1000, minted_total=10, emission_burned_total=5, slashed_total=300,
        record=record, validators=((K1, 1),), validators_after=((K1, 1), (K2, 200)),
        accounts={K1: Account(liquid=5, bonded=7, lots={30: 4, 31: 0}, canon_seq=2,
                              canon_head=HEAD, jailed=True),
                  K2: Account(liquid=0, frozen=True),
                  bytes(32): Account()},  # all zero: left out
        offences=frozenset({b"\x01" + K2}))


def h(tag: bytes, data: bytes) -> bytes:
    return hashlib.sha256(tag + b"\x00" + data).digest()


def test_the_encoding_follows_the_documented_rules() -> None:
    params = (b'{"governance":{"mutable":[' + b",".join(
        b'"' + p.encode() + b'"' for p in sorted(genesis.DEFAULT_MUTABLE))
        + b'],"proposal_stake":100000000,"quorum_percent":33,"threshold_percent":50,'
        b'"veto_percent":33,"voting_period_seconds":604800},"rewards":{"emission_per_epoch":'
        b'1000000000,"epoch_seconds":3600,"split":{"governance":20,"tasks":40,"uptime":40}}}')
    assert 128 <= len(params) < 2**14  # so its length is a two-byte uvarint
    params_length = bytes([len(params) & 0x7F | 0x80, len(params) >> 7])
    # one line: pool byte 1, account (len 32), points 983 = 0xd7 0x07, amount 40
    digest = h(b"mesh/rewards/v1", b"\x01" + b"\x01\x20" + K1 + b"\xd7\x07" + b"\x28")
    expected = b"".join([
        b"\x05net_x", b"\x03", b"\x02", b"\x20" + VALUE,
        b"\xe8\x07", b"\x0a", b"\x05", b"\xac\x02",  # supply 1000, minted, burned, slashed 300
        b"\x20" + digest,
        params_length + params, params_length + params,
        b"\x01" + b"\x20" + K1 + b"\x01",
        b"\x02" + b"\x20" + K1 + b"\x01" + b"\x20" + K2 + b"\xc8\x01",
        b"\x02",  # accounts: K1, K2 (the zero account is left out)
        b"\x20" + K1 + b"\x05\x07" + b"\x01\x1e\x04" + b"\x02" + b"\x20" + HEAD + b"\x01",
        b"\x20" + K2 + b"\x00\x00" + b"\x00" + b"\x00" + b"\x00" + b"\x02",
        b"\x01" + b"\x21\x01" + K2,
        b"\x00\x00",  # community pool, burned deposits
        b"\x00",  # proposals: none
        b"\x00",  # upgrade: none
    ])
    assert encode_state(small_state()) == expected
    assert state_root(small_state()) == h(b"mesh/state/v1", expected)
    assert reward_record_digest(small_state().record) == digest


def test_the_root_is_pinned() -> None:
    assert state_root(small_state()).hex() == PINNED_ROOT


def test_params_are_the_genesis_tables_in_canonical_json() -> None:
    doc = genesis.from_dict({"name": "N", "genesis_time": "2026-01-01T00:00:00Z",
                             "token": {"name": "T", "symbol": "TT"},
                             "rewards": {"emission_per_epoch": 7,
                                         "split": {"uptime": 50, "tasks": 50}}})
    tables = genesis.to_dict(doc)
    expected = json.dumps({"rewards": tables["rewards"], "governance": tables["governance"]},
                          sort_keys=True, separators=(",", ":")).encode()
    assert Params.from_genesis(doc).canonical_json() == expected


def test_genesis_state_has_both_validator_sets_params_and_supply() -> None:
    peer_a = "12D3KooWKCWSgyLv9QfiTbHNxqgmdaoEQwKdf5snKrvxQL9rTBVS"
    doc = genesis.from_dict({
        "name": "N", "genesis_time": "2026-01-01T00:00:00Z",
        "token": {"name": "T", "symbol": "TT", "allocations": [
            {"account": peer_a, "amount": 500},
            {"account": accounts.peer_id_of(K2), "amount": 7}]},
        "validators": [{"peer_id": peer_a, "weight": 3}]})
    settled = genesis_state(doc)
    key = accounts.key_of(peer_a)
    assert settled.epoch == -1 and settled.supply == 507
    assert settled.validators_of(0) == settled.validators_of(1) == ((key, 3),)
    assert settled.params_of(0) == settled.params_of(1) == Params.from_genesis(doc)
    assert settled.network_id == doc.network_id
    assert settled.minted_total == settled.slashed_total == 0 and not settled.offences
    with pytest.raises(ValueError, match="not V"):
        settled.validators_of(2)
    with pytest.raises(ValueError, match="genesis state"):
        state_root(settled)


def test_copy_is_independent() -> None:
    state = small_state()
    other = state.copy()
    other.accounts[K1].lots[30] = 99
    other.accounts[K1].liquid = 0
    assert state.accounts[K1].lots[30] == 4 and state.accounts[K1].liquid == 5


def test_params_carry_the_penalties_table_only_away_from_its_defaults() -> None:
    # At the defaults the encoding (and so every state root) is what it was
    # before the table existed; another rate is in the root.
    assert b"penalties" not in Params().canonical_json()
    harsh = Params(penalties=genesis.PenaltyPolicy(failed_task_bps=2500)).canonical_json()
    assert b'"penalties":{"failed_task_bps":2500}' in harsh
