"""Keeps the node's status in step with governance (docs/governance.md §5, §7).

Once a second it reads the newest final settlement: the node is Voting while
an open proposal awaits a vote from this node's account (one it can cast:
the account held tokens when the proposal opened, and it has written no vote
yet, settled or not), and it warns (status, log once per epoch, metric
``mesh_upgrade_required``) once a passed upgrade to a newer version than this
one is active.
"""

from __future__ import annotations

import logging

import trio
from packaging.version import InvalidVersion, Version

from meshcore.ledger.state import UpgradeNotice
from meshcore.version import __version__
from meshd.ledger.ledger import Ledger
from meshd.node_status import StatusBoard

log = logging.getLogger(__name__)
INTERVAL = 1.0


class GovernanceWatch:
    def __init__(self, ledger: Ledger, board: StatusBoard, version: str = __version__) -> None:
        self._ledger = ledger
        self._board = board
        self._version = version
        self._warned_epoch = -1

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                  ) -> None:
        task_status.started()
        while True:
            await self.check()
            await trio.sleep(INTERVAL)

    async def check(self) -> None:
        """Update the board from the newest final settlement."""
        self._board.update(unvoted_proposals=await self.unvoted(),
                           upgrade_required=self.upgrade_message())

    async def unvoted(self) -> int:
        settled = self._ledger.settled
        key = self._ledger.key
        waiting = {proposal_key for proposal_key, p in settled.proposals.items()
                   if p.is_open and p.snapshot.get(key, 0) > 0 and key not in p.votes}
        if not waiting:
            return 0
        written = {item.body.gov_vote.proposal
                   for item in await self._ledger.own_unsettled("gov_vote", settled)}
        return len(waiting - written)

    def upgrade_message(self) -> str:
        notice = self._ledger.settled.upgrade
        epoch = self._ledger.clock_epoch()
        if notice is None or epoch < notice.activation_epoch or not _older(
                self._version, notice):
            return ""
        message = (f"the network upgraded to meshd {notice.version} at epoch "
                   f"{notice.activation_epoch} (proposal {notice.proposal.hex()[:16]}); this "
                   f"node runs {self._version}: install {notice.url} (sha256 "
                   f"{notice.sha256.hex()})")
        if epoch > self._warned_epoch:
            self._warned_epoch = epoch
            log.warning("upgrade required: %s", message)
        return message


def _older(version: str, notice: UpgradeNotice) -> bool:
    try:
        return Version(version) < Version(notice.version)
    except InvalidVersion:
        return False
