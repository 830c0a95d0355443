"""Node state derivation and the status board."""

from __future__ import annotations

import pytest
import trio

from meshd.node_status import NodeState, StatusBoard, derive_state


@pytest.mark.parametrize(("listening", "peers", "ever", "routing", "state"), [
    (False, 0, False, 0, NodeState.INITIALIZING),
    (False, 3, True, 3, NodeState.INITIALIZING),
    (True, 0, False, 0, NodeState.CONNECTING),
    (True, 1, False, 0, NodeState.CONNECTED),
    (True, 5, True, 0, NodeState.CONNECTED),
    (True, 1, True, 1, NodeState.ACTIVE),
    (True, 0, True, 4, NodeState.DISCONNECTED),
])
def test_derive_state(listening: bool, peers: int, ever: bool, routing: int,
                      state: NodeState) -> None:
    assert derive_state(listening, peers, ever, routing) is state


async def test_board_tracks_connectivity_and_wakes_watchers() -> None:
    now = [100.0]
    board = StatusBoard("net_x", "X", "node", clock=lambda: now[0])
    seen: list[NodeState] = []

    async def watch(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async for status in board.watch():
            seen.append(status.state)
            if len(seen) == 1:
                task_status.started()
            if len(seen) == 4:
                return

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(watch)
            board.update(listening=True, peer_id="p")
            await trio.testing.wait_all_tasks_blocked()
            board.update(peer_count=2)
            await trio.testing.wait_all_tasks_blocked()
            board.update(peer_count=2)  # no change: no wake-up
            board.update(peer_count=0)
    assert seen == [NodeState.INITIALIZING, NodeState.CONNECTING, NodeState.CONNECTED,
                    NodeState.DISCONNECTED]
    now[0] = 112.5
    assert board.snapshot().uptime_seconds == 12.5


@pytest.mark.parametrize(("peers", "unvoted", "state"), [
    (2, 1, NodeState.VOTING),
    (2, 0, NodeState.ACTIVE),
    (0, 3, NodeState.DISCONNECTED),  # connectivity first: a lone node cannot vote
])
def test_voting_is_shown_while_connected_with_unvoted_proposals(
        peers: int, unvoted: int, state: NodeState) -> None:
    assert derive_state(True, peers, True, 1, unvoted) is state


def test_an_active_upgrade_is_a_warning_of_the_status() -> None:
    board = StatusBoard("net_x", "X", "node")
    assert board.snapshot().warnings == () and not board.snapshot().upgrade_required
    board.update(upgrade_required="install meshd 2.0")
    status = board.snapshot()
    assert status.warnings == ("upgrade required: install meshd 2.0",)
    assert status.upgrade_required


@pytest.mark.parametrize(("peers", "unvoted", "tasks", "state"), [
    (2, 0, True, NodeState.PARTICIPATING),
    (2, 1, True, NodeState.VOTING),  # a vote awaited is what the operator must see
    (2, 0, False, NodeState.ACTIVE),
    (0, 0, True, NodeState.DISCONNECTED),
])
def test_participating_is_shown_while_connected_and_working_on_tasks(
        peers: int, unvoted: int, tasks: bool, state: NodeState) -> None:
    assert derive_state(True, peers, True, 1, unvoted, tasks) is state
