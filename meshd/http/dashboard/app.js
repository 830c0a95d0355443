// The dashboard: one node's view of itself and its network, from the REST
// gateway (api.js). Streams keep the node, peers, settlements, proposals and
// tasks live; the rest is read on a timer. Elements carry data-testid (and raw
// values in data-value) for tests/e2e/test_dashboard.py.

import { call, stream, token, M } from "./api.js";
import { PeerGraph } from "./graph.js";

const $ = (id) => document.querySelector(`[data-testid="${id}"]`);
const HISTORY_EVERY_MS = 2000;
const NETWORK_EVERY_MS = 5000;
const PING_EVERY_MS = 10000;
const STORAGE_EVERY_MS = 30000; // STATUS asks every holder: not too often
const FILES_SHOWN = 20;
const SETTLEMENTS_SHOWN = 10;
const SETTLEMENTS_BACKFILL = 30; // epochs of the minted chart on a fresh page
const REWARD_EPOCHS = 8;
const HISTORY_SHOWN = 20;
// Entries the settlement consensus writes every epoch: hidden unless asked for.
const CONSENSUS_KINDS = new Set(["proposal", "prevote", "precommit", "certificate", "close",
  "attestation"]);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "onclick") node.onclick = v;
    else if (v !== undefined && v !== null) node.setAttribute(k, v);
  }
  node.append(...children.map((c) => (c instanceof Node ? c : String(c))));
  return node;
}

const short = (id) => (id && id.length > 16 ? `${id.slice(0, 8)}…${id.slice(-6)}` : id || "");

// --- state shared by panels ---------------------------------------------------------------

const state = {
  self: "",
  token: { decimals: 0, symbol: "" },
  peers: new Map(), // peer ID -> {peerId, direction, agent, latencyMs, gone}
  account: "", // the ledger panel's account ("" = this node)
  settlements: [], // newest last
  activity: [[], [], [], []], // time, peers, routing table size, gossip delivered per second
  lastGossip: null, // {at, delivered}
};

function amount(base) {
  const { decimals, symbol } = state.token;
  let digits = BigInt(base || "0").toString();
  const negative = digits.startsWith("-");
  if (negative) digits = digits.slice(1);
  digits = digits.padStart(decimals + 1, "0");
  const whole = digits.slice(0, digits.length - decimals);
  const fraction = decimals ? digits.slice(-decimals).replace(/0+$/, "") : "";
  const grouped = whole.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  return `${negative ? "-" : ""}${grouped}${fraction ? `.${fraction}` : ""} ${symbol}`.trim();
}

function setValue(testid, text, raw) {
  const node = $(testid);
  node.textContent = text;
  if (raw !== undefined) node.dataset.value = String(raw);
}

function reportError(error) {
  const box = document.getElementById("api-error");
  box.hidden = !error;
  box.textContent = error ? String(error.message || error) : "";
}

// Calls that overlap (one per settlement, a timer's) may answer out of order: only
// the newest call's answer is shown.
function newestOnly(fn) {
  let ticket = 0;
  return async (...args) => {
    const mine = ++ticket;
    return fn(() => mine === ticket, ...args);
  };
}

async function guarded(fn) {
  try {
    await fn();
  } catch (error) {
    reportError(error);
  }
}

// --- node ------------------------------------------------------------------------------------

function uptime(startedAt) {
  let seconds = Math.max(0, Math.floor((Date.now() - Date.parse(startedAt)) / 1000));
  const parts = [];
  for (const [unit, size] of [["d", 86400], ["h", 3600], ["m", 60]]) {
    if (seconds >= size) {
      parts.push(`${Math.floor(seconds / size)}${unit}`);
      seconds %= size;
    }
  }
  parts.push(`${seconds}s`);
  return parts.join(" ");
}

