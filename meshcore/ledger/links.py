"""An entry's links to its causal past: prev (own chain) and deps (other authors).

docs/ledger.md §3.2 rules 2 and 3, the parts that need the stored past. A
missing prev or dep is not invalidity: the entry waits until it arrives
(§8.3), so :func:`missing` and :func:`check` are separate.
"""

from __future__ import annotations

from typing import Protocol

from meshcore.ledger.entry import EntryError, Verified


class Linked(Protocol):
    """What a link check needs of a stored entry."""

    @property
    def author(self) -> bytes: ...

    @property
    def seq(self) -> int: ...


class Past(Protocol):
    """Read access to the stored entries."""

    def get(self, entry_hash: bytes) -> Linked | None: ...


def missing(entry: Verified, past: Past) -> list[bytes]:
    """Hashes of ``entry``'s prev and deps that are not stored yet."""
    wanted = ([entry.body.prev] if entry.body.prev else []) + list(entry.body.deps)
    return [h for h in wanted if past.get(h) is None]


def check(entry: Verified, past: Past) -> None:
    """Check the links of ``entry``, whose prev and deps are all stored.

    Raises:
        EntryError: the prev is not the author's entry of seq - 1, or a dep is
            the author's own entry.
    """
    if entry.body.prev:
        prev = past.get(entry.body.prev)
        assert prev is not None, "check() before missing() came back empty"
        if prev.author != entry.author:
            raise EntryError("prev is another author's entry", entry.hash)
        if prev.seq != entry.seq - 1:
            raise EntryError(f"prev has seq {prev.seq}, not {entry.seq - 1}", entry.hash)
    for dep_hash in entry.body.deps:
        dep = past.get(dep_hash)
        assert dep is not None, "check() before missing() came back empty"
        if dep.author == entry.author:
            raise EntryError("a dep is the author's own entry (own entries are reached "
                             "through prev)", entry.hash)
