"""The gateway's parts without a daemon: who may call, the method table, the OpenAPI document."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from meshd.api.server import API
from meshd.http.access import Access
from meshd.http.errors import GatewayError
from meshd.http.methods import method_table
from meshd.http.openapi import document


class Servicer:
    def __getattr__(self, name: str) -> Any:
        return lambda request, context: None


def table() -> dict[str, Any]:
    return method_table({api.descriptor: Servicer() for api in API})


def refused(check: Any, *args: Any) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        check(*args)
    return caught.value


def test_loopback_serves_reads_to_anyone_and_writes_with_the_token() -> None:
    access = Access("s3cret-token-0123", loopback=True, scheme="http")
    access.check_call(True, {})
    assert refused(access.check_call, False, {}).status == 401
    assert refused(access.check_call, False, {"authorization": "Bearer nope"}).status == 401
    access.check_call(False, {"authorization": "Bearer s3cret-token-0123"})
    Access("t", loopback=True, scheme="http", writes_without_token=True).check_call(False, {})


def test_elsewhere_every_call_needs_the_token() -> None:
    access = Access("s3cret-token-0123", loopback=False, scheme="https")
    for read in (True, False):
        error = refused(access.check_call, read, {})
        assert error.status == 401 and error.code == grpc.StatusCode.UNAUTHENTICATED
        assert "every call" in error.message
        access.check_call(read, {"authorization": "Bearer s3cret-token-0123"})
    # No Host check where the token is required anyway (a DNS name is normal there).
    access.check_browser({"host": "node.example:8443"})


@pytest.mark.parametrize("host", ["127.0.0.1:8080", "localhost:8080", "[::1]:8080",
                                  "127.0.0.1", "10.0.0.5:8080"])
def test_loopback_answers_ip_literals_and_localhost(host: str) -> None:
    Access("t", loopback=True, scheme="http").check_browser({"host": host})


@pytest.mark.parametrize("host", ["evil.example:8080", "evil.example", "", "127.0.0.1.nip.io"])
def test_loopback_refuses_other_names_dns_rebinding(host: str) -> None:
    error = refused(Access("t", loopback=True, scheme="http").check_browser, {"host": host})
    assert error.status == 403


def test_origins_same_or_listed_only() -> None:
    access = Access("t", loopback=True, scheme="http", cors_origins=("https://ops.example",))
    host = {"host": "127.0.0.1:8080"}
    access.check_browser({**host, "origin": "http://127.0.0.1:8080"})
    access.check_browser({**host, "origin": "https://ops.example"})
    for origin in ("http://evil.example", "null", "https://127.0.0.1:8080"):
        assert refused(access.check_browser, {**host, "origin": origin}).status == 403


def test_the_table_has_every_method_and_reads_come_from_proto() -> None:
    methods = table()
    expected = sum(len(api.descriptor.methods) for api in API)
    assert len(methods) == expected
    reads = {m.name for m in methods.values() if m.read}
    writes = {m.name for m in methods.values() if not m.read}
    assert {"GetStatus", "GetBalance", "ListPeers", "WatchSettlements"} <= reads
    assert {"Transfer", "Stake", "Vote", "Propose", "CallPlugin", "SubmitTask", "BlockPeer",
            "Publish", "Subscribe", "PutValue", "Provide"} <= writes
    assert all(m.path == f"/{m.service}/{m.name}" for m in methods.values())


def _refs(value: Any) -> set[str]:
    if isinstance(value, dict):
        found = {value["$ref"]} if "$ref" in value else set()
        return found.union(*(_refs(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(_refs(v) for v in value))
    return set()


def test_the_openapi_document_covers_every_method_and_resolves() -> None:
    methods = table()
    doc = document(methods)
    assert set(doc["paths"]) == set(methods)
    schemas = doc["components"]["schemas"]
    for ref in _refs(doc):
        assert ref.removeprefix("#/components/schemas/") in schemas, ref
    for path, method in methods.items():
        operations = doc["paths"][path]
        assert set(operations) == ({"get", "post"} if method.read else {"post"})
        assert (operations["post"]["security"] == [{"token": []}]) == (not method.read)
    transfer = schemas["mesh.ledger.v1.TransferRequest"]
    assert transfer["additionalProperties"] is False
    assert set(transfer["properties"]) == {"to", "amount", "memo"}
    status = schemas["mesh.node.v1.NodeStatus"]["properties"]
    assert status["startedAt"] == {"type": "string", "format": "date-time"}
    assert status["peerCount"]["type"] == "integer"
    assert "NODE_STATE_ACTIVE" in status["state"]["enum"]
