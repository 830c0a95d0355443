// js-hash: an external Mesh plugin in JavaScript.
//
// * task kind SHA256: the provider hashes the payload; the requester's copy of
//   the plugin checks the digest before the receipt is signed;
// * event ECHO: answers a peer's data back;
// * event PEERS: answers the peers this node is connected to (a call back into meshd).
//
// Configure it in meshd.toml (docs/plugins.md, "External plugins"):
//   [plugins.external.js-hash]
//   command = ["node", "/path/to/plugins/examples/js-hash/index.js"]
"use strict";

const crypto = require("node:crypto");
const { MeshPlugin } = require("./mesh-plugin");

const plugin = new MeshPlugin({
  version: "1.0.0",
  summary: "SHA-256 tasks and an ECHO event, in JavaScript",
});

function sha256(data) {
  return Buffer.from(crypto.createHash("sha256").update(data).digest("hex"));
}

plugin.handleTask("SHA256", async (task) => ({ result: sha256(task.payload), units: 1 }), {
  verify: async (task, result) => result.result.equals(sha256(task.payload)),
});

plugin.on("ECHO", async (event) => event.data);

plugin.on("PEERS", async () => Buffer.from((await plugin.peers()).join("\n")));

plugin.start().then((welcome) => {
  console.log(`js-hash ${plugin.version} registered on node ${welcome.peer_id}`);
});
