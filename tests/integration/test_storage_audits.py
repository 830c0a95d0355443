"""Proofs of storage between real daemons: audits are paid, a liar is caught, repair follows."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import trio
from mesh_storage import audit, unixfs, verdicts
from mesh_storage.drawn import AUDIT_FILE, PROMISE
from mesh_storage.holding import Holding
from mesh_storage.manifest import PIECE, Manifest, Stripe
from mesh_storage.pieces import digest_hex
from mesh_storage.plugin import StoragePlugin
from mesh_storage.promises import PromiseStore, report_json
from mesh_storage.tombstones import statement
from mesh_storage.verdicts import CONFIRM, piece_of

from mesh.ledger.v1 import ledger_pb2, ledger_pb2_grpc
from meshcore.ledger import accounts
from meshcore.ledger.evidence_rules import parse_claim
from meshd.plugin import Event, InvalidArgument, MeshError, Unavailable
from meshd.testing import Network, Node, eventually, open_network, plugin_under_test
from tests.integration.test_plugins import Instances
from tests.integration.test_task_reports import bonded, bonded_of, stake

K, N = 2, 3
STRIPES = 20
EPOCH_SECONDS = 5
STAKE = 1_000_000


async def store(owner: Node, data: bytes, *, name_file: bool = True) -> Manifest:
    """What `meshctl storage put` does, through the owner's operator events (naming the
    file to holders, or not, as an older meshctl did)."""
    stripes, holders = [], []
    cid = str(unixfs.root(data[i:i + PIECE] for i in range(0, len(data), PIECE)).cid)
    for start in range(0, len(data), K * PIECE):
        stripe = data[start:start + K * PIECE]
        header = json.dumps({"k": K, "n": N, "holders": holders,
                             **({"file": cid} if name_file else {})}).encode()
        answer = json.loads(await owner.call("storage", "PUT_STRIPE", header + b"\n" + stripe,
                                             timeout=60))
        holders = answer["holders"]
        stripes.append(Stripe(len(stripe), tuple(answer["pieces"]), tuple(answer["roots"])))
    manifest = Manifest("f.bin", len(data), cid, hashlib.sha256(data).hexdigest(), K, N,
                        owner.peer_id, tuple(stripes))
    await owner.call("storage", "PUT_MANIFEST", manifest.encode(), timeout=60)
    return manifest


def keep_receipts(socket: Path) -> int:
    with grpc.insecure_channel(f"unix:{socket}") as channel:
        history = ledger_pb2_grpc.LedgerServiceStub(channel).ListHistory(
            ledger_pb2.ListHistoryRequest(limit=1000), timeout=10)
    return sum(1 for e in history.entries if e.kind == "task_receipt")


async def test_audits_pay_holders_catch_a_silent_deleter_and_lead_to_repair(
        tmp_path: Path) -> None:
    factory = Instances(StoragePlugin)
    made = factory.made

    settings = {"plugins.settings": {"storage": {  # driven by hand
        "repair_every": 3600, "audit_every": 3600}}}
    with trio.fail_after(240):
        async with open_network(tmp_path, 5, plugins=[plugin_under_test("storage", factory)],
                                config=settings, epoch_seconds=EPOCH_SECONDS) as net:
            plugin = {p.ctx.peer_id: p for p in made}
            owner = net.nodes[0]
            auditor = plugin[owner.peer_id]
            await eventually(lambda: len(auditor.ctx.peers()) == 4, timeout=30,
                             what="the owner to see every node")
            await eventually(_all_announced(auditor), timeout=60, what="every holder announced")
            manifest = await store(owner, os.urandom(STRIPES * K * PIECE - 1000))
            holders = sorted({h for h in await auditor.files.who_has(
                [c for s in manifest.stripes for c in s.pieces]) for h in h})
            assert len(holders) == N and owner.peer_id not in holders

            # An honest round: every holder passes, and is paid for keeping.
            receipts_before = await trio.to_thread.run_sync(keep_receipts, owner.socket)
            await auditor.auditor.audit_file(manifest, epoch=1)
            assert sorted({a.holder for a in auditor.files.audits.values() if a.ok}) == holders
            await eventually(lambda: _receipts(owner, receipts_before + N), timeout=30,
                             what="the owner to countersign a KEEP for each holder")

            # Asked to confirm a failure that is none, or asked nonsense, the
            # owner (a keeper of the manifest) says why and writes nothing.
            promise = auditor.auditor.verdicts.claims.promises[(holders[0], manifest.cid)]
            # On disk as well: an auditor that restarts still holds each holder to it.
            reloaded = PromiseStore(auditor.ctx.data_dir / "promises.jsonl", limit=100)
            assert reloaded.promises[(holders[0], manifest.cid)] == promise
            asker = plugin[holders[1]]
            piece = next(c for s in manifest.stripes for c in s.pieces
                         if plugin[holders[0]].chunks.has(digest_hex(c)))
            foreign = next(c for s in manifest.stripes for c in s.pieces
                           if not plugin[holders[0]].chunks.has(digest_hex(c)))
            for asked, why in [
                    ({"piece": piece, "report": report_json(promise)}, "passed this node's audit"),
                    # Claims are public: naming a piece the holder never held frames
                    # no one (it says HAVE no, and never said yes to this node).
                    ({"piece": foreign, "report": report_json(promise)},
                     "has not said it holds"),
                    ({"piece": piece}, "takes JSON {piece, report}"),
                    ({"piece": "nope", "report": report_json(promise)}, "takes JSON"),
                    ({"piece": piece, "report": {**report_json(promise), "kind": "RETRIEVE_FILE"}},
                     "confirms another holder's KEEP report")]:
                try:
                    await asker.ctx.request(owner.peer_id, CONFIRM, json.dumps(asked).encode(),
                                            timeout=60)
                except MeshError as exc:
                    assert why in str(exc), (asked, exc)
                else:
                    raise AssertionError(f"CONFIRM_AUDIT accepted {asked}")

            # One holder deletes 10% of its pieces and goes on saying it has them.
            liar = plugin[holders[0]]
            liar_node = next(n for n in net.nodes if n.peer_id == liar.ctx.peer_id)
            await trio.to_thread.run_sync(stake, liar_node, STAKE)
            await eventually(lambda: bonded(owner, liar_node, STAKE), timeout=60,
                             what="the liar's stake bonded")
            mine = [c for s in manifest.stripes for c in s.pieces
                    if liar.chunks.has(digest_hex(c))]
            deleted = mine[:len(mine) // 10]
            for cid in deleted:
                name = digest_hex(cid)
                (liar.ctx.data_dir / "chunks" / name[:2] / name).unlink()
            claim_still_holding(liar.holding, mine)

            rounds = 0
            while not any(not a.ok for a in auditor.files.audits.values()):
                rounds += 1
                assert rounds <= 200, "200 rounds at p=0.1 miss with probability 7e-10"
                await auditor.auditor.audit_file(manifest, epoch=1 + rounds)
            failed = next(a for a in auditor.files.audits.values() if not a.ok)
            assert failed.holder == liar.ctx.peer_id and "holds no piece" in failed.reason
            # It had promised to keep its pieces of the file (KEEP, above): the
            # auditor's verdict and a second keeper's (which audited the liar
            # itself) slash it 10 % of its stake.
            assert failed.provable and len(failed.verdicts) == 2, failed
            await eventually(lambda: bonded(owner, liar_node, STAKE * 9 // 10), timeout=60,
                             what="the liar slashed on two verdicts")
            # `rewards explain` on an honest holder's node says which piece and
            # segment each KEEP receipt was for (its plugin's note, off the ledger).
            honest = next(n for n in net.nodes if n.peer_id == holders[1])
            notes = await trio.to_thread.run_sync(receipt_notes, honest.socket, holders[1])
            kept = [n for n in notes if n["plugin"] == "storage"
                    and n["note"].startswith("passed the audit of segment ")]
            assert kept, notes
            assert manifest.cid in kept[0]["note"]
            assert any(cid in kept[0]["note"] for s in manifest.stripes for cid in s.pieces
                       if plugin[holders[1]].chunks.has(digest_hex(cid)))
            status = json.loads(await owner.call("storage", "STATUS", manifest.cid.encode(),
                                                 timeout=60))
            shown = [p["audit"] for s in status["stripes"] for p in s["pieces"]
                     if p["audit"] and not p["audit"]["ok"]]
            assert shown and shown[0]["holder"] == liar.ctx.peer_id
            assert shown[0]["verdicts"] == list(failed.verdicts)

            # Repair treats the piece as missing and places it on the node that
            # held nothing of that stripe.
            auditor.repairer.grace = 0
            await auditor.repairer.check(manifest)
            assert auditor.repairer.repaired.pieces >= 1
            spare = next(p for p in plugin.values()
                         if p.ctx.peer_id not in holders and p is not auditor)
            repaired = [c for c in deleted if c in auditor.files.audits
                        and not auditor.files.audits[c].ok]
            assert all(spare.chunks.has(digest_hex(c)) for c in repaired)

            # The liar lost standing with the nodes that saw it fail: `storage
            # holders` says so, and the owner's next file goes to the others.
            assert auditor.files.reputation.shunned(liar.ctx.peer_id)
            standing = {h["peer_id"]: h["audits"] for h in json.loads(
                await owner.call("storage", "HOLDERS", b"", timeout=60))}
            assert standing[liar.ctx.peer_id]["shunned"]
            assert standing[liar.ctx.peer_id]["failed"] >= 1
            assert all(standing[h]["passed"] >= 1 for h in holders if h != liar.ctx.peer_id)
            later = await store(owner, os.urandom(K * PIECE))
            assert not any(liar.chunks.has(digest_hex(c)) for c in later.stripes[0].pieces)


async def test_a_holder_silent_about_a_piece_it_claims_is_contained_then_slashed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Silence as evidence (containment.py): one unproven challenge counts for
    nothing; a holder that claims a piece and leaves it unproven in 3 epochs in a
    row is judged by the auditor, and by each keeper after its own 3 epochs."""
    monkeypatch.setattr(audit, "PIECE_TIMEOUT", 3.0)  # how long silence takes to notice
    monkeypatch.setattr(verdicts, "PIECE_TIMEOUT", 3.0)
    with trio.fail_after(240):
        async with a_file_promised(tmp_path) as (net, owner, auditor, manifest, holders,
                                                  plugins):
            pieces = [c for s in manifest.stripes for c in s.pieces]

            async def silent(event: Event) -> bytes:
                await trio.sleep_forever()
                raise AssertionError("unreachable")

            # An honest holder, slow once, is contained, then released by its next pass.
            slow = holders[1]
            slow.ctx.on("AUDIT", silent)
            await auditor.auditor.audit_file(manifest, epoch=2)
            held = [c for c in pieces if auditor.auditor.containment.get(slow.ctx.peer_id, c)]
            assert len(held) == 1, held
            assert "unproven in 1 of 3 epochs" in auditor.files.audits[held[0]].reason
            slow.ctx.on("AUDIT", slow.auditor.answer)
            await auditor.auditor.recheck(epoch=3)
            assert auditor.auditor.containment.get(slow.ctx.peer_id, held[0]) is None
            assert auditor.files.audits[held[0]].ok
            assert not auditor.files.reputation.holders[slow.ctx.peer_id].failed

            # A staked holder that goes on saying it holds its pieces and answers no audit.
            liar = holders[0]
            liar_node = next(n for n in net.nodes if n.peer_id == liar.ctx.peer_id)
            await trio.to_thread.run_sync(stake, liar_node, STAKE)
            await eventually(lambda: bonded(owner, liar_node, STAKE), timeout=60,
                             what="the liar's stake bonded")
            liar.ctx.on("AUDIT", silent)
            await auditor.auditor.audit_file(manifest, epoch=4)
            piece = next(c for c in pieces
                         if auditor.auditor.containment.get(liar.ctx.peer_id, c))
            again = await auditor.auditor.audit_piece(manifest, liar.ctx.peer_id, piece, 4,
                                                      claimed=True)
            assert "unproven in 1 of 3" in again.reason, again  # counts once an epoch
            standing = {h["peer_id"]: h["audits"] for h in json.loads(
                await owner.call("storage", "HOLDERS", b"", timeout=60))}
            assert standing[liar.ctx.peer_id]["contained"] >= 1
            assert standing[liar.ctx.peer_id]["failed"] == 0
            # On disk: a restart does not let it off.
            assert liar.ctx.peer_id in (auditor.ctx.data_dir / "containment.json").read_text()

            await auditor.auditor.recheck(epoch=5)
            assert "unproven in 2 of 3" in auditor.files.audits[piece].reason
            await auditor.auditor.recheck(epoch=6)
            judged = auditor.files.audits[piece]
            assert judged.provable and "unproven in 3 epochs with no pass" in judged.reason, judged
            assert len(judged.verdicts) == 1, judged  # the keepers asked hold it to it now
            assert auditor.auditor.containment.get(liar.ctx.peer_id, piece) is None
            assert auditor.files.reputation.holders[liar.ctx.peer_id].failed == 1
            assert await trio.to_thread.run_sync(bonded_of, owner, liar_node) == STAKE

            # Each keeper asked to confirm contains the liar itself, with the claim,
            # and writes its own verdict after its own 3 epochs: then it is slashed.
            keepers = [h for h in holders if h is not liar
                       and h.auditor.containment.get(liar.ctx.peer_id, piece)]
            assert keepers, "no keeper was asked to confirm"
            for keeper in keepers:
                entry = keeper.auditor.containment.get(liar.ctx.peer_id, piece)
                assert entry.report is not None and entry.strikes == 1
                for later in (entry.epoch + 1, entry.epoch + 2):
                    await keeper.auditor.recheck(epoch=later)
                assert keeper.auditor.containment.get(liar.ctx.peer_id, piece) is None
                assert keeper.files.audits[piece].verdicts, keeper.files.audits[piece]
            await eventually(lambda: bonded(owner, liar_node, STAKE * 9 // 10), timeout=60,
                             what="the silent liar slashed on two verdicts")

            # The network's view: a node that never audited the liar shuns it too, on
            # the ledger's word (its standing, folded from the settlements).
            spare = next(p for p in plugins if p is not auditor and p not in holders)
            assert liar.ctx.peer_id not in spare.files.reputation.holders

            async def folded() -> bool:
                return (await spare.ctx.ledger.standing(liar.ctx.peer_id)).failed_tasks == 1
            await eventually(folded, timeout=30, what="the slash in the spare's standing")
            assert await spare.files.shunned(liar.ctx.peer_id)
            assert not await spare.files.shunned(slow.ctx.peer_id)
            spare_node = next(n for n in net.nodes if n.peer_id == spare.ctx.peer_id)
            seen = {h["peer_id"]: h["audits"] for h in json.loads(
                await spare_node.call("storage", "HOLDERS", b"", timeout=60))}
            assert seen[liar.ctx.peer_id]["slashed_lately"], seen[liar.ctx.peer_id]
            assert seen[liar.ctx.peer_id]["shunned"] and seen[liar.ctx.peer_id]["failed"] == 0


async def test_a_holder_that_denies_a_piece_it_claimed_is_slashed_unless_the_owner_removed_it(
        tmp_path: Path) -> None:
    """Storj counts "not found" as a failed audit: a holder that says it no longer
    holds a piece it claimed (HAVE no) lost it, unless it shows the removal of the
    file signed by its owner (tombstones.py), as every holder that `rm` reached does."""
    with trio.fail_after(240):
        async with a_file_promised(tmp_path) as (net, owner, auditor, manifest, holders, _):
            pieces = [c for s in manifest.stripes for c in s.pieces]
            promises = auditor.auditor.verdicts.claims.promises
            # The keeper below keeps a copy of the manifest (a copy may fail to land).
            keeper = next(h for h in holders if h.holding.manifests.get(manifest.cid))
            liar, honest = [h for h in holders if h is not keeper]
            liar_node = next(n for n in net.nodes if n.peer_id == liar.ctx.peer_id)
            await trio.to_thread.run_sync(stake, liar_node, STAKE)
            await eventually(lambda: bonded(owner, liar_node, STAKE), timeout=60,
                             what="the liar's stake bonded")

            # The liar loses the piece its promise names, and says so (HAVE no, no
            # handler patched): no removal to show, so it is judged at once, and
            # the keeper asked to confirm checks the same for itself.
            lost = piece_of(promises[(liar.ctx.peer_id, manifest.cid)])
            name = digest_hex(lost)
            (liar.ctx.data_dir / "chunks" / name[:2] / name).unlink()
            with pytest.raises(MeshError, match="keeps no removal"):
                await auditor.ctx.request(liar.ctx.peer_id, "REMOVED", manifest.cid.encode())
            await auditor.auditor.audit_file(manifest, epoch=2)
            failed = auditor.files.audits[lost]
            assert (failed.holder, failed.ok, failed.provable) == (liar.ctx.peer_id, False, True)
            assert "shows no removal of the file signed by its owner" in failed.reason
            assert len(failed.verdicts) == 2, failed
            await eventually(lambda: bonded(owner, liar_node, STAKE * 9 // 10), timeout=60,
                             what="the liar slashed on two verdicts")
            assert auditor.files.reputation.holders[liar.ctx.peer_id].failed == 1

            # An honest holder that dropped the file at `rm` shows the owner's signed
            # removal to a keeper that missed the rm and still audits the file.
            # (The epochs of real rounds from here: a removal counts for claims
            # made up to its epoch.)
            await keeper.auditor.audit_file(manifest, keeper.ctx.ledger.clock_epoch())
            assert (honest.ctx.peer_id, manifest.cid) in keeper.auditor.verdicts.claims.promises

            async def unreachable(event: Event) -> bytes:
                raise Unavailable("down for maintenance")
            keeper.ctx.on("DROP_FILE", unreachable)
            removed = json.loads(await owner.call("storage", "REMOVE", manifest.cid.encode(),
                                                  timeout=60))
            assert removed["unreachable"] == [keeper.ctx.peer_id], removed
            dropped = [c for c in pieces if keeper.files.saw_holding(honest.ctx.peer_id, c)]
            assert dropped and not any(honest.chunks.has(digest_hex(c)) for c in dropped)
            assert keeper.holding.manifests.get(manifest.cid) is not None  # missed the rm
            await keeper.auditor.audit_file(manifest, keeper.ctx.ledger.clock_epoch())
            again = await keeper.auditor.audit_piece(manifest, honest.ctx.peer_id, dropped[0],
                                                     keeper.ctx.ledger.clock_epoch())
            assert not again.ok and not again.provable, again
            assert "removal signed by " + owner.peer_id in again.reason
            assert not keeper.files.reputation.holders[honest.ctx.peer_id].failed
            assert not [a for a in keeper.files.audits.values()
                        if a.holder == honest.ctx.peer_id and a.provable]
            assert (honest.ctx.peer_id, manifest.cid) in keeper.auditor.verdicts.claims.promises
            # The keeper learnt of the removal from it: it no longer keeps the manifest,
            # so it audits and repairs the removed file no more.
            assert keeper.holding.manifests.get(manifest.cid) is None
            assert manifest.cid not in [m.cid for m in keeper.holding.manifests.manifests()]


async def test_a_holder_away_during_rm_drops_the_files_pieces_when_the_owner_says_so(
        tmp_path: Path) -> None:
    """leftovers.py: a holder that missed `rm` (and every sweep after it) asks the owner
    about a file nobody audits on it, and drops what the owner removed; a file the
    owner put again is kept."""
    with trio.fail_after(120):
        async with a_file_promised(tmp_path) as (_, owner, auditor, manifest, holders, _):
            away = holders[0]
            mine = [c for s in manifest.stripes for c in s.pieces
                    if away.chunks.has(digest_hex(c))]
            assert mine and set(mine) <= set(
                await trio.to_thread.run_sync(away.holding.file_pieces.pieces, manifest.cid))

            async def unreachable(event: Event) -> bytes:
                raise Unavailable("down for maintenance")
            away.ctx.on("DROP_FILE", unreachable)
            removed = json.loads(await owner.call("storage", "REMOVE", manifest.cid.encode(),
                                                  timeout=60))
            assert away.ctx.peer_id in removed["unreachable"], removed
            assert all(away.chunks.has(digest_hex(c)) for c in mine)
            assert await away.leftovers.sweep() == 0  # audited lately: not asked about

            # Put again (its manifest, here): the owner forgets its removal, and the
            # holder that was away keeps the pieces.
            await owner.call("storage", "PUT_MANIFEST", manifest.encode(), timeout=60)
            assert owner.peer_id not in auditor.holding.tombstones.get(manifest.cid)
            assert await away.leftovers.sweep(quiet=0) == 0
            assert all(away.chunks.has(digest_hex(c)) for c in mine)

            # Removed again, the away holder missing it again: it asks, and drops them.
            removed = json.loads(await owner.call("storage", "REMOVE", manifest.cid.encode(),
                                                  timeout=60))
            assert away.ctx.peer_id in removed["unreachable"], removed
            assert await away.leftovers.sweep(quiet=0) == len(mine)
            assert not any(away.chunks.has(digest_hex(c)) for c in mine)
            assert manifest.cid not in await trio.to_thread.run_sync(away.holding.held.cids)
            assert manifest.cid not in await trio.to_thread.run_sync(
                away.holding.file_pieces.files)  # not asked about again
            # It keeps the owner's removal, to show an auditor holding it to its promise.
            kept = away.holding.tombstones.get(manifest.cid)[owner.peer_id]
            assert away.ctx.verify(owner.peer_id, statement(manifest.cid, kept.epoch),
                                   kept.signature)


async def test_a_forged_manifest_cannot_have_an_honest_holder_slashed(tmp_path: Path) -> None:
    factory = Instances(StoragePlugin)
    settings = {"plugins.settings": {"storage": {"repair_every": 3600, "audit_every": 3600}}}
    with trio.fail_after(240):
        async with open_network(tmp_path, 5, plugins=[plugin_under_test("storage", factory)],
                                config=settings) as net:
            plugin = {p.ctx.peer_id: p for p in factory.made}
            owner = net.nodes[0]
            auditor = plugin[owner.peer_id]
            await eventually(_all_announced(auditor), timeout=60, what="every holder announced")
            manifest = await store(owner, os.urandom(2 * K * PIECE))
            pieces = [c for s in manifest.stripes for c in s.pieces]
            holder = next(h for h in plugin.values() if h is not auditor
                          and any(h.chunks.has(digest_hex(c)) for c in pieces))
            piece = next(c for c in pieces if holder.chunks.has(digest_hex(c)))

            # An honest audit passes, and the holder's KEEP is its promise.
            passed = await auditor.auditor.audit_piece(manifest, holder.ctx.peer_id, piece, 1)
            assert passed.ok, passed
            promises = auditor.auditor.verdicts.claims.promises
            await eventually(lambda: (holder.ctx.peer_id, manifest.cid) in promises,
                             timeout=30, what="the holder's promise")
            promise = promises[(holder.ctx.peer_id, manifest.cid)]

            # A manifest with another root for the piece: the holder refuses the
            # audit, and the refusal proves nothing.
            s = next(i for i, st in enumerate(manifest.stripes) if piece in st.pieces)
            stripe = manifest.stripes[s]
            at = stripe.pieces.index(piece)
            roots = list(stripe.roots)
            roots[at] = "00" * 32
            forged = dataclasses.replace(manifest, stripes=(
                *manifest.stripes[:s], dataclasses.replace(stripe, roots=tuple(roots)),
                *manifest.stripes[s + 1:]))
            refused = await auditor.auditor.audit_piece(forged, holder.ctx.peer_id, piece, 2)
            assert not refused.ok and not refused.provable, refused
            assert "Merkle root or size of piece" in refused.reason
            assert "is not this piece's" in refused.reason
            # The true root with another stripe length (so another segment count,
            # which an honest path would fail): refused the same way.
            shorter = dataclasses.replace(manifest, stripes=(
                *manifest.stripes[:s], dataclasses.replace(stripe, length=stripe.length // 4),
                *manifest.stripes[s + 1:]))
            refused = await auditor.auditor.audit_piece(shorter, holder.ctx.peer_id, piece, 2)
            assert not refused.ok and not refused.provable, refused

            # A keeper holding that forged manifest, asked to confirm a failure by
            # an accuser, audits the holder itself: nothing to confirm.
            colluder = next(p for p in plugin.values() if p not in (auditor, holder))
            colluder.holding.manifests.remove(manifest.cid)
            colluder.holding.manifests.put(manifest.cid, forged.encode())
            colluder.files.saw(holder.ctx.peer_id, piece)
            ask = json.dumps({"piece": piece, "report": report_json(promise)}).encode()
            with pytest.raises(MeshError, match=r"proved nothing: .*is not this piece's"):
                await auditor.ctx.request(colluder.ctx.peer_id, CONFIRM, ask, timeout=60)

            # A root that is no root is refused with the request's shape.
            with pytest.raises(MeshError, match="the piece's Merkle root and size, separated"):
                await auditor.ctx.request(holder.ctx.peer_id, "AUDIT", (
                    f"{piece} 0 16384 1 100 {manifest.cid} xyz").encode(), timeout=30)

            # Held to the piece it claims (containment.py), a holder that refuses the
            # root is asked for the piece, which says whose root is wrong: the forged
            # manifest's (no strike), or the holder's refusal of a true one (no strike
            # either: it has the piece). Once it has lost the piece, refusing is a strike.
            refused = await auditor.auditor.audit_piece(forged, holder.ctx.peer_id, piece, 3,
                                                        claimed=True)
            assert "shows this node's manifest is not the file's" in refused.reason, refused
            assert auditor.auditor.containment.get(holder.ctx.peer_id, piece) is None

            async def refuse(event: Event) -> bytes:
                raise InvalidArgument(f"the auditor's Merkle root or size of piece {piece} "
                                      f"{audit.NOT_THIS_PIECE}")
            holder.ctx.on("AUDIT", refuse)
            refused = await auditor.auditor.audit_piece(manifest, holder.ctx.peer_id, piece, 3,
                                                        claimed=True)
            assert "refused the piece's true Merkle root, and sent the piece" in refused.reason
            assert auditor.auditor.containment.get(holder.ctx.peer_id, piece) is None
            name = digest_hex(piece)
            (holder.ctx.data_dir / "chunks" / name[:2] / name).unlink()
            refused = await auditor.auditor.audit_piece(manifest, holder.ctx.peer_id, piece, 4,
                                                        claimed=True)
            assert "unproven in 1 of 3 epochs" in refused.reason, refused
            assert auditor.auditor.containment.get(holder.ctx.peer_id, piece) is not None


async def test_the_validators_the_beacon_draws_audit_a_file_and_only_they(
        tmp_path: Path) -> None:
    factory = Instances(StoragePlugin)
    settings = {"plugins.settings": {"storage": {"repair_every": 3600, "audit_every": 3600}}}
    with trio.fail_after(240):
        async with open_network(tmp_path, 5, plugins=[plugin_under_test("storage", factory)],
                                config=settings, epoch_seconds=EPOCH_SECONDS) as net:
            plugin = {p.ctx.peer_id: p for p in factory.made}
            owner = net.nodes[0]
            keeper = plugin[owner.peer_id]  # keeps the manifest: asks the drawn auditors
            await eventually(_all_announced(keeper), timeout=60, what="every holder announced")
            manifest = await store(owner, os.urandom(4 * K * PIECE))
            holders = {h for found in await keeper.files.who_has(
                [c for s in manifest.stripes for c in s.pieces]) for h in found}

            def drawn_now() -> list[str] | None:
                return keeper.auditor.drawn.drawn(manifest.cid, keeper.ctx.ledger.clock_epoch())
            await eventually(lambda: drawn_now() is not None, timeout=60,
                             what="a final epoch to draw the auditors from")
            epoch = keeper.ctx.ledger.clock_epoch()
            drawn = keeper.auditor.drawn.drawn(manifest.cid, epoch)
            assert drawn is not None and len(drawn) == 2
            # Every node draws the same two validators, whoever asks.
            assert all(p.auditor.drawn.drawn(manifest.cid, epoch) == drawn
                       for p in plugin.values())
            others = [p for p in plugin.values() if p.ctx.peer_id not in drawn]

            # A node the beacon did not draw, a past epoch or nonsense: refused, saying why.
            asked = json.dumps({"epoch": epoch, "promises": []}).encode() + b"\n" \
                + manifest.encode()
            stale = json.dumps({"epoch": epoch - 3, "promises": []}).encode() + b"\n" \
                + manifest.encode()
            for to, data, why in [(others[0].ctx.peer_id, asked, "did not draw this node"),
                                  (drawn[0], stale, f"epoch {epoch - 3} is not this one"),
                                  (drawn[0], b"nonsense", "takes a JSON header line")]:
                sender = next(p for p in plugin.values() if p.ctx.peer_id != to)
                with pytest.raises(MeshError, match=why):
                    await sender.ctx.request(to, AUDIT_FILE, data, timeout=30)

            # The keeper's round: the drawn validators audit every holder (but
            # themselves) and hand the promises they countersigned back to it.
            await keeper.auditor.round(epoch)

            def audited_by(p: StoragePlugin) -> set[str]:
                pieces = {c for s in manifest.stripes for c in s.pieces}
                return {a.holder for c, a in p.files.audits.items() if c in pieces and a.ok}

            for auditor in drawn:
                await eventually(lambda a=auditor: audited_by(plugin[a]) == holders - {a},
                                 timeout=60, what=f"{auditor} to audit the file's holders")
            assert all(not audited_by(p) for p in others)

            def promises() -> dict[str, str]:  # holder -> who countersigned its promise
                return {holder: accounts.peer_id_of(parse_claim(r.claim).requester)
                        for (holder, file), r in keeper.auditor.verdicts.claims.promises.items()
                        if file == manifest.cid and parse_claim(r.claim) is not None}
            await eventually(lambda: set(promises()) == holders, timeout=60,
                             what="the keeper to hold every holder to a promise")
            assert set(promises().values()) <= set(drawn)

            # Promises come back from drawn auditors only.
            promise = next(iter(keeper.auditor.verdicts.claims.promises.values()))
            stranger = next(p for p in others if p is not keeper)
            with pytest.raises(MeshError, match="was not drawn to audit"):
                await stranger.ctx.request(owner.peer_id, PROMISE,
                                           json.dumps(report_json(promise)).encode(),
                                           timeout=30)


def receipt_notes(socket: Path, account: str) -> list[dict[str, str]]:
    """The notes ``rewards explain`` shows for ``account`` in every final epoch."""
    with grpc.insecure_channel(f"unix:{socket}") as channel:
        stub = ledger_pb2_grpc.LedgerServiceStub(channel)
        final = stub.GetStateRoot(ledger_pb2.GetStateRootRequest(), timeout=10).epoch
        notes: list[dict[str, str]] = []
        for epoch in range(final + 1):
            explained = stub.ExplainRewards(ledger_pb2.ExplainRewardsRequest(
                epoch=epoch, account=account), timeout=10)
            record = json.loads(explained.record_json)
            notes += record["notes"].values()
            assert len(record["notes"]) == sum("…: " in line for line in explained.lines
                                               if line.startswith("  entry "))
    return notes


@contextlib.asynccontextmanager
async def a_file_promised(tmp_path: Path) -> AsyncIterator[
        tuple[Network, Node, StoragePlugin, Manifest, list[StoragePlugin],
              list[StoragePlugin]]]:
    """5 storage nodes (audits and repairs driven by hand); the first puts a file of
    4 stripes on N holders and audits it once, so that every holder has promised to
    keep its pieces: (network, owner node, owner's plugin, manifest, holders, every
    node's plugin)."""
    factory = Instances(StoragePlugin)
    settings = {"plugins.settings": {"storage": {"repair_every": 3600, "audit_every": 3600}}}
    async with open_network(tmp_path, 5, plugins=[plugin_under_test("storage", factory)],
                            config=settings, epoch_seconds=EPOCH_SECONDS) as net:
        plugin = {p.ctx.peer_id: p for p in factory.made}
        owner = net.nodes[0]
        auditor = plugin[owner.peer_id]
        await eventually(_all_announced(auditor), timeout=60, what="every holder announced")
        manifest = await store(owner, os.urandom(4 * K * PIECE))
        pieces = [c for s in manifest.stripes for c in s.pieces]
        holders = [p for p in plugin.values() if p is not auditor
                   and any(p.chunks.has(digest_hex(c)) for c in pieces)]
        assert len(holders) == N
        await auditor.auditor.audit_file(manifest, epoch=1)  # every holder's promise
        promises = auditor.auditor.verdicts.claims.promises
        await eventually(lambda: all((h.ctx.peer_id, manifest.cid) in promises
                                     for h in holders), timeout=30,
                         what="every holder's promise")
        yield net, owner, auditor, manifest, holders, list(plugin.values())


def claim_still_holding(holding: Holding, pieces: list[str]) -> None:
    """HAVE goes on answering yes for every piece it was given: only an audit can tell."""
    claimed = {cid.encode() for cid in pieces}

    async def have(event: Event) -> bytes:
        return bytes(cid in claimed for cid in event.data.split(b"\n"))
    holding.ctx.on("HAVE", have)  # replaces the honest handler


def _all_announced(plugin: StoragePlugin) -> Any:
    async def probe() -> bool:
        return len(await plugin.files.candidates(fresh=True)) == 4
    return probe


async def _receipts(node: Node, at_least: int) -> bool:
    return await trio.to_thread.run_sync(keep_receipts, node.socket) >= at_least
