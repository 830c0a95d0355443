"""The dashboard in a real browser (Debian's chromium, driven by Playwright) on a 4-node testnet.

One testnet and one browser for the whole walk, in steps: each panel shows what
meshctl shows at the same moment; a transfer made with meshctl appears without a
reload; a vote cast in the browser is counted; the graph shows every peer, and a
node stopped mid-test as gone; on a phone-sized screen nothing is cut off.
``MESH_DASHBOARD_SCREENSHOTS=DIR`` also saves the screenshots there (docs/dashboard.md's).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from meshd.testing import eventually_blocking
from tests.e2e.harness import meshctl

playwright = pytest.importorskip("playwright.sync_api")  # a dev dependency: always there

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# As the machine's notes say: no sandbox as root, and no background traffic
# that the closed network would refuse.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
T = TypeVar("T")


class FourNodes:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        up = meshctl("--json", "testnet", "up", "-n", "4", "--plugin", "storage",
                     "--epoch-seconds", "3", "--dir", str(directory), timeout=120)
        self.nodes: list[dict[str, Any]] = json.loads(up.stdout)["nodes"]

    def ctl(self, index: int, *args: str) -> Any:
        result = meshctl("--json", "--socket", self.nodes[index]["socket"], *args)
        return json.loads(result.stdout)

    def down(self) -> None:
        meshctl("testnet", "down", "--dir", str(self.directory), timeout=60)


@pytest.fixture
def testnet(tmp_path: Path) -> Iterator[FourNodes]:
    net = FourNodes(tmp_path / "testnet")
    try:
        yield net
    finally:
        net.down()


@pytest.fixture
def browser() -> Iterator[Any]:
    with playwright.sync_playwright() as driver:
        chromium = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def until(probe: Callable[[], T], condition: Callable[[T], object], what: str,
          timeout: float = 30) -> T:
    return eventually_blocking(probe, condition, timeout=timeout, what=what)


def text(page: Any, testid: str) -> str:
    return str(page.get_by_test_id(testid).inner_text()).strip()


def value(page: Any, testid: str) -> str:
    return str(page.get_by_test_id(testid).get_attribute("data-value") or "")


def shoot(page: Any, name: str, tmp_path: Path) -> None:
    page.screenshot(path=str(tmp_path / name), full_page=True)
    target = os.environ.get("MESH_DASHBOARD_SCREENSHOTS")
    if target:
        shutil.copy(tmp_path / name, Path(target) / name)


def test_the_dashboard_shows_the_network_live_and_votes(
        testnet: FourNodes, browser: Any, tmp_path: Path) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    # Script errors fail the test; chromium's "Failed to load resource" lines for
    # answers the page expects (a ping to the node stopped below) do not.
    page.on("console", lambda m: problems.append(m.text) if m.type == "error"
            and not m.text.startswith("Failed to load resource") else None)
    page.goto(testnet.nodes[0]["dashboard"])

    node_panel_matches_meshctl(page, testnet)
    ledger_and_rewards_match_meshctl(page, testnet)
    plugins_match_meshctl(page, testnet)
    tasks_match_meshctl(page, testnet, tmp_path)
    a_transfer_appears_without_a_reload(page, testnet)
    a_vote_in_the_browser_is_counted(page, testnet)
    stored_files_match_meshctl(page, testnet, tmp_path)
    shoot(page, "dashboard.png", tmp_path)
    every_peer_in_the_graph_and_a_stopped_node_gone(page, testnet)

    phone = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True)
    phone.goto(testnet.nodes[0]["dashboard"])
    until(lambda: (value(phone, "dht-routing-table"), value(phone, "ledger-final-epoch"),
                   phone.locator('[data-testid="plugins"] tr').count(),
                   phone.locator('[data-testid="rewards"] tr').count()),
          all, "the phone page to load")
    width = phone.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page is {width} px wide on a 390 px screen"
    shoot(phone, "dashboard-phone.png", tmp_path)
    assert not problems, problems


def node_panel_matches_meshctl(page: Any, net: FourNodes) -> None:
    status = net.ctl(0, "status")
    until(lambda: value(page, "node-peer-id"), lambda v: v == status["peer_id"],
          "the node panel to show the peer ID")
    assert value(page, "node-network-id") == status["network_id"]
    assert value(page, "node-version") == status["version"]
    assert value(page, "node-reachability") == status["reachability"]
    addresses = page.get_by_test_id("node-addresses").locator("li").all_inner_texts()
    assert addresses == status["listen_addrs"]
    until(lambda: text(page, "node-state"), lambda s: s == net.ctl(0, "status")["state"],
          "the state to be meshctl's")
    routing = net.ctl(0, "network", "info")["routing_table_size"]
    until(lambda: value(page, "dht-routing-table"), lambda v: v == str(routing),
          "the DHT routing table size to be meshctl's")


def ledger_and_rewards_match_meshctl(page: Any, net: FourNodes) -> None:
    # The same moment: the final epoch both show, then what each says of it.
    def both() -> tuple[dict[str, Any], tuple[str, str, str]]:
        shown = (value(page, "ledger-final-epoch"), value(page, "ledger-state-root"),
                 value(page, "ledger-supply"))
        return net.ctl(0, "ledger", "state-root"), shown

    meshctl_root, shown = until(both, lambda r: str(r[0]["epoch"]) == r[1][0] != "0",
                                "the dashboard and meshctl at the same final epoch")
    assert shown == (str(meshctl_root["epoch"]), meshctl_root["root"], meshctl_root["supply"])
    info = net.ctl(0, "token", "info")
    until(lambda: value(page, "ledger-minted-total"),
          lambda v: int(v or 0) >= int(info["minted_total"]) > 0, "minted in all")

    first = page.get_by_test_id("rewards").locator("tr").first
    until(lambda: first.get_attribute("data-epoch"), bool, "the rewards table")
    # The table is drawn again at each settlement (3 s): hold on to an epoch, not a row.
    epoch = str(first.get_attribute("data-epoch"))
    row = page.locator(f'[data-testid="rewards"] tr[data-epoch="{epoch}"]')
    rewards = net.ctl(0, "rewards", "ls", "--epoch", epoch)
    assert row.locator("td").nth(1).get_attribute("data-value") == str(rewards["minted"])
    row.click()
    explained = meshctl("--socket", net.nodes[0]["socket"], "rewards", "explain", epoch).stdout
    until(lambda: page.get_by_test_id("rewards-explain").get_attribute("data-epoch"),
          lambda e: e == epoch, "the explanation of the epoch clicked")
    assert text(page, "rewards-explain") == explained.strip()


def plugins_match_meshctl(page: Any, net: FourNodes) -> None:
    plugins = {p["name"]: p["state"] for p in net.ctl(0, "plugins", "ls")}

    def shown() -> dict[str, str]:
        rows = page.get_by_test_id("plugins").locator("tr")
        return {str(r.get_attribute("data-plugin")): str(r.locator("td").nth(2).inner_text())
                for r in rows.all()}

    until(shown, lambda s: s == plugins, "the plugins table to be meshctl's")


def tasks_match_meshctl(page: Any, net: FourNodes, tmp_path: Path) -> None:
    file = tmp_path / "notes.txt"
    file.write_bytes(b"kept by the network\n" * 1000)
    meshctl("--socket", net.nodes[0]["socket"], "tasks", "submit", "storage", "STORE_FILE",
            "--file", str(file), "--redundancy", "2")
    tasks = {t["task_id"]: t["state"] for t in net.ctl(0, "tasks", "ls")}
    assert tasks and set(tasks.values()) == {"done"}

    def shown() -> dict[str, str]:
        rows = page.locator('[data-testid="tasks"] tr').all()
        return {str(r.get_attribute("data-task-id")):
                str(r.locator("td[data-value]").get_attribute("data-value")) for r in rows}

    until(shown, lambda s: s == tasks, "the tasks table to be meshctl's")
    # Listing files is a plugin call: it needs the API token, and says so.
    assert page.get_by_test_id("storage-needs-token").count() == 1


def stored_files_match_meshctl(page: Any, net: FourNodes, tmp_path: Path) -> None:
    """After the vote step saved the token: the files `storage ls` lists, each healthy."""
    file = tmp_path / "album.bin"
    file.write_bytes(os.urandom(700_000))
    cid = net.ctl(0, "storage", "put", str(file), "-k", "2", "-n", "3")["cid"]
    listed = {f["cid"]: f for f in net.ctl(0, "storage", "ls")}
    assert cid in listed
    token = (Path(net.nodes[0]["socket"]).parent / "api.token").read_text().strip()
    page.get_by_test_id("token-input").fill(token)
    page.get_by_test_id("token-save").click()  # saving (again) refreshes the panel

    def shown() -> dict[str, tuple[str, str]]:
        rows = page.locator('[data-testid="storage"] tr[data-cid]').all()
        return {str(r.get_attribute("data-cid")):
                (r.locator("td").nth(0).inner_text(),
                 str(r.locator("td").nth(4).get_attribute("data-value"))) for r in rows}

    until(shown, lambda s: s == {c: (f["name"], "healthy") for c, f in listed.items()},
          "the storage panel to list meshctl's files, healthy", timeout=40)


def a_transfer_appears_without_a_reload(page: Any, net: FourNodes) -> None:
    to = net.nodes[1]["peer_id"]
    sent = net.ctl(0, "ledger", "transfer", to, "2500000", "--memo", "seen in the browser")
    row = page.locator(f'[data-testid="history"] tr[data-hash="{sent["hash"]}"]')
    until(lambda: row.count(), lambda n: n == 1, "the transfer in the history", timeout=15)
    assert "seen in the browser" in row.inner_text()
    assert row.locator("td").nth(3).get_attribute("data-value") == "2500000"


def a_vote_in_the_browser_is_counted(page: Any, net: FourNodes) -> None:
    made = net.ctl(1, "gov", "propose", "param", "rewards.split=uptime:50,tasks:30,governance:20",
                   "--title", "more for uptime")
    proposal_id = made["id"]
    card = page.locator(f'[data-proposal-id="{proposal_id}"]')
    until(lambda: card.count(), lambda n: n == 1, "the proposal to appear")
    card.get_by_test_id("vote-yes").click()  # no token yet: refused, and it says why
    until(lambda: page.locator("#api-error").inner_text(), lambda t: "token" in t,
          "the dashboard to ask for the token")
    token = (Path(net.nodes[0]["socket"]).parent / "api.token").read_text().strip()
    page.get_by_test_id("token-input").fill(token)
    page.get_by_test_id("token-save").click()
    card.get_by_test_id("vote-yes").click()
    until(lambda: net.ctl(0, "gov", "show", proposal_id)["proposal"],
          lambda p: p["my_vote"] == "yes",
          "the browser's vote to be counted")
    until(lambda: card.get_by_test_id("my-vote").inner_text(), lambda v: v == "yes",
          "the card to show the vote")


def every_peer_in_the_graph_and_a_stopped_node_gone(page: Any, net: FourNodes) -> None:
    peers = {p["peer_id"] for p in net.ctl(0, "peers", "ls")}
    assert len(peers) == 3

    def in_graph(state: str) -> set[str]:
        circles = page.locator(f'#peer-graph circle[data-state="{state}"]')
        return {str(c.get_attribute("data-peer-id")) for c in circles.all()}

    until(lambda: in_graph("connected"), lambda s: s == peers, "every peer in the graph")
    stopped = net.nodes[3]
    os.kill(stopped["pid"], signal.SIGTERM)
    until(lambda: in_graph("gone"), lambda s: s == {stopped["peer_id"]},
          "the stopped node to show as gone")
    assert in_graph("connected") == peers - {stopped["peer_id"]}
    row = page.locator(f'[data-testid="peers-table"] tr[data-peer-id="{stopped["peer_id"]}"]')
    assert row.get_attribute("class") == "gone"
