"""meshctl plugins new: a plugin package to start from, with a test that it earns.

The templates are the smallest plugin that shows each part of the public
plugin API a plugin author needs first (docs/plugins.md): an event handler, a
task kind with its verify rule (router tasks earn receipts by themselves), and
a report/accept pair for work done in an event handler. The generated test
starts a minting local network with ``meshd.testing`` and asserts that the
plugin's task earns its provider a share of the tasks pool.
"""

from __future__ import annotations

import re
from pathlib import Path

NAME = re.compile(r"[a-z][a-z0-9-]{0,40}")

PYPROJECT = '''\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "mesh-{name}"
version = "0.1.0"
description = "The {name} plugin of a Mesh network"
requires-python = ">=3.11"

[project.entry-points."mesh.plugins"]
{name} = "{module}.plugin:{cls}"

[tool.setuptools]
packages = ["{module}"]

[tool.pytest.ini_options]
trio_mode = true
'''

PLUGIN = '''\
"""The {name} plugin: an event, a task kind with its rule, and reported work."""

from __future__ import annotations

from meshd.plugin import (
    Context,
    Event,
    InvalidArgument,
    MeshError,
    Plugin,
    TaskReport,
    TaskRequest,
    TaskResult,
)

MAX_INPUT = 1024  # bytes


class {cls}(Plugin):
    def __init__(self) -> None:
        self.asked: set[tuple[str, bytes]] = set()  # jobs this node asked peers for

    async def init(self, ctx: Context) -> None:
        self.ctx = ctx
        ctx.on("ECHO", self.echo)                              # peers can call it
        ctx.handle_task("REVERSE", self.reverse, verify=self.check)  # paid tasks
        ctx.on("SERVE", self.serve)                            # work done in a handler...
        ctx.accept_reports("SERVED", self.was_asked)           # ...and reported
        ctx.on("ASK", self.ask_event)                          # "<peer>\\n<job>": ask a peer

    async def echo(self, event: Event) -> bytes:
        if len(event.data) > MAX_INPUT:
            raise InvalidArgument(f"at most {{MAX_INPUT}} bytes")  # the caller sees this
        return event.data

    # A task: providers run it, the requester checks each result with the rule;
    # an accepted result earns the provider a receipt (docs/tasks.md).
    async def reverse(self, task: TaskRequest) -> TaskResult:
        return TaskResult(task.payload[::-1], units=max(1, len(task.payload)))

    async def check(self, task: TaskRequest, result: TaskResult) -> bool:
        return result.result == task.payload[::-1]

    # Work done in an event handler is reported, and the requester countersigns.
    async def ask(self, peer: str, job: bytes) -> bytes:
        self.asked.add((peer, job))
        return await self.ctx.request(peer, "SERVE", job)

    async def ask_event(self, event: Event) -> bytes:
        peer, _, job = event.data.partition(b"\\n")
        return await self.ask(peer.decode(), job)

    async def serve(self, event: Event) -> bytes:
        self.ctx.spawn(lambda: self.report(event.peer, event.data))
        return event.data.upper()

    async def report(self, peer: str, job: bytes) -> None:
        try:
            await self.ctx.report_task(peer, "SERVED", job, units=1)
        except MeshError as exc:
            self.ctx.log.warning("report refused: %s", exc)

    async def was_asked(self, report: TaskReport) -> bool:
        if (report.provider, report.detail) not in self.asked:
            return False
        self.asked.discard((report.provider, report.detail))
        return True
'''

# The tests of every template: the same plugin, whatever its language. ``nodes``
# (two connected nodes running it) is what each language's test file defines.
TESTS = '''

async def test_echo_between_nodes(tmp_path):
    with trio.fail_after(60):
        async with nodes(tmp_path) as net:
            a, b = net.nodes
            assert await a.call("{name}", "ECHO", b"hi", peer=b) == b"hi"


async def test_reported_work_is_countersigned_by_the_requester(tmp_path):
    with trio.fail_after(60):
        async with nodes(tmp_path) as net:
            a, b = net.nodes
            asked = f"{{b.peer_id}}\\n".encode() + b"job-1"
            assert await a.call("{name}", "ASK", asked) == b"JOB-1"

            async def receipts():
                return [e for e in await a.history() if e.kind == "task_receipt"]

            assert len(await eventually(receipts, what="a receipt signed by both")) == 1


async def test_a_task_earns_its_provider_a_share_of_the_tasks_pool(tmp_path):
    with trio.fail_after(120):
        # open_network's genesis mints: every node is a validator with tokens.
        async with nodes(tmp_path, epoch_seconds=2) as net:
            a, b = net.nodes
            task = await a.submit_task("{name}", "REVERSE", b"mesh")
            assert task.result == b"hsem"

            earned = await eventually(lambda: a.earned("tasks"), timeout=90,
                                      what="the task's receipt to earn from the tasks pool")
            assert set(earned) <= {{a.peer_id, b.peer_id}}
'''

TEST = '''\
"""The {name} plugin on a local network of real nodes (meshd.testing)."""

from __future__ import annotations

import contextlib

import trio

from meshd.testing import eventually, open_network, plugin_under_test

from {module}.plugin import {cls}


@contextlib.asynccontextmanager
async def nodes(directory, **options):
    """Two connected nodes running the plugin in-process."""
    plugin = plugin_under_test("{name}", {cls})
    async with open_network(directory, 2, plugins=[plugin], **options) as net:
        yield net
''' + TESTS

README = '''\
# The {name} plugin

A Mesh plugin made by `meshctl plugins new {name}`. `{module}/plugin.py` is
the plugin (docs/plugins.md explains each part); `tests/test_{module}.py`
runs it on a local network of real nodes and checks that its work earns.

```sh
pip install -e .            # into the venv meshd runs from
python -m pytest tests      # needs pytest and pytest-trio
meshctl network init ... --plugin {name}    # networks that require it
```
'''


def class_name(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("-")) + "Plugin"


def module_name(name: str) -> str:
    return name.replace("-", "_") + "_mesh"


def files(name: str) -> dict[str, str]:
    """Relative path -> content of the package for plugin ``name``."""
    names = {"name": name, "module": module_name(name), "cls": class_name(name)}
    module = names["module"]
    return {
        "pyproject.toml": PYPROJECT.format(**names),
        "README.md": README.format(**names),
        f"{module}/__init__.py": f'"""The {name} plugin of a Mesh network."""\n',
        f"{module}/plugin.py": PLUGIN.format(**names),
        f"tests/test_{module}.py": TEST.format(**names),
    }


def write(name: str, directory: Path, lang: str = "python") -> list[Path]:
    """Write the package into ``directory`` (which must not exist or be empty)."""
    if lang == "js":
        from meshctl import scaffold_javascript

        contents = scaffold_javascript.files(name, module_name(name))
    else:
        contents = files(name)
    written = []
    for relative, content in contents.items():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
        written.append(path)
    return written
