// A small client of mesh.pluginhost.v1.PluginHost for Node: what an external Mesh
// plugin needs, built at run time from proto/ (no generated code).
//
//   const { MeshPlugin } = require("./mesh-plugin");
//   const plugin = new MeshPlugin({ version: "1.0.0" });
//   plugin.on("ECHO", async (event) => event.data);
//   plugin.handleTask("SHA256", async (task) => ({ result }), { verify: async (task, r) => true });
//   plugin.start();
//
// meshd starts the plugin with MESH_PLUGIN_ADDRESS, MESH_PLUGIN_NAME and
// MESH_PLUGIN_DATA_DIR set. When the stream to meshd ends, the process exits:
// meshd starts a fresh one if it still wants the plugin.
"use strict";

const fs = require("node:fs");
const path = require("node:path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

// The proto files: MESH_PROTO_DIR, else a copy next to this file (a package made
// by `meshctl plugins new --lang js`), else Mesh's source tree (the example).
const PROTO_DIR = process.env.MESH_PROTO_DIR
  || [path.join(__dirname, "proto"), path.join(__dirname, "..", "..", "..", "proto")]
    .find((dir) => fs.existsSync(dir));

function loadHost() {
  const definition = protoLoader.loadSync("mesh/pluginhost/v1/pluginhost.proto", {
    includeDirs: [PROTO_DIR],
    keepCase: true,
    longs: String,
    defaults: true,
    oneofs: true,
  });
  return grpc.loadPackageDefinition(definition).mesh.pluginhost.v1;
}

class CallError extends Error {
  constructor(code, message) {
    super(`${code}: ${message}`);
    this.code = code;
  }
}

class MeshPlugin {
  constructor({ version, summary = "" }) {
    this.name = requireEnv("MESH_PLUGIN_NAME");
    this.address = requireEnv("MESH_PLUGIN_ADDRESS");
    this.dataDir = process.env.MESH_PLUGIN_DATA_DIR || "";
    this.version = version;
    this.summary = summary;
    this.events = new Map(); // name -> { handler, timeoutMs }
    this.taskKinds = new Map(); // name -> { handler, verify }
    this.topics = new Map(); // topic -> handler
    this.reportRules = new Map(); // kind -> rule
    this.pending = new Map(); // call_id -> { resolve, reject }
    this.nextCallId = 1;
    this.welcome = null;
    // The network's DHT, in this plugin's own key space (plugin/<name>/<key>).
    this.dht = {
      provide: (key) => this.call({ dht_provide: { key } }).then(() => undefined),
      findProviders: (key, count = 20) => this.call({ dht_find_providers: { key, count } })
        .then((r) => r.providers.providers.map((p) => ({ peerId: p.peer_id, addrs: p.addrs }))),
      put: (key, value) => this.call({ dht_put: { key, value } }).then(() => undefined),
      get: (key) => this.call({ dht_get: { key } }).then((r) => r.data),
    };
  }

  // Answer peers' requests named `event`: handler({peer, name, data}) -> Buffer.
  // Throw to refuse; the peer sees the message.
  // `fromPlugins`: other plugins on this node may send it too (callPlugin); the
  // handler's event then has `caller`, their name, and `peer` is this node.
  on(event, handler, { timeoutMs = 10000, fromPlugins = false } = {}) {
    this.events.set(event, { handler, timeoutMs, fromPlugins });
  }

  // Execute tasks of `kind`: handler({taskId, kind, payload, requester}) ->
  // {result: Buffer, proof?: Buffer, units?: number}. With `verify`, this plugin
  // judges results of the kind: verify(task, result) -> boolean.
  handleTask(kind, handler, { verify = null } = {}) {
    this.taskKinds.set(kind, { handler, verify });
  }

  // --- calls to meshd (each returns a Promise) ------------------------------

  request(peerId, event, data, { timeoutMs = 10000 } = {}) {
    return this.call({ request: { peer_id: peerId, event, data, timeout_ms: timeoutMs } })
      .then((result) => result.data);
  }

  publish(topic, data) {
    return this.call({ publish: { topic, data } }).then(() => undefined);
  }

  subscribe(topic, handler) {
    this.topics.set(topic, handler);
    return this.call({ subscribe: { topic } }).then(() => undefined);
  }

  submitTask(kind, payload, options = {}) {
    return this.call({
      submit_task: {
        kind,
        payload,
        redundancy: options.redundancy || 0,
        capabilities: options.capabilities || [],
        timeout_ms: options.timeoutMs || 0,
        attempts: options.attempts || 0,
        providers: options.providers || [],
        max_price: options.maxPrice || 0,
      },
    }).then((result) => result.outcome);
  }

  // Report work done for `peerId` outside tasks (in an event handler, say): the
  // peer's copy of the plugin judges it (acceptReports) and, if it agrees, its
  // node records a receipt signed by both. Resolves to the receipt's hash (hex).
  // `note`: one line kept with the receipt on this node, printed under it by
  // `meshctl rewards explain` (what the work was).
  reportTask(peerId, kind, detail, { units = 1, note = "" } = {}) {
    return this.call({ report_task: { peer_id: peerId, kind, detail, units, note } })
      .then((result) => result.data.toString("hex"));
  }

  // Countersign peers' reports of `kind` when rule({provider, kind, detail, units,
  // claim, signature}) resolves to true. Accept each piece of work once; keep the
  // report if the work could later prove false (reportFailure).
  acceptReports(kind, rule) {
    this.reportRules.set(kind, rule);
  }

  // Work a peer reported has proved false: a failure verdict on the report's
  // signed claim (the object a rule was given, here or on another node).
  // Verdicts of two eligible nodes slash the provider (docs/tasks.md §5b).
  // Resolves to the verdict's hash (hex).
  reportFailure(report, reason) {
    const { provider, kind, detail, units, claim, signature } = report;
    return this.call({ report_failure: { provider, kind, detail, units, claim, signature, reason } })
      .then((result) => result.data.toString("hex"));
  }

  peers() {
    return this.call({ list_peers: {} }).then((result) => result.peers.peer_ids);
  }

  // {final_epoch, clock_epoch, balance, bonded, base_price, spot_check_bps} of
  // `peerId` ("": this node), as of the newest final settlement.
  readLedger(peerId = "") {
    return this.call({ read_ledger: { peer_id: peerId } }).then((result) => result.ledger);
  }

  // An event to another plugin on this node; resolves to its answer (a Buffer).
  callPlugin(plugin, event, data = Buffer.alloc(0), { timeoutMs = 0 } = {}) {
    return this.call({ call_plugin: { plugin, event, data, timeout_ms: timeoutMs } })
      .then((result) => result.data);
  }

  // What this node saw of `peerId` executing this plugin's tasks since meshd
  // started: {known, first_seen, done, failed, wrong}; for ranking providers.
  providerRecord(peerId) {
    return this.call({ provider_record: { peer_id: peerId } }).then((result) => result.record);
  }

  // `peerId`'s track record in every final settlement ("": this node), the same
  // on every node: {through_epoch, since_epoch, receipts, units, uptime_epochs,
  // offences, failed_tasks, last_offence_epoch, slashed, earned, paid, refunded}.
  standing(peerId = "") {
    return this.call({ standing: { peer_id: peerId } }).then((result) => result.standing);
  }

  // This node's signature (a 64-byte Buffer) over `data` as a statement of this
  // plugin, which any node's verify() checks without asking this one.
  sign(data) {
    return this.call({ sign: { data } }).then((result) => result.data);
  }

  // Whether `signature` is `peerId`'s node's sign(data) for this plugin.
  verify(peerId, data, signature) {
    return this.call({ verify: { peer_id: peerId, data, signature } })
      .then((result) => result.verified === true);
  }

  call(kind) {
    const callId = String(this.nextCallId++);
    return new Promise((resolve, reject) => {
      this.pending.set(callId, { resolve, reject });
      this.stream.write({ call: { call_id: callId, ...kind } });
    });
  }

  // --- the stream -----------------------------------------------------------

  start() {
    const host = loadHost();
    const client = new host.PluginHost(this.address, grpc.credentials.createInsecure());
    this.stream = client.Connect();
    this.stream.write({
      register: {
        name: this.name,
        version: this.version,
        summary: this.summary,
        events: [...this.events].map(([name, e]) => ({
          name, timeout_ms: e.timeoutMs, from_plugins: e.fromPlugins })),
        task_kinds: [...this.taskKinds].map(([name, t]) => ({ name, verifies: !!t.verify })),
        report_kinds: [...this.reportRules.keys()],
      },
    });
    this.stream.on("data", (message) => this.receive(message));
    this.stream.on("error", (error) => {
      console.error(`stream to meshd failed: ${error.details || error.message}`);
      process.exit(1);
    });
    this.stream.on("end", () => {
      console.error("meshd closed the stream; exiting");
      process.exit(0);
    });
    return new Promise((resolve) => { this.onWelcome = resolve; });
  }

  receive(message) {
    switch (message.kind) {
      case "welcome":
        this.welcome = message.welcome;
        if (this.onWelcome) this.onWelcome(message.welcome);
        break;
      case "ping":
        this.stream.write({ pong: { nonce: message.ping.nonce } });
        break;
      case "event":
        this.answerEvent(message.event);
        break;
      case "task":
        this.answerTask(message.task);
        break;
      case "verify":
        this.answerVerify(message.verify);
        break;
      case "report":
        this.answerReport(message.report);
        break;
      case "result":
        this.settle(message.result);
        break;
      case "message": {
        const handler = this.topics.get(message.message.topic);
        if (handler) handler(message.message);
        break;
      }
      default:
        console.error(`unknown message from meshd: ${message.kind}`);
    }
  }

  async answerEvent(call) {
    const answer = { call_id: call.call_id };
    try {
      const registered = this.events.get(call.event);
      answer.data = await registered.handler({ peer: call.peer_id, name: call.event, data: call.data,
        caller: call.caller });
    } catch (error) {
      answer.error = String(error.message || error);
    }
    this.stream.write({ event_answer: answer });
  }

  async answerTask(call) {
    const answer = { call_id: call.call_id };
    try {
      const registered = this.taskKinds.get(call.kind);
      const done = await registered.handler(taskOf(call));
      answer.result = done.result;
      answer.proof = done.proof || Buffer.alloc(0);
      answer.units = done.units || 1;
    } catch (error) {
      answer.error = String(error.message || error);
    }
    this.stream.write({ task_answer: answer });
  }

  async answerVerify(call) {
    let valid = false;
    try {
      const registered = this.taskKinds.get(call.kind);
      valid = !!(await registered.verify(taskOf(call),
        { result: call.result, proof: call.proof, units: Number(call.units) }));
    } catch (error) {
      console.error(`verify of ${call.kind} failed: ${error.message || error}`);
    }
    this.stream.write({ verify_answer: { call_id: call.call_id, valid } });
  }

  async answerReport(call) {
    let accept = false;
    try {
      accept = !!(await this.reportRules.get(call.kind)({
        provider: call.provider, kind: call.kind, detail: call.detail, units: Number(call.units),
        claim: call.claim, signature: call.signature,
      }));
    } catch (error) {
      console.error(`report rule of ${call.kind} failed: ${error.message || error}`);
    }
    this.stream.write({ report_answer: { call_id: call.call_id, accept } });
  }

  settle(result) {
    const waiting = this.pending.get(result.call_id);
    if (!waiting) return;
    this.pending.delete(result.call_id);
    if (result.error) waiting.reject(new CallError(result.error.code, result.error.message));
    else waiting.resolve(result);
  }
}

function taskOf(call) {
  return { taskId: call.task_id, kind: call.kind, payload: call.payload, requester: call.requester };
}

function requireEnv(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`${name} is not set: this program is an external Mesh plugin, started by meshd`);
    process.exit(2);
  }
  return value;
}

module.exports = { MeshPlugin, CallError };
