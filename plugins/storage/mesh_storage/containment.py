"""Silence as evidence: a holder that says it keeps a piece and then does not prove it.

A holder that lost a piece it was paid to keep could escape its slash
(verdicts.py) by never answering an audit of it: a timeout proves nothing
once, as an honest holder may be slow or restarting. So, as Storj's
"containment" does, one unproven challenge is not forgotten. When a holder
that answers (it said ``HAVE`` yes for the piece, to this node, in the same
round) then leaves the challenge unproven (no answer within the deadline,
or a refusal that proves nothing, such as "dropped at its owner's request"
of a piece it has just said it holds), this node *contains* that (holder, piece):
each epoch it asks again, for the same piece, whether or not the beacon
draws it to audit the file that epoch. A pass releases the holder; a holder
that says it holds the piece and leaves it unproven in STRIKES epochs with
no pass between has failed as provably as one that sent a wrong Merkle path, and is
judged the same way (its promise's verdict, confirmed by a second node).
A refusal of this node's Merkle root (what an honest holder answers a
forged manifest, audit.py) is checked against the piece itself, fetched from
the holder: sent whole, it shows whose root is wrong and ends the
containment (the piece is not lost either way); not sent, it is a strike.

A holder that cannot be reached (no connection, no answer to ``HAVE``, a
stream that broke or failed to negotiate) is offline, not silent: the round
neither counts nor releases, and repair and uptime rewards deal with the
absence. Transport failures befall honest holders under load, and slashing
on them would be worse than the hole they leave: a holder that resets the
stream of every audit goes unpaid and is repaired around, but is not
slashed. A holder that answers ``HAVE`` no for a
contained piece denies a piece it claimed: it is judged at once, unless it
shows the owner's signed removal of the file (tombstones.py).

A node asked to ``CONFIRM_AUDIT`` a silence (verdicts.py) contains the holder
itself, with the claim it was asked to confirm, and writes its own verdict
only after its own STRIKES epochs.

On disk: ``containment.json`` in the plugin's data directory, rewritten on
each change, so a restart does not let a holder off.
"""

from __future__ import annotations

import collections
import contextlib
import json
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mesh_storage.chunks import write_atomically

STRIKES = 3  # epochs a claimed piece may stay unproven, with no pass between, before it is lost
KEPT = 65536  # (holder, piece) contained at once; the oldest go first


@dataclass
class Contained:
    """One (holder, piece) this node holds to its claim, and how to challenge it again."""

    holder: str
    piece: str
    file: str
    root: str  # the piece's Merkle root (hex), as this node's manifest had it
    size: int  # the piece's bytes
    segment: int  # the file's segment size
    held_bytes: int  # what a pass is paid for
    strikes: int = 0  # epochs it stayed unproven since it was contained
    epoch: int = -1  # of the last strike
    reason: str = ""  # of the last strike
    # The KEEP report another node asked this one to confirm a failure of (JSON,
    # promises.report_json): judged alone here, with no confirmation asked.
    report: dict[str, Any] | None = None


class Containment:
    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self.held: collections.OrderedDict[tuple[str, str], Contained] = \
            collections.OrderedDict()
        with contextlib.suppress(OSError, ValueError, TypeError):
            for fields in json.loads(path.read_text(encoding="utf-8")):
                with contextlib.suppress(ValueError, TypeError, KeyError):  # skip a bad one
                    entry = Contained(**fields)
                    self.held[(entry.holder, entry.piece)] = entry

    def strike(self, entry: Contained, epoch: int, reason: str) -> Contained:
        """``entry``'s holder left its piece unproven in ``epoch``: the contained entry,
        with its strikes counted once per epoch (a second round in one epoch adds none)."""
        with self._lock:
            known = self.held.get((entry.holder, entry.piece))
            if known is None:
                known = entry
                self.held[(entry.holder, entry.piece)] = known
                while len(self.held) > KEPT:
                    self.held.popitem(last=False)
            if epoch > known.epoch:
                known.strikes += 1
                known.epoch = epoch
            known.reason = reason
            self._save()
            return known

    def release(self, holder: str, piece: str) -> None:
        """``holder`` proved ``piece``, or was judged for it: no longer contained."""
        with self._lock:
            if self.held.pop((holder, piece), None) is not None:
                self._save()

    def hold_to(self, holder: str, piece: str, report: dict[str, Any]) -> None:
        """Judge contained ``(holder, piece)`` on ``report`` (a claim another node asked
        this one to confirm a failure of), with no confirmation asked."""
        with self._lock:
            known = self.held.get((holder, piece))
            if known is not None and known.report is None:
                known.report = report
                self._save()

    def get(self, holder: str, piece: str) -> Contained | None:
        return self.held.get((holder, piece))

    def due(self, epoch: int) -> list[Contained]:
        """The contained pieces not yet challenged in ``epoch``."""
        return [c for c in list(self.held.values()) if c.epoch < epoch]

    def of(self, holder: str) -> int:
        """How many pieces ``holder`` is contained for here (``storage holders``)."""
        return sum(1 for h, _ in list(self.held) if h == holder)

    def _save(self) -> None:
        data = json.dumps([asdict(c) for c in self.held.values()]).encode()
        with contextlib.suppress(OSError):  # a full disk loses containment, not the audit
            write_atomically(self._path, data)
