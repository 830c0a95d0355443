"""The plugin bench/tasks.py installs into its meshd processes (as entry point ``bench``).

The same trivial work two ways, so that the difference is the transport's:
task kind ``echo`` (the result is the payload, checked by the rule on the
requester) and event ``ECHO`` (the answer is the data).
"""

from __future__ import annotations

from meshd.plugin import Context, Event, Plugin, TaskRequest, TaskResult


class BenchPlugin(Plugin):
    async def init(self, ctx: Context) -> None:
        ctx.on("ECHO", self.echo)
        ctx.handle_task("echo", self.echo_task, verify=self.check_echo)

    async def echo(self, event: Event) -> bytes:
        return event.data

    async def echo_task(self, task: TaskRequest) -> TaskResult:
        return TaskResult(task.payload, units=1)

    async def check_echo(self, task: TaskRequest, result: TaskResult) -> bool:
        return result.result == task.payload and result.units == 1
