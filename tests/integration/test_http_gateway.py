"""The REST/JSON gateway on real daemons: the same answers and errors as gRPC, the token
for writes, Server-Sent Events, and bad input refused with a clear HTTP error."""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import grpc
import pytest
import trio
from google.protobuf import json_format

from mesh.ledger.v1 import ledger_pb2, ledger_pb2_grpc
from mesh.network.v1 import network_pb2, network_pb2_grpc
from meshd.http.errors import HTTP_STATUS
from meshd.testing import Network, Node, eventually, open_network

JSON = {"content-type": "application/json"}


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def request(url: str, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> Answer:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()},
                      response.read())
    finally:
        connection.close()


async def call(url: str, method: str, path: str, body: bytes | None = None,
               headers: dict[str, str] | None = None) -> Answer:
    return await trio.to_thread.run_sync(request, url, method, path, body, headers)


async def post(url: str, path: str, message: dict[str, Any], **headers: str) -> Answer:
    return await call(url, "POST", path, json.dumps(message).encode(), {**JSON, **headers})


def grpc_call(node: Node, stub: Any, method: str, message: Any) -> Any:
    with grpc.insecure_channel(f"unix:{node.socket}") as channel:
        return getattr(stub(channel), method)(message, timeout=30)


async def grpc_outcome(node: Node, stub: Any, method: str, message: Any) -> tuple[int, Any]:
    """(HTTP status gRPC's answer maps to, the answer as JSON or the error's message)."""
    try:
        response = await trio.to_thread.run_sync(grpc_call, node, stub, method, message)
    except grpc.RpcError as error:
        return HTTP_STATUS[error.code()], error.details()
    return 200, json_format.MessageToDict(response, always_print_fields_with_no_presence=True)


def token(node: Node) -> str:
    return (node.data_dir / "api.token").read_text().strip()


@dataclass
class Gateway:
    net: Network
    url: str  # node0's


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    async with open_network(tmp_path, 2, epoch_seconds=2,
                            config={"http.listen": "127.0.0.1:0"}) as net:
        url = (await net.nodes[0].status()).http_url
        assert url.startswith("http://127.0.0.1:")
        yield Gateway(net, url)


async def test_reads_and_their_errors_are_the_same_as_over_grpc(gateway: Gateway) -> None:
    a, b = gateway.net.nodes
    cases = [
        ("/mesh.network.v1.NetworkService/GetNetwork", network_pb2_grpc.NetworkServiceStub,
         "GetNetwork", network_pb2.GetNetworkRequest()),
        ("/mesh.ledger.v1.LedgerService/GetBalance", ledger_pb2_grpc.LedgerServiceStub,
         "GetBalance", ledger_pb2.GetBalanceRequest(account=b.peer_id)),
        # Errors: a bad account, an entry that does not exist.
        ("/mesh.ledger.v1.LedgerService/GetBalance", ledger_pb2_grpc.LedgerServiceStub,
         "GetBalance", ledger_pb2.GetBalanceRequest(account="not-a-peer")),
        ("/mesh.ledger.v1.LedgerService/GetEntry", ledger_pb2_grpc.LedgerServiceStub,
         "GetEntry", ledger_pb2.GetEntryRequest(hash="00" * 32)),
        # A bad account's standing (figures that move each epoch are compared in
        # tests/e2e/test_compute.py, across nodes).
        ("/mesh.ledger.v1.LedgerService/GetStanding", ledger_pb2_grpc.LedgerServiceStub,
         "GetStanding", ledger_pb2.GetStandingRequest(account="not-a-peer")),
    ]
    for path, stub, method, message in cases:
        as_json = json_format.MessageToJson(message)
        over_post = await post(gateway.url, path, json.loads(as_json))
        over_get = await call(gateway.url, "GET", f"{path}?message={quote(as_json)}")
        status, expected = await grpc_outcome(a, stub, method, message)
        for answer in (over_post, over_get):
            assert answer.status == status, (path, answer.body)
            if status == 200:
                assert answer.json() == expected
            else:
                assert answer.json()["message"] == expected
                assert answer.headers["content-type"] == "application/json"


