"""The operator's side of stored files: what ``meshctl storage`` calls on its own node.

Events for this node's operator only (through ``meshctl plugins call``;
peers are refused). docs/storage.md gives their JSON:

* ``LAYOUT``: this node's default k and n.
* ``PUT_STRIPE``: a JSON header line and one stripe. The node codes the
  stripe into n pieces, places them on n holders (placement.py) with
  HOLD_PIECE (naming the file, when the header does, so that holders
  announce the file rather than each piece), and answers each piece's CID,
  Merkle root and holder.
* ``PUT_MANIFEST``: the file's manifest, built by meshctl from the stripes'
  answers. The node keeps it and has up to n holders keep copies.
* ``GET_MANIFEST``: a file CID; the manifest, from this node or any holder
  the DHT names.
* ``GET_STRIPE``: a JSON description of one stripe; the stripe, rebuilt
  from the first k pieces that arrive intact, asked of their holders in
  parallel: the holder that served that piece index of the file before, or
  one of the nodes announcing the file that says it has the piece (HAVE).
* ``READ``: JSON ``{"file", "max_bytes"}``; the whole file, checked against
  its CID, for another plugin on this node (``ctx.call``: the compute
  plugin reads modules so). A sealed file, or one over ``max_bytes``, is
  refused. READ and LAYOUT are the events other plugins may send.
* ``STATUS``: a file CID; which live storage nodes hold each piece (HAVE).
* ``FILES``: the manifests this node keeps (its own files, or all).
* ``HOLDERS``: the storage nodes the DHT knows, with their subnets, what
  this node has seen of their audits (reputation.py) and whether the ledger
  shows them slashed lately.

``REMOVE`` (removal.py) is an operator event too.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import itertools
import json
import os
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

import trio

from mesh_storage import erasure, merkle, unixfs
from mesh_storage.chunks import ChunkStore
from mesh_storage.containment import Containment
from mesh_storage.deliveries import Deliveries
from mesh_storage.erasure import Coding, ErasureError
from mesh_storage.holding import (
    FETCH_NONCE,
    HOLDERS_KEY,
    MAX_HAVE,
    Holding,
    file_cid,
    file_key,
    held_key,
    piece_key,
)
from mesh_storage.manifest import (
    FILE_CID,
    PIECE,
    SEGMENT,
    Manifest,
    ManifestError,
    parse_manifest,
)
from mesh_storage.pieces import CidError, check_piece, digest_hex, piece_cid
from mesh_storage.placement import Candidate, NotEnoughHolders, place, subnet
from mesh_storage.reputation import Reputation, SlashedLately
from meshd.plugin import (
    Context,
    DeadlineExceeded,
    Event,
    InvalidArgument,
    MeshError,
    PeerError,
)

MAX_EVENT_TIMEOUT = 60.0  # meshd's ceiling for a handler
MAX_K, MAX_N = 12, 64  # a stripe (k pieces) must fit in one 4 MiB answer
DEFAULT_K, DEFAULT_N = 4, 8
PIECE_TIMEOUT = 20.0  # seconds for one piece to reach or come back from a holder
PLACE_ROUNDS = 3  # placements tried for a stripe's pieces before the put fails
PLACE_RETRY = 1.0  # seconds before a round that asks again a holder that did not answer
FETCH_PATIENCE = 50.0  # seconds a stripe's rebuild goes on while k pieces have live holders
FETCH_RETRY = 1.0  # seconds before the second pass over missing pieces; doubles, up to
FETCH_RETRY_MAX = 8.0  # this
CANDIDATES_FRESH = 30.0  # seconds a DHT answer of holders is reused
MAX_PROVIDERS = 100
MAX_READ = 16 << 20  # bytes of a file READ hands another plugin whole, in memory
STRIPES_READ_AT_ONCE = 4
LOOKUPS_AT_ONCE = 16  # DHT lookups in flight for one STATUS
LATENCY_WEIGHT = 0.3  # of a new sample in a holder's moving average
HINTS_KEPT = 4096
FAILED_FOR = 30.0  # seconds a holder that failed a fetch is not asked again
SEEN_KEPT = 1 << 18  # (holder, piece) answers of HAVE remembered
SEEN_FOR = 48 * 3600.0  # seconds such an answer counts as the holder's word


@dataclass(frozen=True)
class Audit:
    """The last audit of one piece by this node (audit.py)."""

    epoch: int
    holder: str
    ok: bool
    reason: str = ""  # why it failed
    at: float = 0.0  # trio clock
    # A failure the holder itself showed (it said it holds no such piece, or
    # its proof did not check, or it left a piece it claims unproven in
    # containment.STRIKES epochs), not a moment's silence: evidence for a verdict.
    provable: bool = False
    verdicts: tuple[str, ...] = ()  # failure verdict entries recorded for it (hex)


class Files:
    def __init__(self, ctx: Context, chunks: ChunkStore, holding: Holding,
                 deliveries: Deliveries, k: int, n: int) -> None:
        self.ctx = ctx
        self.chunks = chunks
        self.holding = holding
        self.deliveries = deliveries
        self.default = Coding(k, n)
        self.reputation = Reputation(ctx.data_dir / "reputation.json")
        self.slashed_lately = SlashedLately(ctx.ledger)  # the network's view, from the ledger
        # (holder, piece) left unproven by a holder that claims it (audit.py)
        self.containment = Containment(ctx.data_dir / "containment.json")
        self._candidates: tuple[float, list[Candidate]] = (0.0, [])
        # file CID -> (when, the nodes announcing they hold pieces of it)
        self._file_holders: collections.OrderedDict[str, tuple[float, list[str]]] = \
            collections.OrderedDict()
        self.latency: dict[str, float] = {}  # seconds, a moving average per holder
        self.hints: dict[tuple[str, int], str] = {}  # (file, piece index) -> who served it
        self.failed: dict[str, float] = {}  # holder -> when a fetch from it last failed
        self.audits: dict[str, Audit] = {}  # piece CID -> this node's last audit of it
        self.answered: dict[str, float] = {}  # holder -> when it last answered HAVE
        # (holder, piece CID) -> when it last said it holds the piece, as this node
        # saw: what a CONFIRM_AUDIT may hold a holder to (verdicts.py).
        self.seen: collections.OrderedDict[tuple[str, str], float] = \
            collections.OrderedDict()
        self._last_refusals = ""
        for name, handler in (("PUT_STRIPE", self.put_stripe),
                              ("PUT_MANIFEST", self.put_manifest),
                              ("GET_MANIFEST", self.get_manifest),
                              ("GET_STRIPE", self.get_stripe), ("STATUS", self.status),
                              ("FILES", self.files), ("HOLDERS", self.holders)):
            ctx.on(name, operator_only(ctx, handler), timeout=MAX_EVENT_TIMEOUT)
        # Whole files and the layout for the other plugins on this node too (the
        # compute plugin reads modules so); the rest is for the operator alone.
        for name, handler in (("LAYOUT", self.layout), ("READ", self.read)):
            ctx.on(name, operator_only(ctx, handler), timeout=MAX_EVENT_TIMEOUT,
                   from_plugins=True)

    # --- layout and holders -------------------------------------------------

    async def layout(self, event: Event) -> bytes:
        return _json({"k": self.default.k, "n": self.default.n, "piece": PIECE,
                      "segment": SEGMENT, "max_k": MAX_K, "max_n": MAX_N})

    async def candidates(self, fresh: bool = False) -> list[Candidate]:
        """Storage nodes other than this one, from the DHT (cached briefly)."""
        at, known = self._candidates
        if fresh or not known or trio.current_time() - at > CANDIDATES_FRESH:
            found = await self.ctx.dht.find_providers(HOLDERS_KEY, MAX_PROVIDERS)
            known = [Candidate(p.peer_id, p.addrs) for p in found
                     if p.peer_id != self.ctx.peer_id]
            self._candidates = (trio.current_time(), known)
        return known

    async def shunned(self, holder: str) -> bool:
        """Whether ``holder`` gets new pieces only when no other node can take them: it
        failed this node's audits lately, or the ledger shows it slashed lately."""
        return self.reputation.shunned(holder) or await self.slashed_lately(holder)

    async def holders(self, event: Event) -> bytes:
        connected = set(self.ctx.peers())
        shown = []
        for c in await self.candidates(fresh=True):
            audits = self.reputation.of(c.peer_id)
            slashed = await self.slashed_lately(c.peer_id)
            shown.append({"peer_id": c.peer_id, "addrs": list(c.addrs),
                          "subnet": subnet(c.addrs, c.peer_id),
                          "connected": c.peer_id in connected,
                          "latency_ms": round(self.latency[c.peer_id] * 1000, 2)
                          if c.peer_id in self.latency else None,
                          "audits": audits | {"contained": self.containment.of(c.peer_id),
                                              "shunned": audits["shunned"] or slashed,
                                              "slashed_lately": slashed}})
        return _json(shown)

    # --- put ----------------------------------------------------------------

    async def put_stripe(self, event: Event) -> bytes:
        header, stripe = _header(event.data)
        coding = _coding(header)
        preferred = header.get("holders", [])
        if not isinstance(preferred, list) or not all(isinstance(p, str) for p in preferred):
            raise InvalidArgument("PUT_STRIPE: holders is a list of peer IDs")
        file = header.get("file", "")
        if not isinstance(file, str) or (file and not FILE_CID.fullmatch(file)):
            raise InvalidArgument("PUT_STRIPE: file is the file's CID (bafy…)")
        if not 0 < len(stripe) <= coding.k * PIECE:
            raise InvalidArgument(f"a stripe of k={coding.k} is 1 to {coding.k * PIECE} bytes, "
                                  f"not {len(stripe)}")
        if file:  # put again: no removal sweep may drop its new pieces (removal.py)
            await trio.to_thread.run_sync(self._unremove, file)
        pieces, cids, roots = await trio.to_thread.run_sync(_code, stripe, coding)
        holders = await self._place(pieces, cids, preferred, file)
        candidates = {c.peer_id: c for c in await self.candidates()}
        subnets = {subnet(candidates[h].addrs, h) if h in candidates else h for h in holders}
        return _json({"pieces": cids, "roots": roots, "holders": holders,
                      "subnets": len(subnets)})

    def _unremove(self, file: str) -> None:
        self.holding.removing.remove(file)
        self.holding.removed.remove(file)

    async def _place(self, pieces: list[bytes], cids: list[str], preferred: list[str],
                     file: str) -> list[str]:
        """Each piece of a new stripe on its own holder (piece i on ``preferred[i]`` when it
        can); InvalidArgument when some found none."""
        try:
            placed = await self.place_pieces(dict(enumerate(pieces)), cids, file=file,
                                             owner=self.ctx.peer_id, preferred=preferred)
        except NotEnoughHolders as exc:
            raise InvalidArgument(f"cannot place {len(pieces)} pieces: {exc}; store "
                                  "with a smaller -n") from None
        except MeshError as exc:
            raise InvalidArgument(f"cannot find storage nodes in the DHT: {exc}") from None
        if len(placed) < len(pieces):
            raise InvalidArgument(f"{len(pieces) - len(placed)} of {len(pieces)} pieces found "
                                  f"no holder after {PLACE_ROUNDS} rounds "
                                  f"({self._last_refusals})")
        return [placed[i] for i in range(len(pieces))]

    async def place_pieces(self, pieces: dict[int, bytes], cids: list[str], *, owner: str,
                           file: str = "", preferred: Sequence[str] = (),
                           avoid: Collection[str] = (),
                           partial: bool = False, answered_lately: bool = False
                           ) -> dict[int, str]:
        """Pieces (by index) each on a holder of its own, never ``owner`` nor ``avoid``
        nor a node that failed a moment ago; holders that refuse are replaced, up to
        PLACE_ROUNDS. A holder that did not answer (a stream that failed to open) is
        asked again in the next round, a second later, when no other node is left
        to take its piece: with no spare node, one lost stream would otherwise fail
        the put. Holders are
        told the pieces are of ``file`` (when given). Returns the holder of each
        piece placed.

        With ``answered_lately``, only nodes that answered a HAVE in the last
        FAILED_FOR seconds are chosen (a dead node's provider record outlives it).

        Raises NotEnoughHolders (fewer nodes than pieces; with ``partial``, as many
        as there are nodes are placed) or MeshError (no DHT).
        """
        placed: dict[int, str] = {}
        failed: dict[str, str] = {}  # holder -> why
        refused: set[str] = set()  # said no itself (full, a bad piece): not asked again
        # piece -> the holder that did not answer for it: asked again for that piece
        # only (it may have kept it: never two pieces of a stripe on one node)
        again: dict[int, str] = {}
        for round_ in range(PLACE_ROUNDS):
            todo = [i for i in pieces if i not in placed]
            recently = {p for p in self.failed if self._failed_lately(p)}
            excluded = set(avoid) | refused | set(placed.values()) | recently | {owner}
            candidates = await self.candidates(fresh=round_ > 0)
            if answered_lately:
                now = trio.current_time()
                candidates = [c for c in candidates
                              if now - self.answered.get(c.peer_id, -FAILED_FOR) < FAILED_FOR]
            # A holder that did not answer is asked again only when no other node
            # is left to take its piece (then for that piece only).
            spare = len([c for c in candidates if c.peer_id not in excluded])
            retried = set(again.values()) if spare < len(todo) else set()
            excluded -= retried  # offered back through ``preferred`` below
            if retried:
                await trio.sleep(PLACE_RETRY)
            if partial:
                todo = todo[:len([c for c in candidates if c.peer_id not in excluded])]
                if not todo:
                    break
            wanted = [(again[i] if again.get(i) in retried else "")
                      or (preferred[i] if i < len(preferred) else "") for i in todo]
            if retried - set(wanted):  # a holder asked again for its own piece only
                excluded |= retried - set(wanted)
            plan = place(candidates, len(todo), uploader=owner, avoid=excluded,
                         preferred=wanted,
                         shunned=[c.peer_id for c in candidates
                                  if await self.shunned(c.peer_id)])

            async def send(index: int, holder: str) -> None:
                data = f"{cids[index]} {owner} {file}".strip().encode() + b"\n" + pieces[index]
                try:
                    await self.ctx.request(holder, "HOLD_PIECE", data, timeout=PIECE_TIMEOUT)
                except MeshError as exc:
                    failed[holder] = str(exc)
                    if isinstance(exc, PeerError | DeadlineExceeded) or index in again:
                        refused.add(holder)  # said no, too slow, or lost twice
                        again.pop(index, None)
                    else:
                        again[index] = holder
                    self.failed[holder] = trio.current_time()
                    self.ctx.log.info("a holder refused a piece", extra={
                        "peer_id": holder, "error": str(exc)})
                    return
                placed[index] = holder
                again.pop(index, None)

            async with trio.open_nursery() as nursery:
                for index, holder in zip(todo, plan.holders, strict=True):
                    nursery.start_soon(send, index, holder)
            if len(placed) == len(pieces):
                break
        self._last_refusals = "; ".join(f"{h[:16]}…: {why}"
                                        for h, why in list(failed.items())[:3])
        return placed

    async def put_manifest(self, event: Event) -> bytes:
        try:
            manifest = parse_manifest(event.data)
        except ManifestError as exc:
            raise InvalidArgument(str(exc)) from None
        if manifest.owner != self.ctx.peer_id:
            raise InvalidArgument(f"the manifest's owner is {manifest.owner}, not this node")
        await trio.to_thread.run_sync(functools.partial(
            self.holding.manifests.put, manifest.cid, event.data,
            epoch=self.ctx.ledger.clock_epoch()))
        # Put again after a removal: no longer removed, whoever asks (leftovers.py).
        await trio.to_thread.run_sync(self.holding.tombstones.forget, manifest.cid,
                                      self.ctx.peer_id)
        copies = 0
        candidates = await self.candidates()
        targets = place(candidates, min(manifest.n, len(candidates)),
                        uploader=self.ctx.peer_id).holders

        async def send(holder: str) -> None:
            nonlocal copies
            try:
                await self.ctx.request(holder, "HOLD_MANIFEST", event.data,
                                       timeout=PIECE_TIMEOUT)
                copies += 1
            except MeshError as exc:
                self.ctx.log.info("a holder refused a manifest", extra={
                    "peer_id": holder, "error": str(exc)})

        async with trio.open_nursery() as nursery:
            for holder in targets:
                nursery.start_soon(send, holder)
        if copies == 0 and targets:
            raise InvalidArgument(f"no holder of {len(targets)} took the manifest of "
                                  f"{manifest.cid}; it is kept on this node only")
        try:
            await self.ctx.dht.provide(file_key(manifest.cid))
        except MeshError as exc:
            self.ctx.log.info("could not announce a file", extra={"error": str(exc)})
        return _json({"cid": manifest.cid, "copies": copies})

    # --- get ----------------------------------------------------------------

    async def get_manifest(self, event: Event) -> bytes:
        return (await self.manifest(file_cid(event.data)))[1]

    async def manifest(self, cid: str) -> tuple[Manifest, bytes]:
        """The manifest of file ``cid``: this node's copy, or the first good one a holder has."""
        local = await trio.to_thread.run_sync(self.holding.manifests.get, cid)
        if local is not None:
            return parse_manifest(local), local
        try:
            providers = await self.ctx.dht.find_providers(file_key(cid), MAX_PROVIDERS)
        except MeshError as exc:
            raise InvalidArgument(f"cannot look up file {cid} in the DHT: {exc}") from None
        refusals: list[str] = []
        for provider in providers:
            try:
                data = await self.ctx.request(provider.peer_id, "FETCH_MANIFEST", cid.encode(),
                                              timeout=PIECE_TIMEOUT)
                manifest = parse_manifest(data)
            except (MeshError, ManifestError) as exc:
                refusals.append(str(exc))
                continue
            if manifest.cid == cid:
                return manifest, data
            refusals.append(f"{provider.peer_id} answered the manifest of {manifest.cid}")
        detail = f" ({len(refusals)} holder(s) failed: {refusals[0]})" if refusals else ""
        raise InvalidArgument(f"no node the DHT knows holds file {cid}{detail}")

    async def get_stripe(self, event: Event) -> bytes:
        header, _ = _header(event.data)
        coding = _coding(header)
        file, length, cids = header.get("file"), header.get("length"), header.get("pieces")
        if not isinstance(file, str) or not isinstance(length, int) \
                or not 0 < length <= coding.k * PIECE \
                or not isinstance(cids, list) or len(cids) != coding.n:
            raise InvalidArgument(f"GET_STRIPE takes file, k, n, length (1 to k*{PIECE}) and "
                                  "n piece CIDs")
        try:
            for cid in cids:
                digest_hex(cid)
        except CidError as exc:
            raise InvalidArgument(str(exc)) from None
        return await self.rebuild(file, coding, length, cids)

    async def read(self, event: Event) -> bytes:
        header, _ = _header(event.data)
        cid, most = header.get("file"), header.get("max_bytes")
        if not isinstance(cid, str) or not isinstance(most, int) or isinstance(most, bool) \
                or not 0 < most <= MAX_READ:
            raise InvalidArgument(f"READ takes JSON {{file, max_bytes}}: a file CID and 1 to "
                                  f"{MAX_READ} bytes")
        manifest, _ = await self.manifest(file_cid(cid.encode()))
        if manifest.encrypted:
            raise InvalidArgument(f"file {manifest.cid} is encrypted: only its capability's "
                                  "holder can read it, and this node has no key")
        if manifest.size > most:
            raise InvalidArgument(f"file {manifest.cid} is {manifest.size} bytes, over the "
                                  f"{most} asked for at most")
        stripes: list[bytes] = [b""] * len(manifest.stripes)

        async def one(index: int) -> None:
            stripe = manifest.stripes[index]
            async with limit:
                stripes[index] = await self.rebuild(manifest.cid, manifest.coding,
                                                    stripe.length, list(stripe.pieces))

        limit = trio.CapacityLimiter(STRIPES_READ_AT_ONCE)
        async with trio.open_nursery() as nursery:
            for index in range(len(stripes)):
                nursery.start_soon(one, index)
        data = b"".join(stripes)
        if await trio.to_thread.run_sync(unixfs.file_cid, data) != manifest.cid:
            raise InvalidArgument(f"the pieces of {manifest.cid} do not add up to the file its "
                                  "CID names: its manifest is wrong")
        return data

    async def rebuild(self, file: str, coding: Coding, length: int, cids: list[str]) -> bytes:
        """A stripe from the first k of its pieces that arrive intact; InvalidArgument
        saying how many came when fewer than k do.

        Passes over the missing pieces go on for FETCH_PATIENCE seconds while
        the holders asked say at least k pieces are still out there: a holder
        whose connection is being replaced, or whose provider records went to
        nodes that died since, fails one pass and serves the next.
        """
        got: dict[int, bytes] = {}
        errors: list[str] = []
        live: set[int] = set(range(coding.n))  # pieces with a live holder, as last swept
        if sum((file, i) in self.hints for i in range(coding.n)) < coding.k:
            # A file's first stripes: ask the nodes announcing the file (one DHT
            # lookup per file) which of these pieces they hold. Later stripes
            # follow the holders that served the same piece indices.
            await self._sweep(file, cids, got, among=await self.file_holders(file))
        with trio.move_on_after(FETCH_PATIENCE):
            for round_ in itertools.count():
                if round_:
                    await trio.sleep(min(FETCH_RETRY * 2 ** (round_ - 1), FETCH_RETRY_MAX))
                    live = set(got) | await self._sweep(file, cids, skip=got)
                    if len(live) < coding.k:
                        break  # no pass can find what no live node holds
                await self._fetch_round(file, coding, cids, got, errors, live,
                                        look_up=round_ > 0)
                if len(got) >= coding.k:
                    break
                self.ctx.log.info("a stripe is still short of pieces: trying again", extra={
                    "file": file, "got": len(got), "k": coding.k, "pass": round_ + 1,
                    "error": errors[-1] if errors else ""})
        try:
            return await trio.to_thread.run_sync(erasure.decode, got, coding, length)
        except erasure.NotEnoughPieces:
            where = (f"only {len(live)} have a live holder" if len(live) < coding.k
                     else f"gave up after {FETCH_PATIENCE:g} s")
            detail = "; ".join(dict.fromkeys(errors[-3:]))  # the latest, once each
            raise InvalidArgument(f"only {len(got)} of the {coding.k} pieces needed could be "
                                  f"fetched ({where}; {len(errors)} failures: {detail})"
                                  ) from None
        except ErasureError as exc:
            raise InvalidArgument(str(exc)) from None

    async def _fetch_round(self, file: str, coding: Coding, cids: list[str],
                           got: dict[int, bytes], errors: list[str], live: set[int], *,
                           look_up: bool) -> None:
        """One pass over the missing pieces, k - len(got) at a time: those a live
        holder has first, then data pieces before parity (decoding them is a copy)."""
        queue = sorted((i for i in range(coding.n) if i not in got),
                       key=lambda i: (i not in live, i))

        async def worker(cancel: trio.CancelScope) -> None:
            while queue and len(got) < coding.k:
                index = queue.pop(0)
                piece = await self._piece(file, index, cids[index], errors, look_up=look_up)
                if piece is not None:
                    got[index] = piece
                    if len(got) >= coding.k:
                        cancel.cancel()

        async with trio.open_nursery() as nursery:
            for _ in range(coding.k - len(got)):
                nursery.start_soon(worker, nursery.cancel_scope)

    async def _sweep(self, file: str, cids: list[str], skip: dict[int, bytes],
                     among: Collection[str] | None = None) -> set[int]:
        """Remember where the pieces not yet fetched are, as their holders (every
        storage node, or those ``among``) say now; which of them have a live holder."""
        live: set[int] = set()
        for index, peers in enumerate(await self.who_has(cids, among)):
            if peers and index not in skip:
                live.add(index)
                self.hints[(file, index)] = peers[0]
                for peer in peers:  # it answered just now
                    self.failed.pop(peer, None)
        return live

    async def who_has(self, cids: list[str], among: Collection[str] | None = None,
                      answered: set[str] | None = None) -> list[list[str]]:
        """For each piece, the other storage nodes that answer HAVE for it now;
        ``answered``, if given, gets every node that answered (yes or no).

        Every storage node the DHT names, and every connected peer, is asked
        (LOOKUPS_AT_ONCE at a time; only those ``among``, when given): a
        provider record outlives its holder by up to 48 h, and may not be out
        yet for a piece just stored.
        """
        peers: set[str] = set(among or ())
        if among is None:
            with contextlib.suppress(MeshError):  # no DHT: the connected peers
                peers = {c.peer_id for c in await self.candidates(fresh=True)}
            peers |= set(self.ctx.peers())
        holders: list[list[str]] = [[] for _ in cids]
        limit = trio.CapacityLimiter(LOOKUPS_AT_ONCE)
        # A HAVE names at most MAX_HAVE pieces: a file over ~1 GiB takes several.
        questions = ["\n".join(cids[at:at + MAX_HAVE]).encode()
                     for at in range(0, len(cids), MAX_HAVE)]

        async def ask(peer: str) -> None:
            answer = b""
            async with limit:
                try:
                    for question in questions:
                        answer += await self.ctx.request(peer, "HAVE", question,
                                                         timeout=PIECE_TIMEOUT)
                except MeshError:
                    return  # gone, or not a storage node: it holds nothing to count
            now = trio.current_time()
            self.failed.pop(peer, None)
            self.answered[peer] = now
            if answered is not None:
                answered.add(peer)
            for index, held in enumerate(answer[:len(cids)]):
                if held == 1:
                    holders[index].append(peer)
                    self.saw(peer, cids[index], now)

        async with trio.open_nursery() as nursery:
            for peer in peers - {self.ctx.peer_id}:
                nursery.start_soon(ask, peer)
        return holders

    async def file_holders(self, file: str) -> list[str]:
        """The nodes announcing that they hold pieces of ``file`` (cached briefly);
        none when the DHT cannot be asked."""
        at, known = self._file_holders.get(file, (0.0, []))
        if not known or trio.current_time() - at > CANDIDATES_FRESH:
            try:
                found = await self.ctx.dht.find_providers(held_key(file), MAX_PROVIDERS)
            except MeshError:
                return []
            known = [p.peer_id for p in found if p.peer_id != self.ctx.peer_id]
            self._file_holders[file] = (trio.current_time(), known)
            self._file_holders.move_to_end(file)
            while len(self._file_holders) > HINTS_KEPT:
                self._file_holders.popitem(last=False)
        return known

    def saw(self, holder: str, cid: str, now: float | None = None) -> None:
        """``holder`` said it holds piece ``cid`` (HAVE)."""
        self.seen[(holder, cid)] = trio.current_time() if now is None else now
        self.seen.move_to_end((holder, cid))
        while len(self.seen) > SEEN_KEPT:
            self.seen.popitem(last=False)

    def forget(self, holder: str, cid: str) -> None:
        """``holder`` showed why it no longer holds piece ``cid``: its word is spent."""
        self.seen.pop((holder, cid), None)

    def saw_holding(self, holder: str, cid: str) -> bool:
        """Whether ``holder`` said it holds piece ``cid`` to this node within SEEN_FOR."""
        at = self.seen.get((holder, cid))
        return at is not None and trio.current_time() - at < SEEN_FOR

    async def _piece(self, file: str, index: int, cid: str, errors: list[str], *,
                     look_up: bool) -> bytes | None:
        """Piece ``index`` from this node, the holder that served it last, or (with
        ``look_up``, or when no holder is known) the holders the DHT names.
        Holders that failed a moment ago are not asked again."""
        local = await trio.to_thread.run_sync(self.chunks.get, digest_hex(cid))
        if local is not None:
            return local
        hint = self.hints.get((file, index))
        sources = [hint] if hint and not self._failed_lately(hint) else []
        looked_up = not look_up and hint is not None
        tried: set[str] = set()
        while True:
            sources = [p for p in sources if p not in tried]
            if not sources and not looked_up:
                looked_up = True
                sources = [p for p in await self._providers(cid, errors)
                           if p not in tried and not self._failed_lately(p)]
            if not sources:
                errors.append(f"piece {index}: no holder answered" if tried
                              else f"piece {index}: no live node announces {cid}")
                return None
            peer = sources.pop(0)
            tried.add(peer)
            piece = await self._fetch(peer, cid, errors)
            if piece is not None:
                self.hints[(file, index)] = peer
                while len(self.hints) > HINTS_KEPT:
                    del self.hints[next(iter(self.hints))]
                return piece

    def _failed_lately(self, peer: str) -> bool:
        failed = self.failed.get(peer)
        return failed is not None and trio.current_time() - failed < FAILED_FOR

    async def _providers(self, cid: str, errors: list[str]) -> list[str]:
        try:
            found = await self.ctx.dht.find_providers(piece_key(cid), MAX_PROVIDERS)
        except MeshError as exc:
            errors.append(f"DHT lookup of {cid}: {exc}")
            return []
        peers = [p.peer_id for p in found if p.peer_id != self.ctx.peer_id]
        return sorted(peers, key=lambda p: self.latency.get(p, float("inf")))

    async def fetch_from(self, peer: str, cid: str) -> bytes | None:
        """Piece ``cid`` from ``peer``, checked against its CID; None if it did not send it."""
        return await self._fetch(peer, cid, [])

    async def _fetch(self, peer: str, cid: str, errors: list[str]) -> bytes | None:
        ask = cid.encode() + b" " + os.urandom(FETCH_NONCE)
        fetch = self.deliveries.expect(peer, ask)
        started = time.monotonic()
        piece = None
        try:
            data = await self.ctx.request(peer, "FETCH_PIECE", ask, timeout=PIECE_TIMEOUT)
            check_piece(cid, data)
            piece = data
        except (MeshError, CidError) as exc:
            errors.append(f"{peer}: {exc}")
            self.failed[peer] = trio.current_time()
            if isinstance(exc, CidError):
                self.ctx.log.warning("a holder answered a piece that does not match its CID",
                                     extra={"peer_id": peer, "cid": cid})
        finally:
            self.deliveries.answered(peer, ask, fetch, len(piece) if piece else 0)
        if piece is not None:
            elapsed = time.monotonic() - started
            before = self.latency.get(peer, elapsed)
            self.latency[peer] = before + LATENCY_WEIGHT * (elapsed - before)
        return piece

    # --- status and listing -------------------------------------------------

    async def status(self, event: Event) -> bytes:
        """Which pieces have a live holder: what holders answer now, not what the DHT says."""
        manifest, _ = await self.manifest(file_cid(event.data))
        cids = [cid for stripe in manifest.stripes for cid in stripe.pieces]
        mine = await trio.to_thread.run_sync(
            lambda: [self.chunks.has(digest_hex(cid)) for cid in cids])
        holders = {cid: sorted(others + [self.ctx.peer_id] * held) for cid, others, held
                   in zip(cids, await self.who_has(cids), mine, strict=True)}
        stripes = [{"length": s.length, "healthy": sum(1 for c in s.pieces if holders[c]),
                    "pieces": [{"cid": c, "holders": holders[c], "audit": self._audit(c)}
                               for c in s.pieces]}
                   for s in manifest.stripes]
        return _json({**_summary(manifest), "stripes": stripes})

    def _audit(self, cid: str) -> dict[str, Any] | None:
        audit = self.audits.get(cid)
        if audit is None:
            return None
        return {"epoch": audit.epoch, "holder": audit.holder, "ok": audit.ok,
                "reason": audit.reason, "verdicts": list(audit.verdicts),
                "seconds_ago": round(trio.current_time() - audit.at, 1)}

    async def files(self, event: Event) -> bytes:
        everything = event.data == b"all"
        kept, removing = await trio.to_thread.run_sync(
            lambda: (self.holding.manifests.manifests(), self.holding.removing.manifests()))
        return _json([_summary(m) | {"removing": m in removing} for m in kept + removing
                      if everything or m.owner == self.ctx.peer_id])