function renderStatus(status) {
  state.self = status.peerId;
  state.startedAt = status.startedAt;
  graph.setSelf(status.peerId);
  const badge = $("node-state");
  const name = status.state.replace("NODE_STATE_", "").toLowerCase();
  badge.textContent = name;
  badge.dataset.value = name;
  badge.className = `badge ${["active", "participating", "voting", "connected"].includes(name)
    ? "ok" : "warn"}`;
  setValue("network-name", status.networkName);
  setValue("node-peer-id", status.peerId, status.peerId);
  setValue("node-network-id", status.networkId, status.networkId);
  setValue("node-reachability", status.reachability, status.reachability);
  setValue("node-version", status.version, status.version);
  setValue("node-peer-count", status.peerCount, status.peerCount);
  $("node-addresses").replaceChildren(...status.listenAddrs.map((a) => el("li", {}, a)));
  $("node-warnings").replaceChildren(...status.warnings.map((w) => el("li", {}, w)));
  document.title = `Mesh: ${short(status.peerId)} (${name})`;
}

// --- peers -----------------------------------------------------------------------------------

const graph = new PeerGraph(document.getElementById("peer-graph"));

function renderPeers() {
  const rows = [...state.peers.values()].sort((a, b) => (a.gone - b.gone)
    || a.peerId.localeCompare(b.peerId));
  const connected = rows.filter((p) => !p.gone);
  setValue("peers-count", `${connected.length} connected`, connected.length);
  $("peers-table").replaceChildren(...rows.map((p) => el("tr", {
    "data-peer-id": p.peerId, class: p.gone ? "gone" : "",
  }, el("td", { class: "mono", title: p.peerId }, short(p.peerId)),
  el("td", {}, (p.direction || "").replace("DIRECTION_", "").toLowerCase()),
  el("td", {}, p.gone ? "gone" : p.latencyMs == null ? "…" : `${p.latencyMs.toFixed(1)} ms`),
  el("td", { class: "small" }, p.agent || ""))));
  graph.update(rows);
}

function peerJoined(peer) {
  const known = state.peers.get(peer.peerId) || {};
  state.peers.set(peer.peerId, { ...known, peerId: peer.peerId, direction: peer.direction,
    agent: peer.agent, gone: false });
}

async function pingPeers() {
  for (const peer of state.peers.values()) {
    if (peer.gone) continue;
    try {
      const answer = await call(M.ping, { peerId: peer.peerId, count: 1 });
      if (answer.rtts.length) peer.latencyMs = parseFloat(answer.rtts[0]) * 1000;
    } catch (error) {
      peer.latencyMs = null;
    }
  }
  renderPeers();
}

// --- gossip and DHT --------------------------------------------------------------------------

let activityChart = null;

async function refreshNetwork() {
  const [network, topics] = await Promise.all([call(M.network), call(M.topics)]);
  setValue("dht-routing-table", network.routingTableSize, network.routingTableSize);
  $("topics").replaceChildren(...topics.topics.map((t) => el("li", {},
    `${t.name} (${t.localSubscribers} local)`)));
  const g = topics.gossip;
  setValue("gossip-counters", `${g.published} published, ${g.delivered} delivered, `
    + `${g.dropped} dropped, ${g.rejected} rejected`, g.delivered);
  const now = Date.now() / 1000;
  const [times, peers, routing, rate] = state.activity;
  const last = state.lastGossip;
  times.push(now);
  peers.push(network.peerCount);
  routing.push(network.routingTableSize);
  rate.push(last ? (Number(g.delivered) - last.delivered) / Math.max(1, now - last.at) : null);
  state.lastGossip = { at: now, delivered: Number(g.delivered) };
  if (times.length > 120) state.activity.forEach((series) => series.shift());
  const box = document.getElementById("activity-chart");
  if (!activityChart) {
    activityChart = new uPlot({ width: box.clientWidth || 300, height: 140,
      // At least the last minute, not uPlot's years around a first lone point.
      scales: { x: { range: (u, min, max) => [Math.min(min, max - 60), max + 1] } },
      series: [{}, { label: "peers", stroke: "#3559e0" },
        { label: "DHT routing table", stroke: "#12805c" },
        { label: "gossip delivered/s", stroke: "#b54708" }] }, state.activity, box);
  } else {
    activityChart.setData(state.activity);
  }
}

// --- ledger ----------------------------------------------------------------------------------

let mintedChart = null;

async function refreshTokenInfo() {
  const info = await call(M.tokenInfo);
  state.token = { decimals: info.decimals, symbol: info.symbol };
  setValue("ledger-minted-total", amount(info.mintedTotal), info.mintedTotal);
  setValue("ledger-holders", info.holders, info.holders);
  return info;
}