async def test_gossip_counters_are_served_with_the_topics(gateway: Gateway) -> None:
    # The ledger's own gossip: entries delivered to the ledger's subscription.
    def delivered(answer: Answer) -> int:
        return int(answer.json()["gossip"]["delivered"])

    path = "/mesh.pubsub.v1.PubsubService/ListTopics"
    first = await call(gateway.url, "GET", path)
    assert first.status == 200 and set(first.json()["gossip"]) == {
        "published", "delivered", "dropped", "publishRefused", "rejected"}
    assert any(t["name"].startswith("ledger/") for t in first.json()["topics"])
    await eventually(lambda: call(gateway.url, "GET", path),
                     lambda answer: delivered(answer) > delivered(first),
                     what="gossip to be delivered")


async def test_every_read_answers_a_get_without_a_body(gateway: Gateway) -> None:
    document = (await call(gateway.url, "GET", "/openapi.json")).json()
    reads = [path for path, operations in document["paths"].items() if "get" in operations
             and "text/event-stream" not in operations["get"]["responses"]["200"]["content"]]
    assert "/mesh.node.v1.NodeService/GetStatus" in reads and len(reads) >= 20
    for path in reads:
        answer = await call(gateway.url, "GET", path)
        # An empty request is valid for most reads; the others say what is missing.
        assert answer.status in (200, 400, 404), (path, answer.body)
        assert answer.status == 200 or answer.json()["code"] in ("invalid_argument",
                                                                   "not_found")


async def test_writes_need_the_token_and_then_do_what_grpc_does(gateway: Gateway) -> None:
    a, b = gateway.net.nodes
    path = "/mesh.ledger.v1.LedgerService/Transfer"
    transfer = {"to": b.peer_id, "amount": "1500000", "memo": "over http"}
    for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": token(a)}):
        refused = await post(gateway.url, path, transfer, **headers)
        assert refused.status == 401 and refused.json()["code"] == "unauthenticated"
        assert "api.token" in refused.json()["message"]
    assert not [e for e in await a.history() if e.memo == "over http"]

    done = await post(gateway.url, path, transfer, authorization=f"Bearer {token(a)}")
    assert done.status == 200, done.body
    entry = done.json()["entry"]
    assert entry["amount"] == "1500000" and entry["memo"] == "over http"
    assert [e.hash for e in await a.history() if e.memo == "over http"] == [entry["hash"]]


async def test_bad_requests_get_clear_http_errors_and_change_nothing(gateway: Gateway) -> None:
    a, b = gateway.net.nodes
    auth = {"authorization": f"Bearer {token(a)}"}
    transfer = "/mesh.ledger.v1.LedgerService/Transfer"
    good = json.dumps({"to": b.peer_id, "amount": "1"}).encode()
    cases = [
        ("malformed JSON", "POST", transfer, b'{"to": ', {**JSON, **auth}, 400),
        ("not an object", "POST", transfer, b"[1, 2]", {**JSON, **auth}, 400),
        ("unknown field", "POST", transfer, b'{"to": "x", "amount": "1", "steal": true}',
         {**JSON, **auth}, 400),
        ("wrong field type", "POST", transfer, b'{"to": 5}', {**JSON, **auth}, 400),
        ("not UTF-8", "POST", transfer, b'{"to": "\xff"}', {**JSON, **auth}, 400),
        ("too deep", "POST", transfer, b"[" * 100_000, {**JSON, **auth}, 400),
        ("wrong content type", "POST", transfer, good, {"content-type": "text/plain", **auth},
         415),
        ("no content type", "POST", transfer, good, auth, 415),
        ("a write by GET", "GET", f"{transfer}?message={quote(good)}", None, auth, 405),
        ("unknown query parameter", "GET", "/mesh.node.v1.NodeService/GetStatus?x=1", None,
         {}, 400),
        ("unknown method", "POST", "/mesh.ledger.v1.LedgerService/Steal", good, JSON, 404),
        ("path traversal", "GET", "/../../../etc/passwd", None, {}, 404),
        ("encoded traversal", "GET", "/%2e%2e/%2e%2e/etc/passwd", None, {}, 404),
        ("bad timeout", "POST", "/mesh.node.v1.NodeService/GetStatus", b"{}",
         {**JSON, "connect-timeout-ms": "soon"}, 400),
    ]
    for what, method, path, body, headers, status in cases:
        answer = await call(gateway.url, method, path, body, headers)
        assert answer.status == status, (what, answer.status, answer.body[:300])
        error = answer.json()
        assert set(error) == {"code", "message"} and error["message"], what
        assert b"Traceback" not in answer.body and b"root:" not in answer.body, what
    # Too large: refused as soon as the declared length says so, or, without one
    # (chunked), once what arrived passes the limit.
    for framing in ("length", "chunked"):
        answer = await trio.to_thread.run_sync(oversized, gateway.url, transfer, auth, framing)
        assert answer.startswith(b"HTTP/1.1 413"), (framing, answer[:200])
        assert b"http.max_body" in answer
    assert not [e for e in await a.history() if e.kind == "transfer"]
    assert (await a.status()).peer_id == a.peer_id  # the node is still serving


