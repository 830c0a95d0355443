"""meshctl plugins new --lang js: an external plugin package in JavaScript.

The package is self-contained, as an author ships it: ``mesh-plugin.js`` (the
PluginHost client of plugins/examples/js-hash), the ``pluginhost.proto`` it is
built from at run time, and a package-lock.json with the example's pinned
dependencies. Its test is Python (``meshd.testing``): meshd runs the plugin as
an external process, and the test checks that its task earns from the tasks pool
of a minting local network, as the Python template's does.

The client and the proto are copied from Mesh's source tree, which is where
``make setup`` installs meshctl from; elsewhere ``kit_missing`` says what is
missing.
"""

from __future__ import annotations

import json
from pathlib import Path

from meshctl.scaffold import TESTS

SOURCE = Path(__file__).resolve().parents[1]
EXAMPLE = SOURCE / "plugins" / "examples" / "js-hash"
PROTO = Path("proto") / "mesh" / "pluginhost" / "v1" / "pluginhost.proto"
KIT = {"mesh-plugin.js": EXAMPLE / "mesh-plugin.js", str(PROTO): SOURCE / PROTO}

INDEX = '''\
// The {name} plugin: an event, a task kind with its rule, and reported work.
// An external Mesh plugin: meshd starts it (docs/plugins.md, "External plugins").
"use strict";

const {{ MeshPlugin }} = require("./mesh-plugin");

const MAX_INPUT = 1024; // bytes
const plugin = new MeshPlugin({{ version: "0.1.0", summary: "The {name} plugin" }});

// Peers can call it; a thrown error is what the caller sees.
plugin.on("ECHO", async (event) => {{
  if (event.data.length > MAX_INPUT) throw new Error(`at most ${{MAX_INPUT}} bytes`);
  return event.data;
}});

// A task: providers run it, the requester checks each result with the rule;
// an accepted result earns the provider a receipt (docs/tasks.md).
const reverse = (data) => Buffer.from(data).reverse();
plugin.handleTask("REVERSE", async (task) => ({{
  result: reverse(task.payload), units: Math.max(1, task.payload.length),
}}), {{ verify: async (task, result) => result.result.equals(reverse(task.payload)) }});

// Work done in an event handler is reported, and the requester countersigns.
const asked = new Set(); // "<peer>/<job>" this node asked peers for, not yet reported

plugin.on("SERVE", async (event) => {{
  plugin.reportTask(event.peer, "SERVED", event.data, {{ units: 1 }})
    .catch((error) => console.error(`report refused: ${{error.message}}`));
  return Buffer.from(event.data.toString().toUpperCase());
}});

plugin.acceptReports("SERVED", async (report) =>
  asked.delete(`${{report.provider}}/${{report.detail.toString()}}`)); // each job earns once

// "<peer>\\n<job>": have a peer SERVE a job (this node's operator only).
plugin.on("ASK", async (event) => {{
  if (event.peer !== plugin.welcome.peer_id) throw new Error("ASK is for this node's operator");
  const text = event.data.toString();
  const newline = text.indexOf("\\n");
  if (newline < 0) throw new Error("ASK takes '<peer ID>\\\\n<job>'");
  const [peer, job] = [text.slice(0, newline), text.slice(newline + 1)];
  asked.add(`${{peer}}/${{job}}`);
  return plugin.request(peer, "SERVE", Buffer.from(job));
}});

plugin.start().then((welcome) => {{
  console.log(`{name} ${{plugin.version}} registered on node ${{welcome.peer_id}}`);
}});
'''

TEST = '''\
"""The {name} plugin (JavaScript) on a local network of real nodes (meshd.testing)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import trio

from meshd.testing import eventually, open_network

PACKAGE = Path(__file__).resolve().parents[1]
EXTERNAL = {{"plugins.external": {{"{name}": {{"command": ["node", str(PACKAGE / "index.js")]}}}}}}


@contextlib.asynccontextmanager
async def nodes(directory, **options):
    """Two connected nodes that require the plugin and run index.js as an external plugin."""
    async with open_network(directory, 2, required=["{name}"], config=EXTERNAL,
                            **options) as net:
        for node in net.nodes:
            await eventually(node.plugins, lambda plugins: "{name}" in plugins
                             and plugins["{name}"].state == "running",
                             what=f"{name} to run on {{node.name}} (see its log)")
        yield net
''' + TESTS

README = '''\
# The {name} plugin (JavaScript)

A Mesh external plugin made by `meshctl plugins new {name} --lang js`.
`index.js` is the plugin (docs/plugins.md explains each part); `mesh-plugin.js`
is Mesh's PluginHost client, built at run time from `proto/`.
`tests/test_{module}.py` runs it on a local network of real nodes and checks
that its work earns.

```sh
npm ci                       # Node 18+: @grpc/grpc-js, @grpc/proto-loader
python -m pytest tests       # in the venv meshd runs from (pytest, pytest-trio)
```

A node runs it when its meshd.toml says so, and networks that need it require it:

```toml
[plugins.external.{name}]
command = ["node", "/path/to/{name}/index.js"]
```
'''


def kit_missing() -> list[Path]:
    """The files of Mesh's source tree the package copies that are not here."""
    return [source for source in KIT.values() if not source.is_file()]


def package_json(name: str) -> dict[str, object]:
    example = json.loads((EXAMPLE / "package.json").read_text(encoding="utf-8"))
    return {"name": f"mesh-plugin-{name}", "version": "0.1.0",
            "description": f"The {name} plugin of a Mesh network (an external plugin)",
            "private": True, "license": example["license"], "main": "index.js",
            "engines": example["engines"], "scripts": {"start": "node index.js"},
            "dependencies": example["dependencies"]}


def package_lock(name: str, package: dict[str, object]) -> dict[str, object]:
    """The example's lock with this package as its root: the same pinned tree."""
    lock = json.loads((EXAMPLE / "package-lock.json").read_text(encoding="utf-8"))
    lock["name"], lock["version"] = package["name"], package["version"]
    lock["packages"][""] = {key: package[key] for key in
                            ("name", "version", "license", "dependencies", "engines")}
    return dict(lock)


def files(name: str, module: str) -> dict[str, str]:
    """Relative path -> content of the JavaScript package for plugin ``name``."""
    names = {"name": name, "module": module}
    package = package_json(name)
    return {
        "package.json": json.dumps(package, indent=2) + "\n",
        "package-lock.json": json.dumps(package_lock(name, package), indent=2) + "\n",
        "README.md": README.format(**names),
        "index.js": INDEX.format(**names),
        "pytest.ini": "[pytest]\ntrio_mode = true\n",
        f"tests/test_{module}.py": TEST.format(**names),
        ".gitignore": "node_modules/\n",
        **{relative: source.read_text(encoding="utf-8") for relative, source in KIT.items()},
    }
