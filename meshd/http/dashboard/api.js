// Calls to this node's REST/JSON gateway (docs/http.md): POST /<Service>/<Method>
// with JSON, and server streams read as Server-Sent Events over fetch (fetch, not
// EventSource, so that the token can go in a header where a call needs it).

const TOKEN_KEY = "mesh-api-token";

export const token = {
  get: () => sessionStorage.getItem(TOKEN_KEY) || "",
  set: (value) => value ? sessionStorage.setItem(TOKEN_KEY, value.trim())
    : sessionStorage.removeItem(TOKEN_KEY),
};

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function headers() {
  const h = { "content-type": "application/json" };
  if (token.get()) h.authorization = `Bearer ${token.get()}`;
  return h;
}

export async function call(method, request = {}) {
  const response = await fetch(`/${method}`, {
    method: "POST", headers: headers(), body: JSON.stringify(request),
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    throw new ApiError(response.status, body.code || "unknown", body.message || response.statusText);
  }
  return body;
}

// Read a server stream until close(); reconnect after a pause when it ends or
// fails. onMessage(message) per event; onState("open" | "closed", why).
export function stream(method, request, onMessage, onState = () => {}) {
  let stopped = false;
  let controller = null;
  async function run() {
    while (!stopped) {
      controller = new AbortController();
      try {
        const response = await fetch(`/${method}`, {
          method: "POST", headers: { ...headers(), accept: "text/event-stream" },
          body: JSON.stringify(request), signal: controller.signal,
        });
        if (!response.ok) throw new Error(`${response.status}`);
        onState("open");
        await readEvents(response.body, onMessage);
        onState("closed", "the stream ended");
      } catch (error) {
        if (stopped) return;
        onState("closed", String(error.message || error));
      }
      await new Promise((resolve) => setTimeout(resolve, 2000));
    }
  }
  run();
  return { close() { stopped = true; if (controller) controller.abort(); } };
}

async function readEvents(body, onMessage) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) name = line.slice(7);
        else if (line.startsWith("data: ")) data.push(line.slice(6));
      }
      if (!data.length) continue; // a comment: keep-alive
      const payload = JSON.parse(data.join("\n"));
      if (name === "error") throw new Error(payload.message);
      onMessage(payload);
    }
  }
}

export const M = {
  status: "mesh.node.v1.NodeService/GetStatus",
  watchStatus: "mesh.node.v1.NodeService/WatchStatus",
  network: "mesh.network.v1.NetworkService/GetNetwork",
  peers: "mesh.peers.v1.PeersService/ListPeers",
  watchPeers: "mesh.peers.v1.PeersService/WatchPeers",
  ping: "mesh.peers.v1.PeersService/PingPeer",
  topics: "mesh.pubsub.v1.PubsubService/ListTopics",
  tokenInfo: "mesh.ledger.v1.LedgerService/GetTokenInfo",
  stateRoot: "mesh.ledger.v1.LedgerService/GetStateRoot",
  balance: "mesh.ledger.v1.LedgerService/GetBalance",
  history: "mesh.ledger.v1.LedgerService/ListHistory",
  rewards: "mesh.ledger.v1.LedgerService/ListRewards",
  explain: "mesh.ledger.v1.LedgerService/ExplainRewards",
  watchSettlements: "mesh.ledger.v1.LedgerService/WatchSettlements",
  proposals: "mesh.governance.v1.GovernanceService/ListProposals",
  watchProposals: "mesh.governance.v1.GovernanceService/WatchProposals",
  vote: "mesh.governance.v1.GovernanceService/Vote",
  tasks: "mesh.tasks.v1.TasksService/ListTasks",
  watchTasks: "mesh.tasks.v1.TasksService/WatchTasks",
  plugins: "mesh.plugins.v1.PluginsService/ListPlugins",
  callPlugin: "mesh.plugins.v1.PluginsService/CallPlugin",
};
