// The peer graph: this node in the middle, its peers around it (d3-force layout,
// drawn as SVG). Peers that left stay greyed out for a while so that an operator
// sees who went.

const SVG = "http://www.w3.org/2000/svg";
const GONE_KEPT_MS = 5 * 60 * 1000;

function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

export class PeerGraph {
  constructor(element) {
    this.element = element;
    this.nodes = new Map(); // id -> {id, self, gone, goneAt, latencyMs, x, y}
    this.simulation = d3.forceSimulation()
      .force("charge", d3.forceManyBody().strength(-120))
      .force("link", d3.forceLink().id((d) => d.id).distance(70))
      .force("center", d3.forceCenter(0, 0))
      .on("tick", () => this.draw());
  }

  setSelf(id) {
    if (!this.nodes.has(id)) this.nodes.set(id, { id, self: true, fx: 0, fy: 0 });
    this.selfId = id;
    this.restart();
  }

  // peers: [{peerId, latencyMs, gone}]
  update(peers) {
    const now = Date.now();
    for (const peer of peers) {
      const node = this.nodes.get(peer.peerId) || { id: peer.peerId };
      node.latencyMs = peer.latencyMs;
      if (peer.gone && !node.gone) node.goneAt = now;
      node.gone = peer.gone;
      this.nodes.set(peer.peerId, node);
    }
    for (const [id, node] of this.nodes) {
      if (node.gone && now - node.goneAt > GONE_KEPT_MS) this.nodes.delete(id);
    }
    this.restart();
  }

  restart() {
    const nodes = [...this.nodes.values()];
    const links = nodes.filter((n) => !n.self && this.selfId)
      .map((n) => ({ source: this.selfId, target: n.id, node: n }));
    this.simulation.nodes(nodes);
    this.simulation.force("link").links(links);
    this.links = links;
    this.simulation.alpha(0.6).restart();
  }

  draw() {
    const root = this.element;
    root.replaceChildren();
    for (const link of this.links || []) {
      const { source, target } = link;
      root.append(svg("line", { x1: source.x, y1: source.y, x2: target.x, y2: target.y,
        class: target.gone ? "gone" : "" }));
      if (target.latencyMs != null && !target.gone) {
        const label = svg("text", { x: (source.x + target.x) / 2, y: (source.y + target.y) / 2 });
        label.textContent = `${target.latencyMs.toFixed(1)} ms`;
        root.append(label);
      }
    }
    for (const node of this.nodes.values()) {
      const circle = svg("circle", {
        cx: node.x, cy: node.y, r: node.self ? 9 : 7,
        class: node.self ? "self" : node.gone ? "gone" : "",
        "data-peer-id": node.id, "data-state": node.self ? "self" : node.gone ? "gone" : "connected",
      });
      const title = svg("title");
      title.textContent = node.id + (node.gone ? " (gone)" : "");
      circle.append(title);
      root.append(circle);
      const label = svg("text", { x: node.x + 10, y: node.y + 3 });
      label.textContent = node.self ? "this node" : `…${node.id.slice(-6)}`;
      root.append(label);
    }
  }
}
