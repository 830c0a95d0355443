"""Plugins for tests: well-behaved ones, and ones that raise, hang or flood.

Integration tests hand them to run_daemon directly; e2e tests install them as
real entry points (tests/e2e/plugin_dist.py writes a dist-info for them).
"""

from __future__ import annotations

import hashlib
import json

import trio

from meshd.plugin import (
    Context,
    Event,
    InvalidArgument,
    MeshError,
    Message,
    Plugin,
    TaskOptions,
    TaskReport,
    TaskRequest,
    TaskResult,
)


class EchoPlugin(Plugin):
    """Answers ECHO with its data, FAIL with an exception, SLOW never; gossips on "chat"."""

    def __init__(self) -> None:
        self.heard: list[Message] = []

    async def init(self, ctx: Context) -> None:
        ctx.on("ECHO", self.echo)
        ctx.on("WHOAMI", self.whoami)
        ctx.on("FAIL", self.fail)
        ctx.on("REFUSE", self.refuse)
        ctx.on("SLOW", self.slow, timeout=0.5)
        ctx.on("NOT_BYTES", self.not_bytes)
        ctx.on("HEARD", self.report_heard)
        ctx.on("CALLER", self.caller, from_plugins=True)  # the others: peers, the operator
        self.ctx = ctx

    async def run(self, ctx: Context) -> None:
        async with ctx.subscribe("chat") as messages:
            async for message in messages:
                self.heard.append(message)

    async def echo(self, event: Event) -> bytes:
        return event.data

    async def whoami(self, event: Event) -> bytes:
        return f"{self.ctx.peer_id} saw {event.peer}".encode()

    async def fail(self, event: Event) -> bytes:
        raise RuntimeError("the echo plugin was told to fail")

    async def refuse(self, event: Event) -> bytes:
        raise InvalidArgument("refused: " + event.data.decode())

    async def slow(self, event: Event) -> bytes:
        await trio.sleep_forever()
        raise AssertionError

    async def not_bytes(self, event: Event) -> bytes:
        return 42  # type: ignore[return-value]

    async def report_heard(self, event: Event) -> bytes:
        return b"\n".join(m.data for m in self.heard)

    async def caller(self, event: Event) -> bytes:
        return f"{event.caller} on {event.peer}: {event.data.decode()}".encode()


class CrashingPlugin(Plugin):
    """Its init raises the first ``failures`` times (counted across instances)."""

    failures = 2
    starts = 0

    async def init(self, ctx: Context) -> None:
        type(self).starts += 1
        if type(self).starts <= self.failures:
            raise RuntimeError(f"crash number {type(self).starts}")
        ctx.on("ALIVE", self.alive)

    async def alive(self, event: Event) -> bytes:
        return b"yes"


class RunCrashPlugin(Plugin):
    """Runs fine, then its background work raises once ``CRASH`` is received."""

    async def init(self, ctx: Context) -> None:
        self.crash = trio.Event()
        ctx.on("CRASH", self.order_crash)

    async def order_crash(self, event: Event) -> bytes:
        self.crash.set()
        return b"ok"

    async def run(self, ctx: Context) -> None:
        await self.crash.wait()
        raise RuntimeError("run crashed on order")


class HangingPlugin(Plugin):
    """Its init never returns."""

    async def init(self, ctx: Context) -> None:
        await trio.sleep_forever()


class FloodingPlugin(Plugin):
    """Publishes and requests as fast as it is let, forever."""

    def __init__(self) -> None:
        self.refused = 0

    async def init(self, ctx: Context) -> None:
        ctx.on("ECHO", self.echo)

    async def echo(self, event: Event) -> bytes:
        return event.data

    async def run(self, ctx: Context) -> None:
        async def publish_forever() -> None:
            while True:
                try:
                    await ctx.publish("flood", b"x" * 512)
                except Exception:
                    self.refused += 1

        async def request_forever(peer: str) -> None:
            while True:
                try:
                    await ctx.request(peer, "ECHO", b"y" * 1024, timeout=5)
                except Exception:
                    self.refused += 1

        async with trio.open_nursery() as nursery:
            nursery.start_soon(publish_forever)
            for _ in range(200):  # bounded: 10 s for a peer to connect
                if ctx.peers():
                    break
                await trio.sleep(0.05)
            for _ in range(32):
                nursery.start_soon(request_forever, ctx.peers()[0])


