"""The Participating node state: task work in the last minute (docs/tasks.md)."""

from __future__ import annotations

import trio

from meshd.node_status import StatusBoard
from meshd.tasks.provider import TaskProvider
from meshd.tasks.router import TaskRouter

WINDOW = 60.0  # seconds a task keeps the node Participating
CHECK_INTERVAL = 1.0


class ParticipationWatch:
    """Sets ``participating`` while this node executed a task for a peer, or had
    one of its own tasks done, within the last WINDOW seconds."""

    def __init__(self, provider: TaskProvider, router: TaskRouter, board: StatusBoard,
                 window: float = WINDOW) -> None:
        self._provider = provider
        self._router = router
        self._board = board
        self._window = window

    def participating(self) -> bool:
        last = max(self._provider.last_executed_at, self._router.last_done_at)
        return last > 0 and trio.current_time() - last < self._window

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                  ) -> None:
        task_status.started()
        while True:
            self._board.update(participating=self.participating())
            await trio.sleep(CHECK_INTERVAL)