def oversized(url: str, path: str, headers: dict[str, str], framing: str) -> bytes:
    """POST 5 MiB; the server may answer (and close) before the body is sent."""
    parts = urlsplit(url)
    body = b" " * (5 << 20)
    head = [f"POST {path} HTTP/1.1", f"Host: {parts.netloc}", "Content-Type: application/json",
            *(f"{k}: {v}" for k, v in headers.items())]
    head.append(f"Content-Length: {len(body)}" if framing == "length"
                else "Transfer-Encoding: chunked")
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        try:
            if framing == "length":
                sock.sendall(body)
            else:
                for start in range(0, len(body), 1 << 16):
                    chunk = body[start:start + (1 << 16)]
                    sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # it answered already
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
            if b"\r\n\r\n" in answer and b"}" in answer:
                break
        return answer


async def test_browsers_of_other_sites_are_refused(tmp_path: Path) -> None:
    allowed = "https://ops.example"
    async with open_network(tmp_path, 1, config={"http.listen": "127.0.0.1:0",
                                                 "http.cors_origins": (allowed,)}) as net:
        url = (await net.nodes[0].status()).http_url
        port = urlsplit(url).port
        status_path = "/mesh.node.v1.NodeService/GetStatus"
        # DNS rebinding: a name that resolves to 127.0.0.1 is not this machine's name.
        rebound = await call(url, "GET", status_path, headers={"host": f"evil.example:{port}"})
        assert rebound.status == 403 and "Host" in rebound.json()["message"]
        foreign = await post(url, status_path, {}, origin="https://evil.example")
        assert foreign.status == 403 and "cors_origins" in foreign.json()["message"]
        same = await post(url, status_path, {}, origin=f"http://127.0.0.1:{port}")
        assert same.status == 200
        preflight = await call(url, "OPTIONS", status_path, headers={
            "origin": allowed, "access-control-request-method": "POST",
            "access-control-request-headers": "content-type,authorization"})
        assert preflight.status == 200, preflight.body
        assert preflight.headers["access-control-allow-origin"] == allowed
        listed = await post(url, status_path, {}, origin=allowed)
        assert listed.status == 200 and listed.headers["access-control-allow-origin"] == allowed


def sse_events(url: str, path: str, count: int) -> Iterator[dict[str, Any]]:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        assert response.status == 200
        assert response.getheader("content-type", "").startswith("text/event-stream")
        seen = 0
        while seen < count:
            line = response.readline().decode()
            if line.startswith("data: "):
                seen += 1
                yield json.loads(line[len("data: "):])
    finally:
        connection.close()


async def test_server_streams_are_server_sent_events(gateway: Gateway) -> None:
    a, _ = gateway.net.nodes
    before = (await a.token_info()).final_epoch
    path = "/mesh.ledger.v1.LedgerService/WatchSettlements"
    events = await trio.to_thread.run_sync(
        lambda: list(sse_events(gateway.url, path, 3)))
    epochs = [int(e["epoch"]) for e in events]
    assert epochs == sorted(epochs) and epochs[-1] > before
    assert all(len(e["root"]) == 64 and int(e["supply"]) > 0 for e in events)
    # A stream's request is checked before it starts, like a unary call's.
    unknown_field = quote(json.dumps({"nope": 1}))
    bad = await call(gateway.url, "GET", f"{path}?message={unknown_field}")
    assert bad.status == 400 and bad.json()["code"] == "invalid_argument"


async def test_writes_without_the_token_on_loopback_when_the_operator_says_so(
        tmp_path: Path) -> None:
    async with open_network(tmp_path, 2, config={"http.listen": "127.0.0.1:0",
                                                 "http.writes_without_token": True}) as net:
        a, b = net.nodes
        url = (await a.status()).http_url
        done = await post(url, "/mesh.ledger.v1.LedgerService/Transfer",
                          {"to": b.peer_id, "amount": "7"})
        assert done.status == 200, done.body
