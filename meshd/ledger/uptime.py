"""Uptime evidence: PING the members, attest what answered (docs/ledger.md §6.2).

Heartbeats stay off the ledger: during epoch E this node PINGs every admitted
member each PROBE interval and counts (probes, answered) per member. Just
before E ends it writes one UptimeAttestation for E with the members probed
at least MIN_PROBES times. A PING travels on a Noise-authenticated
connection, so an answer proves the member's key was online.

Only attestations of eligible attesters count (staked or validators: Sybils
earn nothing); the settlement decides that. This node writes its attestation
only when it could count (it is a validator of E or holds stake), so unstaked
nodes do not fill the ledger with evidence nobody counts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from mesh.ledger.v1 import ledger_pb2
from meshcore.ledger import accounts
from meshcore.ledger.constants import MAX_OBSERVATIONS, MAX_PROBES, MIN_PROBES, min_attest_stake
from meshcore.ledger.rules import MAX_EPOCH_AHEAD
from meshd import errors
from meshd.ledger.ledger import Ledger
from meshd.p2p.host import P2PHost

log = logging.getLogger(__name__)

PROBES_PER_EPOCH = 12
PROBE_TIMEOUT = 2.0


def probe_interval(epoch_seconds: float) -> float:
    """Seconds between probe rounds: an epoch holds PROBES_PER_EPOCH of them."""
    return min(300.0, max(0.1, epoch_seconds / PROBES_PER_EPOCH))


def attest_margin(epoch_seconds: float) -> float:
    """How long before its end an epoch's attestation is written (so it is
    the node's last entry of the epoch and reaches the validators' closes)."""
    return min(5.0, epoch_seconds / 10)


class UptimeAttester:
    """Probes members and attests once per epoch; on the trio loop."""

    def __init__(self, ledger: Ledger, p2p: P2PHost,
                 clock: Callable[[], float] | None = None) -> None:
        self._ledger = ledger
        self._p2p = p2p
        self._clock = clock or ledger._clock
        self._counts: dict[int, dict[bytes, list[int]]] = {}  # epoch -> key -> [probes, ok]
        self.attested: list[int] = []  # epochs attested, for tests and status

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                  ) -> None:
        genesis = self._ledger.genesis
        seconds = genesis.rewards.epoch_seconds
        interval = probe_interval(seconds)
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                epoch = self._ledger.clock_epoch()
                end = genesis.genesis_time.timestamp() + (epoch + 1) * seconds
                if end - self._clock() <= attest_margin(seconds):
                    await self._attest(epoch)
                    await trio.sleep(max(0.0, end - self._clock()) + 0.01)
                    continue
                for member in self._p2p.membership.peers():
                    nursery.start_soon(self._probe, epoch, member.peer_id)
                await trio.sleep(min(interval, max(0.01, end - attest_margin(seconds)
                                                   - self._clock())))

    async def _probe(self, epoch: int, peer_id: str) -> None:
        try:
            key = accounts.key_of(peer_id)
        except ValueError:
            return  # not an Ed25519 peer ID: not an account
        counts = self._counts.setdefault(epoch, {}).setdefault(key, [0, 0])
        counts[0] += 1
        try:
            await self._p2p.direct.ping(peer_id, timeout=PROBE_TIMEOUT)
        except errors.MeshError:
            return
        counts[1] += 1

    async def _attest(self, epoch: int) -> None:
        counts = self._counts.pop(epoch, {})
        for old in [e for e in self._counts if e < epoch]:
            del self._counts[old]
        if epoch in self.attested or not self._may_count(epoch):
            return
        final = self._ledger.final_epoch
        if epoch > final + MAX_EPOCH_AHEAD:
            # Settlement stalled (no quorum): an entry may claim at most
            # MAX_EPOCH_AHEAD epochs past the last final one (§3.2 rule 4).
            log.debug("uptime attestation skipped: settlement is behind",
                      extra={"epoch": epoch, "final_epoch": final})
            return
        observations = [
            ledger_pb2.Observation(subject=key, probes=min(probes, MAX_PROBES),
                                   answered=min(ok, probes, MAX_PROBES))
            for key, (probes, ok) in sorted(counts.items())
            if probes >= MIN_PROBES and key != self._ledger.key][:MAX_OBSERVATIONS]
        if not observations:
            return
        try:
            await self._ledger.write(at_epoch=epoch, attestation=ledger_pb2.UptimeAttestation(
                observations=observations))
        except errors.MeshError as exc:
            log.warning("uptime attestation not written", extra={"epoch": epoch,
                                                                 "error": str(exc)})
            return
        self.attested.append(epoch)

    def _may_count(self, epoch: int) -> bool:
        """Whether this node's attestation of ``epoch`` can count, as far as it
        knows (validator of the epoch, or staked enough)."""
        settled = self._ledger.settled
        validators = settled.validators if epoch <= settled.epoch + 1 \
            else settled.validators_after
        if self._ledger.key in dict(validators):
            return True
        stake = settled.account(self._ledger.key).bonded
        return stake >= min_attest_stake(settled.params.governance)