const refreshStateRoot = newestOnly(async (current) => {
  const root = await call(M.stateRoot);
  if (!current()) return;
  setValue("ledger-final-epoch", root.epoch, root.epoch);
  setValue("ledger-state-root", root.root, root.root);
  setValue("ledger-supply", amount(root.supply), root.supply);
});

function settled(event) {
  if (state.settlements.some((s) => s.epoch === event.epoch)) return; // seen before a reconnect
  state.settlements.push(event);
  state.settlements.sort((a, b) => Number(a.epoch) - Number(b.epoch));
  if (state.settlements.length > 60) state.settlements.shift();
  const recent = state.settlements.slice(-SETTLEMENTS_SHOWN).reverse();
  $("settlements").replaceChildren(...recent.map((s) => el("tr", { "data-epoch": s.epoch },
    el("td", {}, s.epoch), el("td", { "data-value": s.minted }, amount(s.minted)),
    el("td", { class: "mono small" }, s.root.slice(0, 16)))));
  const data = [state.settlements.map((s) => Number(s.epoch)),
    state.settlements.map((s) => Number(BigInt(s.minted)) / 10 ** state.token.decimals)];
  const box = document.getElementById("minted-chart");
  if (!mintedChart) {
    mintedChart = new uPlot({ width: box.clientWidth || 300, height: 140,
      scales: { x: { time: false } },
      series: [{ label: "epoch" }, { label: `minted (${state.token.symbol})`, stroke: "#b54708" }],
    }, data, box);
  } else {
    mintedChart.setData(data);
  }
  guarded(async () => {
    await Promise.all([refreshStateRoot(), refreshTokenInfo(), refreshRewards()]);
  });
}

const refreshAccount = newestOnly(async (current) => {
  const account = state.account;
  const [balance, history] = await Promise.all([
    call(M.balance, { account }), call(M.history, { account, limit: 200 })]);
  if (!current()) return;
  const everything = document.getElementById("consensus-entries").checked;
  const entries = history.entries.filter((e) => everything || !CONSENSUS_KINDS.has(e.kind))
    .slice(0, HISTORY_SHOWN);
  const rows = [["available", balance.available], ["settled", balance.settled],
    ["bonded", balance.bonded], ["pending out", balance.pendingOut],
    ["pending in", balance.pendingIn]];
  $("account-balance").replaceChildren(
    el("dt", {}, "account"), el("dd", { class: "mono small", "data-testid": "account-id" },
      balance.account),
    ...rows.flatMap(([label, value]) => [el("dt", {}, label),
      el("dd", { "data-testid": `balance-${label.replace(" ", "-")}`, "data-value": value },
        amount(value))]));
  $("history").replaceChildren(...entries.map((e) => el("tr", { "data-hash": e.hash },
    el("td", {}, e.epoch), el("td", {}, e.kind), el("td", { class: "mono", title: e.to },
      short(e.to)),
    el("td", { "data-value": e.amount }, e.amount ? amount(e.amount) : ""),
    el("td", {}, e.memo))));
});

// --- rewards ---------------------------------------------------------------------------------

let explained = null;
const rewardsByEpoch = new Map(); // epoch -> Promise of its ListRewards answer

const refreshRewards = newestOnly(async (current) => {
  const latest = state.settlements.length
    ? Number(state.settlements[state.settlements.length - 1].epoch) : null;
  if (latest === null) return;
  const epochs = [];
  for (let epoch = latest; epoch >= Math.max(0, latest - REWARD_EPOCHS + 1); epoch -= 1) {
    epochs.push(epoch);
  }
  // A final epoch's rewards never change: each is asked for once, and
  // forgotten once it leaves the table.
  for (const epoch of rewardsByEpoch.keys()) {
    if (epoch < epochs[epochs.length - 1]) rewardsByEpoch.delete(epoch);
  }
  const answers = await Promise.all(epochs.map((epoch) => {
    if (!rewardsByEpoch.has(epoch)) {
      rewardsByEpoch.set(epoch, call(M.rewards, { epoch }).catch((error) => {
        rewardsByEpoch.delete(epoch); // asked again at the next settlement
        throw error;
      }));
    }
    return rewardsByEpoch.get(epoch);
  }));
  if (!current()) return;
  $("rewards").replaceChildren(...answers.map((r) => el("tr", {
    class: `selectable${explained === Number(r.epoch) ? " selected" : ""}`,
    "data-epoch": r.epoch, onclick: () => explain(Number(r.epoch)),
  }, el("td", {}, r.epoch), el("td", { "data-value": r.minted }, amount(r.minted)),
  el("td", {}, r.accounts.length))));
});

