"""meshctl pubsub on separate meshd processes: sub on one spoke, pub on another."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable

from tests.e2e.harness import MESHCTL, Meshd


def subscriber(node: Meshd, topic: str, count: int) -> subprocess.Popen[str]:
    return subprocess.Popen([MESHCTL, "--socket", str(node.socket), "pubsub", "sub", topic,
                             "--json", "-n", str(count)], stdout=subprocess.PIPE, text=True)


def wait_known_subscriber(node: Meshd, topic: str, peer_id: str) -> None:
    """Until ``node`` has heard ``peer_id``'s subscription (py-libp2p has no event for it)."""
    deadline = time.monotonic() + 20
    while peer_id not in json.loads(node.ctl("pubsub", "peers", topic, "--json").stdout):
        assert time.monotonic() < deadline, f"{peer_id} never seen subscribing to {topic}"


def test_publish_and_subscribe_across_processes(node: Callable[..., Meshd]) -> None:
    # b and c know only the hub: b's messages reach c through the hub's relay
    # (gossipsub routes through subscribers, so the hub subscribes too).
    hub = node("hub")
    address = hub.status()["listen_addrs"][0]
    b = node("b", "--bootstrap", address)
    c = node("c", "--bootstrap", address)
    subs = [subscriber(hub, "news", 3), subscriber(c, "news", 3)]
    try:
        wait_known_subscriber(hub, "news", c.status()["peer_id"])
        wait_known_subscriber(b, "news", hub.status()["peer_id"])
        assert {"topic": "news", "local_subscribers": 1} in json.loads(
            c.ctl("pubsub", "topics", "--json").stdout)
        for i in range(3):
            b.ctl("pubsub", "pub", "news", f"hello {i}")
        outputs = [sub.communicate(timeout=20)[0] for sub in subs]
    finally:
        for sub in subs:
            sub.kill()
    b_id = b.status()["peer_id"]
    for output, sub in zip(outputs, subs, strict=True):  # the hub and c each got all 3
        lines = [json.loads(line) for line in output.splitlines()]
        assert [m["data"] for m in lines] == ["hello 0", "hello 1", "hello 2"]
        assert {m["sender"] for m in lines} == {b_id}
        assert sub.returncode == 0


def test_bad_pubsub_input(node: Callable[..., Meshd]) -> None:
    n1 = node("n1")
    empty = n1.ctl("pubsub", "pub", "", "x", check=False)
    assert empty.returncode == 1 and "a topic is 1 to" in empty.stderr
    neither = n1.ctl("pubsub", "pub", "news", check=False)
    assert neither.returncode == 2
