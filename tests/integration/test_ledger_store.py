"""The entry store: links checked, durable group commit, append-only, verify."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mesh.ledger.v1 import ledger_pb2
from meshcore.ledger import entry, rules
from meshcore.ledger.entry import EntryError, Verified
from meshcore.ledger.state import Account, Settled
from meshd.ledger.committer import GroupCommitter
from meshd.ledger.store import Head, LedgerStore, PastMissing, heads_digest
from tests.properties import examples

NET = "net_pbveuy5e75bdsw3e25x4g2rviy"
ALICE, BOB = bytes(range(1, 33)), bytes(range(2, 34))


class Rich(Settled):
    """A genesis in which every account holds enough to pay for these tests."""

    def account(self, key: bytes) -> Account:
        return Account(liquid=10**9)


JUDGE = rules.judge_with(lambda fin: Rich(epoch=-1))


def open_store(directory: Path) -> LedgerStore:
    return LedgerStore.in_dir(directory, NET, JUDGE)


class Author:
    """Writes a well-formed chain of transfers, as an honest node would."""

    def __init__(self, seed: bytes) -> None:
        self.seed = seed
        self.key = entry.public_key(seed)
        self.head: Verified | None = None

    def next(self, deps: list[bytes] | None = None, seq: int | None = None,
             prev: bytes | None = None) -> Verified:
        body = ledger_pb2.EntryBody(
            network_id=NET, author=self.key,
            seq=seq if seq is not None else (self.head.seq + 1 if self.head else 1),
            prev=prev if prev is not None else (self.head.hash if self.head else b""),
            deps=sorted(deps or []), transfer=ledger_pb2.Transfer(to=bytes(32), amount=1))
        made = entry.verify(entry.sign(self.seed, body), NET)
        self.head = made
        return made


async def committed(store: LedgerStore, *items: Verified) -> list[EntryError | None]:
    committer = GroupCommitter(store)
    results: list[EntryError | None] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(committer.run)
        for item in items:
            try:
                await committer.append(item)
                results.append(None)
            except EntryError as exc:
                results.append(exc)
        nursery.cancel_scope.cancel()
    return results


async def test_appended_entries_survive_reopening_and_verify(tmp_path: Path) -> None:
    alice, bob = Author(ALICE), Author(BOB)
    a1, a2 = alice.next(), alice.next()
    b1 = bob.next(deps=[a2.hash])
    store = open_store(tmp_path)
    assert await committed(store, a1, a2, b1, a2) == [None] * 4  # a2 twice: idempotent
    store.close()
    again = open_store(tmp_path)
    assert again.count() == 3
    assert [v.hash for v in again.by_author(alice.key)] == [a1.hash, a2.hash]
    assert again.get(b1.hash) == b1 and again.last_seq(bob.key) == 1
    assert again.verify() == (3, None)


async def test_missing_past_and_bad_links_are_refused_and_not_stored(tmp_path: Path) -> None:
    alice, bob = Author(ALICE), Author(BOB)
    a1, a2 = alice.next(), alice.next()
    b1 = bob.next()
    wrong_seq = alice.next(seq=5, prev=a1.hash)          # prev's seq is 1, not 4
    others_prev = bob.next(seq=2, prev=a1.hash)           # prev is alice's entry
    own_dep = alice.next(seq=3, prev=a2.hash, deps=[a1.hash])  # own entry as a dep
    store = open_store(tmp_path)
    results = await committed(store, a2, a1, a2, b1, wrong_seq, others_prev, own_dep)
    assert isinstance(results[0], PastMissing) and results[0].hashes == [a1.hash]
    assert results[1:4] == [None, None, None]  # a2 goes in once its prev is there
    assert "seq 1, not 4" in str(results[4])
    assert "another author" in str(results[5])
    assert "own entry" in str(results[6])
    assert store.count() == 3


async def test_concurrent_appends_share_durable_commits(tmp_path: Path) -> None:
    authors = [Author(bytes([i]) * 32) for i in range(1, 101)]
    firsts = [a.next() for a in authors]
    store = open_store(tmp_path)
    committer = GroupCommitter(store)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(committer.run)
            async with trio.open_nursery() as appenders:
                for item in firsts:
                    appenders.start_soon(committer.append, item)
            nursery.cancel_scope.cancel()
    assert committer.appended == 100 and store.count() == 100
    assert committer.batches < 10  # grouped, not one transaction each


def test_the_store_is_append_only(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.insert([Author(ALICE).next()])
    db = sqlite3.connect(store.path)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("UPDATE entries SET seq = 9")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("DELETE FROM entries")
    assert store.count() == 1


def test_verify_names_the_first_tampered_entry(tmp_path: Path) -> None:
    alice = Author(ALICE)
    chain = [alice.next() for _ in range(5)]
    store = open_store(tmp_path)
    assert store.insert(chain) == [None] * 5
    # Someone edits the file behind meshd's back (past the triggers): entry 3's amount.
    db = sqlite3.connect(store.path)
    db.execute("DROP TRIGGER entries_no_update")
    tampered = chain[2].raw.replace(b"\x10\x01", b"\x10\x02")
    db.execute("UPDATE entries SET raw = ? WHERE hash = ?", (tampered, chain[2].hash))
    db.commit()
    checked, bad = store.verify()
    assert checked == 2 and bad is not None
    assert (bad.rowid, bad.hash, bad.author, bad.seq) == (3, chain[2].hash, alice.key, 3)
    assert "signature does not verify" in bad.reason


class Poor(Settled):
    def account(self, key: bytes) -> Account:
        return Account(liquid=1)


def test_an_entry_that_breaks_a_rule_is_refused_and_not_stored(tmp_path: Path) -> None:
    store = LedgerStore.in_dir(tmp_path, NET, rules.judge_with(lambda fin: Poor(epoch=-1)))
    alice = Author(ALICE)
    first, overspend = alice.next(), alice.next()  # each pays 1; alice holds 1
    results = store.insert([first, overspend])
    assert results[0] is None and "exceeds the author's available balance" in str(results[1])
    assert store.count() == 1 and store.heads() == [Head(alice.key, 1, first.hash)]


def test_heads_and_chains_follow_forks(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    alice = Author(ALICE)
    a1, a2, a3 = alice.next(), alice.next(), alice.next()
    b1 = Author(BOB).next()
    fork = Author(ALICE).next(seq=3, prev=a2.hash, deps=[b1.hash])  # a second seq 3
    assert store.insert([a1, a2, a3, b1, fork]) == [None] * 5
    assert {h.hash for h in store.heads()} == {a3.hash, fork.hash, b1.hash}
    assert store.heads(after_author=min(alice.key, b1.author), limit=5) == [
        h for h in store.heads() if h.author > min(alice.key, b1.author)]
    chain, more = store.chain(fork.hash, 1, limit=10, max_bytes=1 << 20)
    assert chain == [a1.raw, a2.raw, fork.raw] and not more
    chain, more = store.chain(a3.hash, 2, limit=1, max_bytes=1 << 20)
    assert chain == [a2.raw] and more
    assert store.chain(bytes(32), 1, 10, 1 << 20) == ([], False)


def test_derived_values_are_rebuilt_when_missing(tmp_path: Path) -> None:
    alice = Author(ALICE)
    chain = [alice.next() for _ in range(4)]
    store = open_store(tmp_path)
    store.insert(chain[:3])
    before = store.derived(chain[2].hash)
    store.close()
    db = sqlite3.connect(tmp_path / "ledger.sqlite")
    db.execute("DELETE FROM derived_rows")
    db.execute("DELETE FROM heads")
    db.commit()
    again = open_store(tmp_path)
    assert again.derived(chain[2].hash) == before and before is not None
    assert before.debit == 3
    assert again.insert([chain[3]]) == [None]
    assert again.heads() == [Head(alice.key, 4, chain[3].hash)]


def test_derived_values_kept_by_hash_before_are_moved_to_rows(tmp_path: Path) -> None:
    alice = Author(ALICE)
    chain = [alice.next() for _ in range(4)]
    store = open_store(tmp_path)
    store.insert(chain[:3])
    before = [store.derived(e.hash) for e in chain[:3]]
    store.close()
    # The table as stores made before 2026-12-07 have it.
    db = sqlite3.connect(tmp_path / "ledger.sqlite")
    db.executescript("""
        CREATE TABLE derived (hash BLOB PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
        INSERT INTO derived SELECT e.hash, d.value FROM entries e
            JOIN derived_rows d ON d.row = e.rowid;
        DROP TABLE derived_rows;""")
    db.close()
    again = open_store(tmp_path)
    assert [again.derived(e.hash) for e in chain[:3]] == before and None not in before
    assert again.insert([chain[3]]) == [None]  # its prev's derived values found
    assert again.derived(chain[3].hash).debit == 4  # type: ignore[union-attr]
    tables = {r[0] for r in again._db.execute("SELECT name FROM sqlite_master")}
    assert "derived" not in tables and "derived_rows" in tables
    assert again.verify() == (4, None)


@settings(max_examples=examples(25),
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32))
def test_any_arrival_order_stores_the_same_entries(tmp_path_factory: pytest.TempPathFactory,
                                                   seed: int) -> None:
    """Entries (chains, deps across authors, a fork) fed in any order and any
    batch split, retrying what waits for its past as replication does, give
    the same stored set and heads (docs/ledger.md §10 test 2)."""
    rng = random.Random(seed)
    authors = [Author(bytes([i]) * 32) for i in range(1, 4)]
    made: list[Verified] = []
    for _ in range(12):
        author = rng.choice(authors)
        others = [e.hash for e in made if e.author != author.key]
        made.append(author.next(deps=rng.sample(others, min(len(others), rng.randint(0, 2)))))
    forker = next(a for a in authors if a.head is not None)
    tip = forker.head
    assert tip is not None
    # A second body for the forker's newest seq: same prev, another amount.
    body = ledger_pb2.EntryBody(network_id=NET, author=forker.key, seq=tip.seq,
                                prev=tip.body.prev, deps=list(tip.body.deps),
                                transfer=ledger_pb2.Transfer(to=bytes(32), amount=2))
    made.append(entry.verify(entry.sign(forker.seed, body), NET))
    orders = [made, list(reversed(made)), rng.sample(made, len(made))]
    digests = []
    for index, order in enumerate(orders):
        store = open_store(tmp_path_factory.mktemp(f"order{index}"))
        waiting = list(order)
        while waiting:
            cut = rng.randint(1, len(waiting))
            results = store.insert(waiting[:cut])
            retry = [e for e, r in zip(waiting[:cut], results, strict=True)
                     if isinstance(r, PastMissing)]
            assert all(r is None or isinstance(r, PastMissing) for r in results)
            waiting = waiting[cut:] + retry
            if len(retry) == cut and cut == len(waiting):
                rng.shuffle(waiting)
        digests.append((store.count(), heads_digest(store.heads())))
        store.close()
    assert len(set(digests)) == 1 and digests[0][0] == len(made)