async function explain(epoch) {
  explained = epoch;
  await guarded(async () => {
    const answer = await call(M.explain, { epoch });
    const box = $("rewards-explain");
    box.textContent = answer.lines.join("\n");
    box.dataset.epoch = String(epoch);
  });
  refreshRewards();
}

// --- governance ------------------------------------------------------------------------------

const proposals = new Map();

function tallyBar(tally) {
  const parts = ["yes", "no", "abstain", "veto"].map((k) => [k, Number(BigInt(tally[k] || "0"))]);
  const total = parts.reduce((sum, [, v]) => sum + v, 0) || 1;
  return el("div", { class: "bar", title: parts.map(([k, v]) => `${k} ${v}`).join(", ") },
    ...parts.map(([k, v]) => el("span", { class: k, style: `width:${(100 * v) / total}%` })));
}

function renderProposals() {
  const list = [...proposals.values()].sort((a, b) => Number(b.submittedEpoch)
    - Number(a.submittedEpoch));
  $("proposals").replaceChildren(...(list.length ? list.map((p) => {
    const open = p.status === "open" || p.status === "voting";
    const buttons = open ? ["yes", "no", "abstain", "veto"].map((option) => el("button", {
      "data-testid": `vote-${option}`, onclick: () => vote(p.id, option),
    }, option)) : [];
    return el("div", { class: "proposal", "data-proposal-id": p.id, "data-status": p.status },
      el("strong", {}, p.title), " ", el("span", { class: "badge" }, p.status),
      el("div", { class: "small" }, `${p.kind} · by ${short(p.author)} · voters `,
        el("span", { "data-testid": "tally-voters" }, p.tally.voters),
        " · my vote ", el("span", { "data-testid": "my-vote" }, p.myVote || "none")),
      tallyBar(p.tally),
      el("div", { class: "row" }, ...buttons));
  }) : [el("p", { class: "small" }, "No proposals.")]));
}

async function vote(id, option) {
  if (!token.get()) {
    reportError("Voting needs the API token: paste it into the field at the top.");
    return;
  }
  await guarded(async () => {
    await call(M.vote, { proposalId: id, option });
    reportError(null);
    const answer = await call(M.proposals);
    answer.proposals.forEach((p) => proposals.set(p.id, p));
    renderProposals();
  });
}

// --- tasks, plugins, storage -----------------------------------------------------------------

const tasks = new Map();

function renderTasks() {
  const list = [...tasks.values()].sort((a, b) => (b.submittedAt || "")
    .localeCompare(a.submittedAt || ""));
  $("tasks").replaceChildren(...list.slice(0, 20).map((t) => el("tr", { "data-task-id": t.taskId },
    el("td", { class: "mono" }, short(t.taskId)), el("td", {}, `${t.plugin}/${t.kind}`),
    el("td", { "data-value": t.state }, t.state), el("td", {}, t.providers.length))));
}

async function refreshPlugins() {
  const answer = await call(M.plugins);
  $("plugins").replaceChildren(...answer.plugins.map((p) => el("tr", { "data-plugin": p.name },
    el("td", {}, p.name), el("td", {}, p.version),
    el("td", { "data-value": p.state }, p.state),
    el("td", {}, p.kind.replace("PLUGIN_KIND_", "").toLowerCase()))));
}

// --- stored files: the storage plugin's FILES and STATUS (docs/storage.md §7) ----------------

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const base64 = (text) => btoa(String.fromCharCode(...encoder.encode(text)));
const unbase64 = (data) => decoder.decode(Uint8Array.from(atob(data || ""), (c) => c.charCodeAt(0)));

async function storageCall(event, data = "") {
  const answer = await call(M.callPlugin,
    { plugin: "storage", event, data: base64(data), timeoutMs: 30000 });
  return JSON.parse(unbase64(answer.data));
}

