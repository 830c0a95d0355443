"""The API's listeners: Unix socket, and TCP with TLS and a bearer token."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import sys
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from mesh.node.v1 import node_pb2, node_pb2_grpc
from meshd.testing import netns
from tests.e2e.harness import Meshd, free_port, meshctl


def self_signed(directory: Path, ip: str = "127.0.0.1") -> tuple[Path, Path]:
    """A certificate for ``ip`` and its key, as an operator would make with openssl."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "meshd test")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(ip))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "api.crt", directory / "api.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture
def tcp_node(node: Callable[..., Meshd], tmp_path: Path) -> tuple[Meshd, str, Path]:
    cert, key = self_signed(tmp_path)
    addr = f"127.0.0.1:{free_port()}"
    config = tmp_path / "meshd.toml"
    config.write_text(f'[api]\ntcp_listen = "{addr}"\ntls_cert = "{cert}"\n'
                      f'tls_key = "{key}"\n')
    return node("n1", "--config", str(config)), addr, cert


def get_status(channel: grpc.Channel, metadata: tuple[tuple[str, str], ...] = ()) -> object:
    return node_pb2_grpc.NodeServiceStub(channel).GetStatus(
        node_pb2.GetStatusRequest(), timeout=5, metadata=metadata)


def test_tcp_refuses_calls_without_the_token(tcp_node: tuple[Meshd, str, Path]) -> None:
    daemon, addr, cert = tcp_node
    credentials = grpc.ssl_channel_credentials(cert.read_bytes())
    with grpc.secure_channel(addr, credentials) as channel:
        for metadata in ((), (("authorization", "Bearer wrong-token-wrong-token"),)):
            with pytest.raises(grpc.RpcError) as caught:
                get_status(channel, metadata)
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "token" in caught.value.details()
        token = (daemon.data_dir / "api.token").read_text().strip()
        ok = get_status(channel, (("authorization", f"Bearer {token}"),))
        assert ok.status.peer_id  # type: ignore[attr-defined]


def test_tcp_refuses_plaintext(tcp_node: tuple[Meshd, str, Path]) -> None:
    _, addr, _ = tcp_node
    with grpc.insecure_channel(addr) as channel, pytest.raises(grpc.RpcError) as caught:
        get_status(channel)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def test_meshctl_over_tcp(tcp_node: tuple[Meshd, str, Path]) -> None:
    daemon, addr, cert = tcp_node
    token_file = daemon.data_dir / "api.token"
    assert oct(token_file.stat().st_mode)[-3:] == "600"
    result = meshctl("--addr", addr, "--tls-ca", str(cert), "--token-file", str(token_file),
                     "status", "--json")
    assert json.loads(result.stdout)["peer_id"] == daemon.status()["peer_id"]
    no_token = meshctl("--addr", addr, "--tls-ca", str(cert), "status", check=False,
                       env={"MESH_TOKEN": ""})
    assert no_token.returncode == 1 and "needs a token" in no_token.stderr
    wrong = meshctl("--addr", addr, "--tls-ca", str(cert), "status", check=False,
                    env={"MESH_TOKEN": "x" * 40})
    assert wrong.returncode == 1
    assert "refused the call" in wrong.stderr and "wrong API token" in wrong.stderr


def test_health_and_reflection_are_served(node: Callable[..., Meshd]) -> None:
    daemon = node()
    with grpc.insecure_channel(f"unix:{daemon.socket}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "mesh.node.v1.NodeService", "mesh.network.v1.NetworkService"):
            answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
        responses = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
        names = {s.name for r in responses for s in r.list_services_response.service}
    assert {"mesh.node.v1.NodeService", "mesh.network.v1.NetworkService",
            "grpc.health.v1.Health"} <= names


def test_requests_that_do_not_decode_are_refused_with_one_log_line(
        node: Callable[..., Meshd]) -> None:
    import os

    daemon = node()
    channel = grpc.insecure_channel(f"unix:{daemon.socket}")
    raw = lambda data: data  # noqa: E731 (bytes through as they are)
    methods = [("/mesh.node.v1.NodeService/GetStatus", False),
               ("/mesh.ledger.v1.LedgerService/Transfer", False),
               ("/mesh.governance.v1.GovernanceService/Vote", False),
               ("/mesh.node.v1.NodeService/WatchStatus", True)]
    try:
        for method, streaming in methods:
            for _ in range(25):
                junk = b"\xff" + os.urandom(40)  # a field with wire type 7: never decodes
                with pytest.raises(grpc.RpcError) as refused:
                    if streaming:
                        list(channel.unary_stream(method, request_serializer=raw,
                                                  response_deserializer=raw)(junk, timeout=5))
                    else:
                        channel.unary_unary(method, request_serializer=raw,
                                            response_deserializer=raw)(junk, timeout=5)
                assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert "malformed request" in (refused.value.details() or "")
        # Still serving, and a well-formed request still works.
        assert daemon.status()["peer_id"].startswith("12D3KooW")
    finally:
        channel.close()
    log = daemon.log()
    assert "Traceback" not in log and "DecodeError] raised" not in log
    assert 1 <= log.count("malformed API requests refused") <= 2  # 100 refused, one line per 10 s


# The client side of the HTTP gateway test, run in another host's namespace.
HTTPS_CLIENT = """
import json, ssl, sys, urllib.error, urllib.request
url, ca, token = sys.argv[1:4]
context = ssl.create_default_context(cafile=ca)
def get(scheme, headers):
    request = urllib.request.Request(scheme + url, headers=headers)
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
    except (urllib.error.URLError, ConnectionError) as error:
        return 0, str(error)
print(json.dumps({"none": get("https://", {}),
                  "wrong": get("https://", {"Authorization": "Bearer " + "x" * 43}),
                  "token": get("https://", {"Authorization": "Bearer " + token}),
                  "plain": get("http://", {})}))
"""


def test_the_http_gateway_off_loopback_is_tls_and_token_only(
        node: Callable[..., Meshd], tmp_path: Path) -> None:
    with netns.open_testbed(2) as bed:
        server, client = bed.hosts
        cert, key = self_signed(tmp_path, server.ip)
        config = tmp_path / "meshd.toml"
        config.write_text(f'[api]\ntls_cert = "{cert}"\ntls_key = "{key}"\n')
        daemon = node("n1", "--config", str(config), "--listen", f"/ip4/{server.ip}/tcp/4001",
                      "--http-listen", f"{server.ip}:8443", loopback=False, host=server)
        assert daemon.status()["http_url"] == f"https://{server.ip}:8443/"
        token = (daemon.data_dir / "api.token").read_text().strip()
        path = f"{server.ip}:8443/mesh.node.v1.NodeService/GetStatus"
        answer = client.run([sys.executable, "-c", HTTPS_CLIENT, path, str(cert), token])
        assert answer.returncode == 0, answer.stderr
        results = json.loads(answer.stdout)
        # Reads too need the token off loopback; plain HTTP is not served at all.
        assert results["none"][0] == 401 and "every call" in results["none"][1]["message"]
        assert results["wrong"][0] == 401 and "wrong API token" in results["wrong"][1]["message"]
        assert results["token"][0] == 200
        assert results["token"][1]["status"]["peerId"] == daemon.status()["peer_id"]
        assert results["plain"][0] in (0, 400), results["plain"]
