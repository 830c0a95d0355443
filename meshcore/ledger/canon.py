"""Canonical chains: which entries of a cut take effect (docs/ledger.md §4.1).

An author's canonical chain grows only at settlements and never shrinks. It is
extended over the cut one seq at a time while exactly one candidate builds on
the last canonical entry; two or more candidates freeze the author for ever.
Everything else in the cut (the other branch of a fork, entries beyond a
freeze or a gap) has no effect and stays only as evidence.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from meshcore.ledger.entry import Verified
from meshcore.ledger.state import Settled


@dataclass(frozen=True)
class Extension:
    """The outcome of extending every author's canonical chain over one cut."""

    new: dict[bytes, tuple[Verified, ...]]  # author -> newly canonical entries, by seq
    heads: dict[bytes, tuple[int, bytes]]  # author -> new (canon_seq, canon_head)
    frozen: frozenset[bytes]  # authors frozen by this extension
    old: tuple[Verified, ...]  # entries of the cut canonical already in prev, from heads back

    def newly_canonical(self) -> list[Verified]:
        """The new canonical entries: authors ascending, each in seq order."""
        return [item for author in sorted(self.new) for item in self.new[author]]


def distinct(cut: Iterable[Verified]) -> dict[bytes, Verified]:
    """The cut by entry hash: an entry given twice is one entry."""
    return {item.hash: item for item in cut}


def extend(prev: Settled, entries: dict[bytes, Verified]) -> Extension:
    """Extend the canonical chains of ``prev`` over ``entries`` (hash -> entry).

    Also walks each author's canonical chain back from its head in ``prev``
    through the entries given, so a cut that carries entries already canonical
    (evidence of the epoch written early) lets the caller recognise them.
    """
    candidates: dict[tuple[bytes, int, bytes], list[Verified]] = defaultdict(list)
    authors: set[bytes] = set()
    for item in entries.values():
        candidates[(item.author, item.seq, item.body.prev)].append(item)
        authors.add(item.author)
    new: dict[bytes, tuple[Verified, ...]] = {}
    heads: dict[bytes, tuple[int, bytes]] = {}
    frozen: set[bytes] = set()
    old: list[Verified] = []
    for author in sorted(authors):
        account = prev.account(author)
        old.extend(_walk_back(author, account.canon_head, entries))
        if account.frozen:
            continue
        seq, last = account.canon_seq, account.canon_head
        chain: list[Verified] = []
        while True:
            found = candidates.get((author, seq + 1, last), [])
            if len(found) != 1:
                if len(found) > 1:
                    frozen.add(author)
                break
            chain.append(found[0])
            seq, last = seq + 1, found[0].hash
        if chain:
            new[author] = tuple(chain)
            heads[author] = (seq, last)
    return Extension(new=new, heads=heads, frozen=frozenset(frozen), old=tuple(old))


def _walk_back(author: bytes, head: bytes, entries: dict[bytes, Verified]) -> list[Verified]:
    found: list[Verified] = []
    item = entries.get(head) if head else None
    while item is not None and item.author == author:
        found.append(item)
        item = entries.get(item.body.prev) if item.body.prev else None
    return found