// Healthy: every stripe has all n pieces on live holders; degraded: k or more
// (readable, repair comes after its grace); unreadable: a stripe has fewer than k.
function health(status) {
  const weakest = Math.min(...status.stripes.map((s) => s.healthy));
  const shown = `${weakest}/${status.n}`;
  if (weakest >= status.n) return ["healthy", shown];
  return [weakest >= status.k ? "degraded" : "unreadable", shown];
}

function storageNote(testId, text) {
  $("storage").replaceChildren(el("tr", { "data-testid": testId },
    el("td", { colspan: 5, class: "small" }, text)));
}

async function refreshStorage() {
  if (!token.get()) {  // CallPlugin is a write to the gateway: it needs the token
    storageNote("storage-needs-token", "Paste the API token above to list this node's files.");
    return;
  }
  let files;
  try {
    files = (await storageCall("FILES")).slice(0, FILES_SHOWN);
  } catch (error) {
    storageNote("storage-unavailable", `The storage plugin did not answer: ${error.message}`);
    return;
  }
  const rows = await Promise.all(files.map(async (f) => {
    let [state, weakest] = ["unknown", ""];
    try {
      [state, weakest] = health(await storageCall("STATUS", f.cid));
    } catch (error) {
      weakest = error.message;
    }
    return el("tr", { "data-cid": f.cid },
      el("td", {}, f.name), el("td", { class: "mono", title: f.cid }, short(f.cid)),
      el("td", { "data-value": f.size }, f.size), el("td", {}, `${f.k}-of-${f.n}`),
      el("td", { "data-value": state, title: "the weakest stripe's live pieces" },
        `${state} ${weakest}`));
  }));
  if (!rows.length) storageNote("storage-empty", "No files yet: meshctl storage put FILE.");
  else $("storage").replaceChildren(...rows);
}

// --- start -----------------------------------------------------------------------------------

function every(ms, fn) {
  guarded(fn);
  setInterval(() => guarded(fn), ms);
}

function setupToken() {
  const input = document.getElementById("token");
  const shown = () => { $("token-state").textContent = token.get() ? "saved" : ""; };
  document.getElementById("token-form").onsubmit = (event) => {
    event.preventDefault();
    token.set(input.value);
    input.value = "";
    shown();
    guarded(refreshStorage);
  };
  shown();
}

function setupAccount() {
  document.getElementById("consensus-entries").onchange = () => guarded(refreshAccount);
  document.getElementById("account-form").onsubmit = (event) => {
    event.preventDefault();
    state.account = document.getElementById("account").value.trim();
    guarded(refreshAccount);
  };
}

async function start() {
  setupToken();
  setupAccount();
  let info = null;
  await guarded(async () => { info = await refreshTokenInfo(); });
  stream(M.watchStatus, {}, (m) => renderStatus(m.status));
  stream(M.watchPeers, {}, (event) => {
    if (event.kind === "KIND_LEFT") {
      const peer = state.peers.get(event.peerId);
      if (peer) peer.gone = true;
    } else {
      peerJoined(event);
    }
    renderPeers();
  });
  // The recent settlements first (the chart and table), then each new one.
  const from = info ? Math.max(0, Number(info.finalEpoch) - SETTLEMENTS_BACKFILL) : undefined;
  stream(M.watchSettlements, from === undefined ? {} : { fromEpoch: from }, settled);
  stream(M.watchProposals, {}, (event) => {
    proposals.set(event.proposal.id, event.proposal);
    renderProposals();
  });
  stream(M.watchTasks, {}, (event) => {
    tasks.set(event.task.taskId, event.task);
    renderTasks();
  });
  await guarded(async () => {
    const [list, all] = await Promise.all([call(M.proposals), call(M.tasks)]);
    list.proposals.forEach((p) => proposals.set(p.id, p));
    all.tasks.forEach((t) => tasks.set(t.taskId, t));
    renderProposals();
    renderTasks();
  });
  every(HISTORY_EVERY_MS, refreshAccount);
  every(NETWORK_EVERY_MS, refreshNetwork);
  every(NETWORK_EVERY_MS, refreshPlugins);
  every(PING_EVERY_MS, pingPeers);
  every(STORAGE_EVERY_MS, refreshStorage);
  setInterval(() => {
    if (state.startedAt) setValue("node-uptime", uptime(state.startedAt));
  }, 1000);
  refreshStateRoot().catch(reportError);
}

start();