def operator_only(ctx: Context, handler: Callable[[Event], Awaitable[bytes]]
                  ) -> Callable[[Event], Awaitable[bytes]]:
    """``handler`` for this node's operator only: a peer's event is refused."""
    async def checked(event: Event) -> bytes:
        if event.peer != ctx.peer_id:
            raise InvalidArgument(f"{event.name} is for this node's operator "
                                  "(meshctl storage), not for peers")
        return await handler(event)
    return checked


def _summary(manifest: Manifest) -> dict[str, Any]:
    return {"cid": manifest.cid, "name": manifest.name, "size": manifest.size,
            "k": manifest.k, "n": manifest.n, "stripes": len(manifest.stripes),
            "owner": manifest.owner, "encrypted": manifest.encrypted}


def _code(stripe: bytes, coding: Coding) -> tuple[list[bytes], list[str], list[str]]:
    pieces = erasure.encode(stripe, coding)
    return (pieces, [piece_cid(p) for p in pieces],
            [merkle.root(p, SEGMENT).hex() for p in pieces])


def _header(data: bytes) -> tuple[dict[str, Any], bytes]:
    line, _, rest = data.partition(b"\n")
    try:
        header = json.loads(line)
    except (UnicodeDecodeError, ValueError):
        header = None
    if not isinstance(header, dict):
        raise InvalidArgument("the event starts with a JSON object on one line")
    return header, rest


def _coding(header: dict[str, Any]) -> Coding:
    k, n = header.get("k"), header.get("n")
    if not isinstance(k, int) or not isinstance(n, int) or isinstance(k, bool) \
            or isinstance(n, bool) or not 1 <= k <= min(n, MAX_K) or n > MAX_N:
        raise InvalidArgument(f"k and n need 1 <= k <= n, k <= {MAX_K}, n <= {MAX_N}; "
                              f"got k={k!r}, n={n!r}")
    return Coding(k, n)


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()
