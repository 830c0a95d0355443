"""meshctl storage: files erasure coded over the network's storage nodes (plugins/storage).

``put`` reads a file twice: once for its IPFS root CID, which names the file
(holders announce the file, not each piece), then stripe by stripe (k * 256
KiB); its node codes each stripe into n pieces and places them on n holders
(PUT_STRIPE). meshctl builds the manifest
(plugins/storage/mesh_storage/manifest.py, imported from the template's
package) from the answers. ``get`` reads the manifest and has its node rebuild each stripe from
any k pieces (GET_STRIPE), then checks the whole file against its CID and
SHA-256. Several stripes are in flight at once, written in order. The
events are reached through PluginsService.CallPlugin (docs/storage.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO

import click
from mesh_storage import sealing, unixfs
from mesh_storage.manifest import (
    FILE_CID,
    PIECE,
    Manifest,
    ManifestError,
    Stripe,
    parse_manifest,
)

from mesh.node.v1 import node_pb2, node_pb2_grpc
from mesh.plugins.v1 import plugins_pb2, plugins_pb2_grpc
from meshctl import capabilities
from meshctl.client import MeshClient
from meshctl.context import EXIT_INVALID, fail, json_option, with_client
from meshctl.output import emit, fields, table

PLUGIN = "storage"
CALL_TIMEOUT = 60.0  # a stripe's placement or rebuilding; meshd's ceiling for a handler
IN_FLIGHT = 3  # stripes sent or asked for at once


def _call(client: MeshClient, event: str, data: bytes) -> bytes:
    stub = plugins_pb2_grpc.PluginsServiceStub(client.channel())
    request = plugins_pb2.CallPluginRequest(plugin=PLUGIN, event=event, data=data,
                                            timeout_ms=int(CALL_TIMEOUT * 1000))
    return bytes(client.unary(stub.CallPlugin, request, timeout=CALL_TIMEOUT + 5).data)


def _call_json(client: MeshClient, event: str, header: Any, data: bytes = b"") -> Any:
    return json.loads(_call(client, event, json.dumps(header).encode() + b"\n" + data))


def _progress(length: int, label: str, quiet: bool) -> Any:
    # Drawn on stderr, and only on a terminal: stdout stays clean for scripts.
    return click.progressbar(length=length, label=label, file=sys.stderr, show_percent=True,
                             width=30, hidden=quiet)


def _pipelined(jobs: Iterator[Callable[[], Any]]) -> Iterator[Any]:
    """Run ``jobs`` IN_FLIGHT at a time; yield their results in order."""
    with ThreadPoolExecutor(IN_FLIGHT) as pool:
        running: deque[Future[Any]] = deque()
        for job in jobs:
            running.append(pool.submit(job))
            if len(running) >= IN_FLIGHT:
                yield running.popleft().result()
        while running:
            yield running.popleft().result()


def _file_cid(text: str) -> str:
    text = text.strip()
    if not FILE_CID.fullmatch(text):
        fail(f"{text[:80]!r} is not a file CID (bafy…/bafk…, as `meshctl storage put` "
             "prints)", EXIT_INVALID)
    return text


@click.group()
def storage() -> None:
    """Store files on the network: erasure coded, content addressed, found through the DHT."""


@storage.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-k", "k", type=click.IntRange(1), default=None,
              help="Pieces any stripe is rebuilt from (default: the node's, 4).")
@click.option("-n", "n", type=click.IntRange(1), default=None,
              help="Pieces per stripe, each on its own holder; any n-k holders may be lost "
                   "(default: the node's, 8).")
@click.option("--encrypt", is_flag=True,
              help="Seal the file here first (AES-256-GCM, a new key for this file): holders "
                   "keep ciphertext only. Prints a capability, CID#key, the only way to read "
                   "the file, and keeps a copy for this user (see --no-keep).")
@click.option("--no-keep", is_flag=True,
              help="With --encrypt: keep no copy of the capability on this machine (it is "
                   "kept in $MESH_CAPABILITIES or ~/.config/mesh/capabilities.json, mode "
                   "0600, so that `storage get CID` here needs no key).")
@json_option
@with_client
def put(client: MeshClient, file: Path, k: int | None, n: int | None, encrypt: bool,
        no_keep: bool, as_json: bool) -> None:
    """Store FILE: each stripe is coded into n pieces on n other nodes.

    Prints the file's CID, the one `ipfs add --cid-version=1` gives the same
    bytes (with --encrypt: the sealed bytes, and a capability CID#key);
    `meshctl storage get CID -o FILE` on any node gets it back.
    """
    if no_keep and not encrypt:
        fail("--no-keep is for a capability: it goes with --encrypt", EXIT_INVALID)
    layout = json.loads(_call(client, "LAYOUT", b""))
    k, n = k or layout["k"], n or layout["n"]
    if not 1 <= k <= n or k > layout["max_k"] or n > layout["max_n"]:
        fail(f"need 1 <= k <= n, k <= {layout['max_k']} and n <= {layout['max_n']}; "
             f"got k={k}, n={n}", EXIT_INVALID)
    size = file.stat().st_size
    if size == 0:
        fail(f"{file} is empty: there is nothing to store", EXIT_INVALID)
    owner = _peer_id(client)
    key = sealing.new_key() if encrypt else None
    step = sealing.plain_stripe_size(k * PIECE) if key else k * PIECE

    def stored_stripes(source: BinaryIO) -> Iterator[bytes]:
        """The file's stripes as holders will keep them (sealed, with --encrypt)."""
        index = 0
        while data := source.read(step):
            yield sealing.seal(key, index, data) if key else data
            index += 1

    # First pass: the CID, named to holders with each piece.
    whole, leaves = hashlib.sha256(), list[unixfs.Node]()
    lengths: list[int] = []
    with file.open("rb") as source, _progress(size, f"hashing {file.name}", as_json) as bar:
        for data in stored_stripes(source):
            lengths.append(len(data))
            whole.update(data)
            leaves.extend(unixfs.leaf(data[i:i + PIECE]) for i in range(0, len(data), PIECE))
            bar.update(min(step, size - (len(lengths) - 1) * step))
    cid = str(unixfs.tree(leaves).cid)

    holders: list[str] = []
    sent, sent_lengths = hashlib.sha256(), list[int]()

    def job(data: bytes) -> Callable[[], Any]:
        sent.update(data)  # in order: jobs are made as the file is read
        sent_lengths.append(len(data))
        return lambda: _call_json(client, "PUT_STRIPE", {"k": k, "n": n, "holders": holders,
                                                         "file": cid}, data)

    stripes: list[Stripe] = []
    subnets = n
    with file.open("rb") as source, _progress(size, f"storing {file.name}", as_json) as bar:
        again = stored_stripes(source)
        head = next(again, b"")
        if not head:
            fail(f"{file} is empty now: it changed while it was being stored")
        first = job(head)()  # placed alone: the other stripes follow its holders
        holders.extend(first["holders"])
        for index, answer in enumerate(_chain(first, _pipelined(job(d) for d in again))):
            subnets = min(subnets, answer["subnets"])
            stripes.append(Stripe(sent_lengths[index], tuple(answer["pieces"]),
                                  tuple(answer["roots"])))
            bar.update(min(step, size - index * step))
    if sent.hexdigest() != whole.hexdigest():
        fail(f"{file} changed while it was being stored: store it again when it is not "
             "being written")
    try:
        manifest = Manifest(file.name, sum(lengths), cid, whole.hexdigest(), k, n, owner,
                            tuple(stripes), encrypted=key is not None).encode()
    except ManifestError as exc:
        fail(f"{file}: {exc}")
    stored = json.loads(_call(client, "PUT_MANIFEST", manifest))
    if subnets < n and not as_json:
        click.echo(f"warning: the pieces of a stripe share subnets ({subnets} distinct for "
                   f"{n} pieces): one site's failure may cost several", err=True)
    result = {"cid": cid, "name": file.name, "size": size, "k": k, "n": n,
              "stripes": len(stripes), "manifest_copies": stored["copies"], "subnets": subnets,
              "encrypted": key is not None}
    if key:
        result["capability"] = sealing.capability(cid, key)
        result["kept_in"] = None if no_keep else _keep(cid, key)
    emit(result, as_json, lambda r: r.get("capability", r["cid"]))
    if key and not as_json:
        click.echo(f"capability kept in {result['kept_in']}: `storage get {cid}` here opens "
                   "the file" if result["kept_in"] else "capability kept nowhere: the line "
                   "above is the only way to read the file", err=True)


def _keep(cid: str, key: bytes) -> str | None:
    """Keep the capability for this user; None (with a warning) if it cannot be."""
    try:
        return str(capabilities.keep(cid, key))
    except capabilities.KeyringError as exc:
        click.echo(f"warning: the capability was not kept ({exc}): save the line printed "
                   "below, it is the only way to read the file", err=True)
        return None


def _chain(first: Any, rest: Iterator[Any]) -> Iterator[Any]:
    yield first
    yield from rest


def _peer_id(client: MeshClient) -> str:
    stub = node_pb2_grpc.NodeServiceStub(client.channel())
    return str(client.unary(stub.GetStatus, node_pb2.GetStatusRequest()).status.peer_id)


@storage.command()
@click.argument("cid", metavar="CID")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Write the file here (written whole, or not at all).")
@json_option
@with_client
def get(client: MeshClient, cid: str, output: Path, as_json: bool) -> None:
    """Get the file named CID (from `storage put`) into --output.

    CID may be a capability, CID#key, for a file stored with --encrypt; a bare
    CID of such a file opens with the capability kept on this machine, if any. Each
    stripe is rebuilt from the first k of its pieces that arrive intact,
    fetched in parallel from their holders anywhere in the network; the whole
    file is checked against its CID and SHA-256.
    """
    try:
        cid, key = sealing.parse_capability(cid)
    except sealing.SealError as exc:
        fail(f"not a capability: {exc}", EXIT_INVALID)
    cid = _file_cid(cid)
    manifest = _manifest(_call(client, "GET_MANIFEST", cid.encode()), cid)
    if manifest.encrypted and key is None:
        try:
            key = capabilities.key_of(cid)
        except capabilities.KeyringError as exc:
            fail(str(exc), EXIT_INVALID)
    if manifest.encrypted and key is None:
        fail(f"{cid} is encrypted: give its capability, CID#key, as `storage put --encrypt` "
             f"printed it (none is kept for it in {capabilities.path()})", EXIT_INVALID)
    if key is not None and not manifest.encrypted:
        fail(f"{cid} is not encrypted: give its CID alone", EXIT_INVALID)
    partial = output.with_name(f".{output.name}.part")
    whole, leaves = hashlib.sha256(), list[unixfs.Node]()
    written = 0

    def job(stripe: Stripe) -> Callable[[], bytes]:
        header = {"file": cid, "k": manifest.k, "n": manifest.n, "length": stripe.length,
                  "pieces": list(stripe.pieces)}
        return lambda: _call(client, "GET_STRIPE", json.dumps(header).encode() + b"\n")

    try:
        with partial.open("wb") as sink, \
                _progress(manifest.size, f"getting {manifest.name}", as_json) as bar:
            for index, (stripe, data) in enumerate(zip(
                    manifest.stripes, _pipelined(job(s) for s in manifest.stripes),
                    strict=True)):
                if len(data) != stripe.length:
                    fail(f"a stripe of {cid} came back {len(data)} bytes, not "
                         f"{stripe.length}; try again")
                whole.update(data)
                leaves.extend(unixfs.leaf(data[i:i + PIECE]) for i in range(0, len(data),
                                                                             PIECE))
                if key is not None:
                    try:
                        data = sealing.open_sealed(key, index, data)
                    except sealing.SealError as exc:
                        fail(str(exc))
                sink.write(data)
                written += len(data)
                bar.update(stripe.length)
            sink.flush()
            os.fsync(sink.fileno())
        if str(unixfs.tree(leaves).cid) != cid or whole.hexdigest() != manifest.sha256:
            fail(f"the pieces of {cid} do not add up to the file its CID names: its manifest "
                 "is wrong")
        partial.replace(output)
    finally:
        partial.unlink(missing_ok=True)
    emit({"cid": cid, "name": manifest.name, "size": written, "output": str(output),
          "encrypted": manifest.encrypted}, as_json,
         lambda r: fields([("Got", r["name"]), ("Size", f"{r['size']} bytes"),
                           ("Written to", r["output"])]))


def _manifest(data: bytes, cid: str) -> Manifest:
    try:
        manifest = parse_manifest(data)
    except ManifestError as exc:
        fail(f"the manifest of {cid} is malformed: {exc}")
    if manifest.cid != cid:
        fail(f"the node answered the manifest of {manifest.cid}, not {cid}")
    return manifest


@storage.command("ls")
@click.option("--all", "everything", is_flag=True,
              help="Every manifest this node keeps, not only its own files.")
@json_option
@with_client
def ls(client: MeshClient, everything: bool, as_json: bool) -> None:
    """The files this node stored (with --all: every manifest it keeps)."""
    files = json.loads(_call(client, "FILES", b"all" if everything else b""))
    emit(files, as_json, lambda rows: table(
        [("CID", "NAME", "SIZE", "K-OF-N", "STRIPES")]
        + [(f["cid"], f["name"] + (" (being removed: rm again)" if f.get("removing") else ""),
            str(f["size"]), f"{f['k']}-of-{f['n']}", str(f["stripes"]))
           for f in rows]) if rows else "no files")


@storage.command()
@click.argument("cid", metavar="CID")
@json_option
@with_client
def status(client: MeshClient, cid: str, as_json: bool) -> None:
    """How healthy file CID is: each stripe's pieces with a reachable holder."""
    report = json.loads(_call(client, "STATUS", _file_cid(cid).encode()))

    def human(r: dict[str, Any]) -> str:
        worst = min(s["healthy"] for s in r["stripes"])
        head = fields([("File", f"{r['name']} ({r['cid']})"), ("Size", f"{r['size']} bytes"),
                       ("Coding", f"{r['k']}-of-{r['n']}"),
                       ("Health", f"{'readable' if worst >= r['k'] else 'NOT READABLE'}: the "
                                  f"weakest stripe has {worst} of {r['n']} pieces")])
        rows = [("STRIPE", "HEALTHY", "HOLDERS")] + [
            (str(i), f"{s['healthy']}/{r['n']}",
             " ".join(str(len(p["holders"])) for p in s["pieces"]))
            for i, s in enumerate(r["stripes"])]
        return head + "\n\n" + table(rows)
    emit(report, as_json, human)


@storage.command()
@click.argument("cid", metavar="CID")
@json_option
@with_client
def rm(client: MeshClient, cid: str, as_json: bool) -> None:
    """Remove file CID from the network (only the node that put it can).

    Every node holding a piece of it drops its pieces (a piece another owner
    stored too stays for them) and every keeper of its manifest drops that,
    so audits and repairs of it stop. When a node cannot be reached, the
    file stays listed here until it is: this node asks again by itself every
    repair period, or run rm again to finish now.
    """
    report = json.loads(_call(client, "REMOVE", _file_cid(cid).encode()))
    emit(report, as_json, lambda r: (
        f"removed {r['cid']}: {r['pieces']} pieces and {r['manifests']} manifest copies "
        f"dropped by {r['answered']} nodes"))
    if not report["removed"]:
        fail(f"{len(report['unreachable'])} of {report['asked']} nodes did not answer "
             f"({', '.join(report['unreachable'][:3])}); they keep what they hold of "
             f"{report['cid']}, and this node keeps its manifest and asks again every repair "
             f"period; to finish sooner, run `meshctl storage rm {report['cid']}` again later")


@storage.command()
@json_option
@with_client
def holders(client: MeshClient, as_json: bool) -> None:
    """The storage nodes this node finds in the DHT, with the subnet each is in.

    AUDITS is what this node has seen of each one's audits: passed/failed
    (failures it proved, or silence about a piece it claims in 3 epochs with
    no pass between); a node that failed lately, or that the ledger shows slashed lately,
    is SHUNNED: given new pieces only when no other node can take them.
    CONTAINED: pieces it claims but left unproven lately, challenged again
    each epoch.
    """
    found = json.loads(_call(client, "HOLDERS", b""))
    emit(found, as_json, lambda rows: table(
        [("PEER", "SUBNET", "CONNECTED", "LATENCY", "AUDITS")]
        + [(h["peer_id"], h["subnet"], "yes" if h["connected"] else "no",
            "-" if h["latency_ms"] is None else f"{h['latency_ms']} ms",
            f"{h['audits']['passed']}/{h['audits']['failed']}"
            + (" SHUNNED" if h["audits"]["shunned"] else "")
            + (f" CONTAINED {h['audits']['contained']}" if h["audits"].get("contained")
               else "")) for h in rows])
        if rows else "no storage nodes found in the DHT yet")