class SquarePlugin(Plugin):
    """Tasks: "square" (checked by its rule) and "digest" (no rule: compared across providers)."""

    lie = False

    async def init(self, ctx: Context) -> None:
        self.ctx = ctx
        ctx.handle_task("square", self.square, verify=self.check_square)
        ctx.handle_task("digest", self.digest)
        ctx.on("SUBMIT", self.submit)

    async def square(self, task: TaskRequest) -> TaskResult:
        n = int(task.payload)
        return TaskResult(str(n * n + (1 if self.lie else 0)).encode(), proof=b"p", units=3)

    async def check_square(self, task: TaskRequest, result: TaskResult) -> bool:
        return result.result == str(int(task.payload) ** 2).encode() and result.units == 3

    async def digest(self, task: TaskRequest) -> TaskResult:
        data = task.payload + (b"lie" if self.lie else b"")
        return TaskResult(hashlib.sha256(data).digest(), units=len(task.payload))

    async def submit(self, event: Event) -> bytes:
        """Submits a square task through the plugin API (local calls from tests)."""
        outcome = await self.ctx.submit_task("square", event.data, TaskOptions(timeout=5))
        return f"{outcome.state} {outcome.result.decode()} {len(outcome.providers)}".encode()


class LyingSquarePlugin(SquarePlugin):
    lie = True


class SlowSquarePlugin(SquarePlugin):
    async def square(self, task: TaskRequest) -> TaskResult:
        await trio.sleep_forever()
        raise AssertionError


class ReporterPlugin(Plugin):
    """Reports work to peers and judges their reports (docs/tasks.md §5).

    ``ASK`` ("<peer>\\n<job>"): have the peer ``SERVE`` the job, to be reported;
    ``REPORT`` ("<peer>\\n<kind>\\n<units>\\n<detail>"): report work to the
    peer, answering the receipt's hash or the error. Reports of ``SERVED`` are
    accepted for jobs this node asked that peer for, once; ``BROKEN`` rules raise.
    ``FAIL`` (a report as JSON, see :func:`report_json`, then "\\n<reason>"):
    ``ctx.report_failure`` on it, answering the verdict's hash or the error;
    ``ACCEPTED``: the reports this node accepted, as JSON.
    """

    def __init__(self) -> None:
        self.asked: set[tuple[str, bytes]] = set()
        self.accepted: list[TaskReport] = []

    async def init(self, ctx: Context) -> None:
        self.ctx = ctx
        ctx.on("ASK", self.ask)
        ctx.on("SERVE", self.serve)
        ctx.on("REPORT", self.report, timeout=60)
        ctx.accept_reports("SERVED", self.check_served)
        ctx.accept_reports("BROKEN", self.broken)
        ctx.on("FAIL", self.fail, timeout=30)
        ctx.on("ACCEPTED", self.list_accepted)

    async def ask(self, event: Event) -> bytes:
        peer, job = event.data.split(b"\n", 1)
        self.asked.add((peer.decode(), job))
        return await self.ctx.request(peer.decode(), "SERVE", job)

    async def serve(self, event: Event) -> bytes:
        return event.data[::-1]

    async def report(self, event: Event) -> bytes:
        peer, kind, units, detail = event.data.split(b"\n", 3)
        try:
            receipt = await self.ctx.report_task(peer.decode(), kind.decode(), detail,
                                                 units=int(units))
        except MeshError as exc:
            return f"error: {type(exc).__name__}: {exc}".encode()
        return receipt.encode()

    async def check_served(self, report: TaskReport) -> bool:
        if (report.provider, report.detail) not in self.asked:
            return False
        self.asked.discard((report.provider, report.detail))
        self.accepted.append(report)
        return True

    async def fail(self, event: Event) -> bytes:
        shown, reason = event.data.rsplit(b"\n", 1)
        fields = json.loads(shown)
        report = TaskReport(fields["provider"], fields["kind"], bytes.fromhex(fields["detail"]),
                            fields["units"], bytes.fromhex(fields["claim"]),
                            bytes.fromhex(fields["signature"]))
        try:
            return (await self.ctx.report_failure(report, reason.decode())).encode()
        except MeshError as exc:
            return f"error: {type(exc).__name__}: {exc}".encode()

    async def list_accepted(self, event: Event) -> bytes:
        return json.dumps([report_json(r) for r in self.accepted]).encode()

    async def broken(self, report: TaskReport) -> bool:
        raise RuntimeError("the rule is broken")


def report_json(report: TaskReport) -> dict[str, object]:
    return {"provider": report.provider, "kind": report.kind, "detail": report.detail.hex(),
            "units": report.units, "claim": report.claim.hex(),
            "signature": report.signature.hex()}
