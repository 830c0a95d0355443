"""meshctl storage: files on the network's storage plugin (plugins/storage).

A file is stored as chunks, each named by its SHA-256, and a manifest chunk
that lists them (plugins/storage/mesh_storage/manifest.py, the template's own
format, imported from its package); the manifest's name is the
file's hash, which ``get`` takes. The storage plugin's PUT_CHUNK and
GET_CHUNK events (reached through PluginsService.CallPlugin) do the storing,
the replication and the finding of chunks on other nodes.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import click
from mesh_storage.manifest import (
    CHUNK_NAME,
    MAX_CHUNK,
    MAX_REPLICAS,
    Manifest,
    ManifestError,
    NotAManifest,
    parse_manifest,
)

from mesh.plugins.v1 import plugins_pb2, plugins_pb2_grpc
from meshctl.client import MeshClient
from meshctl.context import EXIT_INVALID, fail, json_option, with_client
from meshctl.output import emit, fields

PLUGIN = "storage"
CALL_TIMEOUT = 60.0  # a chunk's store with its replicas, or its search over peers


def _call(client: MeshClient, event: str, data: bytes) -> bytes:
    stub = plugins_pb2_grpc.PluginsServiceStub(client.channel())
    request = plugins_pb2.CallPluginRequest(plugin=PLUGIN, event=event, data=data,
                                            timeout_ms=int(CALL_TIMEOUT * 1000))
    return bytes(client.unary(stub.CallPlugin, request, timeout=CALL_TIMEOUT + 5).data)


def _progress(length: int, label: str, quiet: bool) -> Any:
    # Drawn on stderr, and only on a terminal: stdout stays clean for scripts.
    return click.progressbar(length=length, label=label, file=sys.stderr, show_percent=True,
                             width=30, hidden=quiet)


def _chunks(file: BinaryIO) -> Iterator[bytes]:
    while chunk := file.read(MAX_CHUNK):
        yield chunk


@click.group()
def storage() -> None:
    """Store files on the network's storage plugin and get them back by hash."""


@storage.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-r", "--replicas", type=click.IntRange(0, MAX_REPLICAS), default=1,
              show_default=True,
              help="Other nodes that keep a copy of every chunk (each earns a receipt).")
@json_option
@with_client
def put(client: MeshClient, file: Path, replicas: int, as_json: bool) -> None:
    """Store FILE: this node keeps it, REPLICAS other nodes keep copies.

    Prints the file's hash; `meshctl storage get HASH -o FILE` on any node of
    the network gets it back.
    """
    size = file.stat().st_size
    if size == 0:
        fail(f"{file} is empty: there is nothing to store", EXIT_INVALID)
    names: list[str] = []
    whole = hashlib.sha256()
    with file.open("rb") as source, _progress(size, f"storing {file.name}", as_json) as bar:
        for chunk in _chunks(source):
            whole.update(chunk)
            names.append(_call(client, "PUT_CHUNK", bytes([replicas]) + chunk).decode())
            bar.update(len(chunk))
    try:
        manifest = Manifest(file.name, size, whole.hexdigest(), tuple(names)).encode()
    except ManifestError as exc:
        fail(f"{file}: {exc}")
    file_hash = _call(client, "PUT_CHUNK", bytes([replicas]) + manifest).decode()
    emit({"hash": file_hash, "name": file.name, "size": size, "chunks": len(names),
          "replicas": replicas}, as_json, lambda r: r["hash"])


@storage.command()
@click.argument("file_hash", metavar="HASH")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Write the file here (written whole, or not at all).")
@json_option
@with_client
def get(client: MeshClient, file_hash: str, output: Path, as_json: bool) -> None:
    """Get the file stored under HASH (from `storage put`) into --output.

    Chunks come from this node or from any connected node that holds them;
    every chunk and the whole file are checked against their hashes.
    """
    file_hash = file_hash.strip().lower()
    if not CHUNK_NAME.fullmatch(file_hash):
        fail(f"{file_hash!r} is not a file hash (64 hex characters)", EXIT_INVALID)
    manifest = _manifest(_call(client, "GET_CHUNK", file_hash.encode()), file_hash)
    partial = output.with_name(f".{output.name}.part")
    whole = hashlib.sha256()
    try:
        with partial.open("wb") as sink, \
                _progress(manifest.size, f"getting {manifest.name}", as_json) as bar:
            for name in manifest.chunks:
                chunk = _call(client, "GET_CHUNK", name.encode())
                if hashlib.sha256(chunk).hexdigest() != name:
                    fail(f"chunk {name} came back damaged; try again")
                sink.write(chunk)
                whole.update(chunk)
                bar.update(len(chunk))
            sink.flush()
            os.fsync(sink.fileno())
        if whole.hexdigest() != manifest.sha256 or partial.stat().st_size != manifest.size:
            fail(f"the chunks of {file_hash} do not add up to the file its manifest describes")
        partial.replace(output)
    finally:
        partial.unlink(missing_ok=True)
    emit({"hash": file_hash, "name": manifest.name, "size": manifest.size,
          "output": str(output)}, as_json,
         lambda r: fields([("Got", r["name"]), ("Size", f"{r['size']} bytes"),
                           ("Written to", r["output"])]))


def _manifest(data: bytes, file_hash: str) -> Manifest:
    try:
        return parse_manifest(data)
    except NotAManifest:
        fail(f"{file_hash} is a chunk, not a file stored with `meshctl storage put`")
    except ManifestError:
        fail(f"the manifest of {file_hash} is malformed")
