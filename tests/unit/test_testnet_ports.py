"""A testnet node's ports: distinct from each other and from every other node's."""

from __future__ import annotations

import socket

import pytest

from meshctl import testnet
from meshctl.testnet import NodeEntry, TestnetState


def _node(name: str, port: int = 0, http_port: int = 0) -> NodeEntry:
    return NodeEntry(name=name, peer_id="", data_dir="", socket="", log="", port=port,
                     http_port=http_port)


def test_a_node_never_gets_the_same_port_twice_even_when_probes_repeat_a_port(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The kernel may hand the same ephemeral port to two probes in a row: the
    # gateway then asked for the p2p port and the node exited at start (CI, stop 28).
    ports = iter([41001, 41001, 41001, 41002])

    class Probe(socket.socket):
        def getsockname(self) -> tuple[str, int]:
            return ("127.0.0.1", next(ports))

    monkeypatch.setattr(testnet.socket, "socket", Probe)
    node = _node("node-1")
    testnet._assign_ports(node, TestnetState("net", "g", [node], [], 5))
    assert (node.port, node.http_port) == (41001, 41002)


def test_a_node_never_takes_a_port_another_node_of_the_testnet_was_given() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        other_port = held.getsockname()[1]
    other = _node("node-1", port=other_port, http_port=other_port + 1)
    node = _node("node-2", port=other_port)  # free on the host, but node-1's
    testnet._assign_ports(node, TestnetState("net", "g", [other, node], [], 5))
    assert node.port not in (other.port, other.http_port)
    assert node.http_port not in (other.port, other.http_port, node.port)
    assert node.port > 0 and node.http_port > 0
