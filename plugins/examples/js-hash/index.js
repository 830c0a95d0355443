// js-hash: an external Mesh plugin in JavaScript.
//
// * task kind SHA256: the provider hashes the payload; the requester's copy of
//   the plugin checks the digest before the receipt is signed;
// * event ECHO: answers a peer's data back;
// * event PEERS: answers the peers this node is connected to (a call back into meshd);
// * event HASH: answers the SHA-256 of a peer's data, then reports the work to
//   that peer, whose copy of the plugin countersigns a receipt if it asked for
//   exactly that digest (ASK_HASH);
// * event ASK_HASH (this node's operator only): "<peer ID>\n<data>" has the
//   peer HASH the data;
// * event REPORTED: what became of this node's reports, as JSON
//   {"receipts": [hex hashes], "refused": [messages]};
// * event FAIL_HASH (this node's operator only): the last report this node
//   accepted proved false after all: a failure verdict on it (reportFailure),
//   answered as the verdict entry's hash (hex);
// * events DHT_PUT ("<key>\n<value>", stores the value and announces this node
//   as a provider of the key) and DHT_GET (key: the value, and the providers as
//   "\n<peer ID>" lines after it), over the network's DHT in the plugin's own
//   key space;
// * event LOCAL ("<plugin>\n<event>\n<data>", this node's operator only): that
//   event of another plugin on this node (callPlugin), if it takes it from
//   plugins, answered as it answers;
// * event RECORD (a peer ID): what this node saw of that peer running its
//   tasks (providerRecord), its track record in the ledger (standing) and the
//   base price (readLedger), as JSON;
// * event SIGN (this node's operator only): this node's signature over the
//   data as a statement of js-hash (sign), in hex;
// * event CHECK ("<peer ID>\n<signature hex>\n<data>"): "1" if the signature
//   is that node's statement of the data (verify), else "0".
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

const asked = new Set(); // "<peer>/<digest>" this node had peers hash, not yet reported
const accepted = []; // the reports this node countersigned, kept as evidence
const receipts = [];
const refused = [];

plugin.on("HASH", async (event) => {
  const digest = sha256(event.data);
  plugin.reportTask(event.peer, "HASH", digest, { units: 1 })
    .then((receipt) => receipts.push(receipt))
    .catch((error) => {
      refused.push(error.message);
      console.error(`HASH for ${event.peer} not countersigned: ${error.message}`);
    });
  return digest;
});

plugin.acceptReports("HASH", async (report) => {
  const key = `${report.provider}/${report.detail.toString()}`;
  const accept = report.units === 1 && asked.delete(key); // each request earns once
  if (accept) accepted.push(report);
  return accept;
});

plugin.on("FAIL_HASH", async (event) => {
  if (event.peer !== plugin.welcome.peer_id) throw new Error("FAIL_HASH is for this node's operator");
  if (!accepted.length) throw new Error("no report accepted yet");
  return Buffer.from(await plugin.reportFailure(accepted[accepted.length - 1], "a wrong digest"));
});

plugin.on("ASK_HASH", async (event) => {
  if (event.peer !== plugin.welcome.peer_id) throw new Error("ASK_HASH is for this node's operator");
  const newline = event.data.indexOf(10);
  if (newline < 0) throw new Error("ASK_HASH takes '<peer ID>\\n<data>'");
  const peer = event.data.subarray(0, newline).toString();
  const data = event.data.subarray(newline + 1);
  const key = `${peer}/${sha256(data).toString()}`;
  asked.add(key);
  try {
    const digest = await plugin.request(peer, "HASH", data);
    if (!digest.equals(sha256(data))) throw new Error(`${peer} answered a wrong digest`);
    return digest;
  } catch (error) {
    asked.delete(key); // nothing to countersign
    throw error;
  }
});

plugin.on("DHT_PUT", async (event) => {
  const newline = event.data.indexOf(10);
  if (newline < 1) throw new Error("DHT_PUT takes '<key>\\n<value>'");
  const key = event.data.subarray(0, newline).toString();
  await plugin.dht.put(key, event.data.subarray(newline + 1));
  await plugin.dht.provide(key);
  return Buffer.from("stored");
}, { timeoutMs: 40000 });

plugin.on("DHT_GET", async (event) => {
  const key = event.data.toString();
  const [value, providers] = await Promise.all([plugin.dht.get(key), plugin.dht.findProviders(key)]);
  return Buffer.concat([value, Buffer.from(providers.map((p) => `\n${p.peerId}`).join(""))]);
}, { timeoutMs: 40000 });

plugin.on("REPORTED", async () => Buffer.from(JSON.stringify({ receipts, refused })));

plugin.on("LOCAL", async (event) => {
  // Only this node's operator: the other plugin takes it as from this node.
  if (event.peer !== plugin.welcome.peer_id || event.caller) {
    throw new Error("LOCAL is for this node's operator");
  }
  const [name, eventName, ...rest] = event.data.toString().split("\n");
  return plugin.callPlugin(name, eventName, Buffer.from(rest.join("\n")));
});

plugin.on("RECORD", async (event) => {
  const peerId = event.data.toString();
  const [record, ledger, standing] = await Promise.all([plugin.providerRecord(peerId),
    plugin.readLedger(), plugin.standing(peerId)]);
  return Buffer.from(JSON.stringify({ ...record, base_price: ledger.base_price,
    spot_check_bps: ledger.spot_check_bps, standing }));
});

plugin.on("SIGN", async (event) => {
  if (event.peer !== plugin.welcome.peer_id) throw new Error("SIGN is for this node's operator");
  return Buffer.from((await plugin.sign(event.data)).toString("hex"));
});

plugin.on("CHECK", async (event) => {
  const first = event.data.indexOf(10);
  const second = event.data.indexOf(10, first + 1);
  if (first < 0 || second < 0) throw new Error("CHECK takes '<peer ID>\\n<signature hex>\\n<data>'");
  const peer = event.data.subarray(0, first).toString();
  const signature = Buffer.from(event.data.subarray(first + 1, second).toString(), "hex");
  const verified = await plugin.verify(peer, event.data.subarray(second + 1), signature);
  return Buffer.from(verified ? "1" : "0");
});

plugin.start().then((welcome) => {
  console.log(`js-hash ${plugin.version} registered on node ${welcome.peer_id}`);
});
