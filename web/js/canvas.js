// @ts-check
/**
 * The canvas view: draws the graph model and turns pointer/keyboard input into model edits.
 * Menus, search and file dialogs are supplied by the app shell through `ViewHooks`.
 */
import { TITLE_H, SLOT_H, WIDGET_H, MODE_MUTED, MODE_BYPASS, isVisibleWidget } from "./graph.js";
import { CONTROL_VALUES, typesCompatible } from "./nodedefs.js";

/** @typedef {import("./graph.js").Graph} Graph */
/** @typedef {import("./graph.js").GraphNode} GraphNode */
/** @typedef {import("./graph.js").Widget} Widget */
/** @typedef {import("./graph.js").Group} Group */
/**
 * @typedef {{
 *   commit: () => void,
 *   hint: (text: string, kind?: "info" | "error") => void,
 *   search: (at: number[], screen: number[], filter: {inputType?: string, outputType?: string}, done: (type: string) => void) => void,
 *   menu: (items: MenuItem[], screen: number[]) => void,
 *   nodeMenu: (node: GraphNode) => MenuItem[],
 *   canvasMenu: (at: number[]) => MenuItem[],
 *   upload: (node: GraphNode) => void,
 *   imageChosen: (node: GraphNode) => void,
 * }} ViewHooks
 */
/** @typedef {{label: string, action?: () => void, submenu?: MenuItem[], disabled?: boolean} | null} MenuItem */
/**
 * Live execution state of a node, keyed by node id (set by the app from WebSocket events).
 * @typedef {{running?: boolean, progress?: number, errors?: string[], images?: HTMLImageElement[], preview?: HTMLImageElement}} NodeRuntime
 */

/** Slot colours by wire type (unknown types get a stable hash colour). */
export const TYPE_COLORS = /** @type {Record<string, string>} */ ({
  MODEL: "#b39ddb", CLIP: "#ffd500", VAE: "#ff6e6e", CONDITIONING: "#ffa931", LATENT: "#ff9cf9", IMAGE: "#64b5f6",
  MASK: "#81c784", CONTROL_NET: "#00d78d", INT: "#aaee88", FLOAT: "#aaee88", STRING: "#77bbdd", BOOLEAN: "#ddaa66",
  COMBO: "#aaaacc", SIGMAS: "#cdffcd", NOISE: "#b0b0b0", SAMPLER: "#ecb4b4", GUIDER: "#66ffff", "*": "#cccccc",
});

/** @param {string} type */
export function typeColor(type) {
  if (TYPE_COLORS[type]) return TYPE_COLORS[type];
  let h = 0;
  for (const c of String(type)) h = (h * 31 + c.charCodeAt(0)) % 360;
  return `hsl(${h}, 60%, 65%)`;
}

const NODE_BG = "#353535", NODE_TITLE = "#2b2b2b", TEXT = "#ddd", DIM = "#999";
const RESIZE = 12;

export class CanvasView {
  /**
   * @param {HTMLCanvasElement} canvas
   * @param {Graph} graph
   * @param {ViewHooks} hooks
   */
  constructor(canvas, graph, hooks) {
    this.canvas = canvas;
    this.ctx = /** @type {CanvasRenderingContext2D} */ (canvas.getContext("2d"));
    this.graph = graph;
    this.hooks = hooks;
    this.ds = { scale: 1, offset: [0, 0] };
    /** @type {Set<number>} */ this.selected = new Set();
    /** @type {Group|null} */ this.selectedGroup = null;
    /** @type {Map<string, NodeRuntime>} */ this.runtime = new Map();
    /** @type {any} current pointer gesture */ this.drag = null;
    /** @type {number[]} last pointer position in canvas units */ this.mouse = [0, 0];
    this.needsDraw = true;
    /** @type {{el: HTMLElement, finish: (ok: boolean) => void} | null} the open inline field */
    this.editor = null;
    /** @type {HTMLElement|null} */ this.tooltipEl = null;
    /** @type {Map<number, number[]>} active touch points by pointer id */ this.touches = new Map();
    this.tooltipTimer = 0;
    /** durations (ms) of recent draws, for the frame-time measurement */
    /** @type {number[]} */ this.drawTimes = [];
    graph.listeners.add(() => this.dirty());
    this.bindEvents();
    new ResizeObserver(() => this.resize()).observe(canvas);
    this.resize();
    const loop = () => {
      if (this.needsDraw) this.draw();
      requestAnimationFrame(loop);
    };
    requestAnimationFrame(loop);
  }

  dirty() {
    this.needsDraw = true;
  }

  resize() {
    const dpr = window.devicePixelRatio || 1;
    const r = this.canvas.getBoundingClientRect();
    this.canvas.width = Math.max(1, Math.round(r.width * dpr));
    this.canvas.height = Math.max(1, Math.round(r.height * dpr));
    this.dirty();
  }

  // ---- coordinates -------------------------------------------------------------------------

  /** Client (page) coordinates → canvas units. @param {number} x @param {number} y */
  toGraph(x, y) {
    const r = this.canvas.getBoundingClientRect();
    return [(x - r.left) / this.ds.scale - this.ds.offset[0], (y - r.top) / this.ds.scale - this.ds.offset[1]];
  }

  /** Canvas units → client coordinates. @param {number} x @param {number} y */
  toClient(x, y) {
    const r = this.canvas.getBoundingClientRect();
    return [(x + this.ds.offset[0]) * this.ds.scale + r.left, (y + this.ds.offset[1]) * this.ds.scale + r.top];
  }

  /** @param {GraphNode} node @param {number} i */
  inputPos(node, i) {
    if (node.flags.collapsed) return [node.pos[0], node.pos[1] - TITLE_H / 2];
    return [node.pos[0] + 10, node.pos[1] + i * SLOT_H + SLOT_H / 2 + 3];
  }

  /** @param {GraphNode} node @param {number} i */
  outputPos(node, i) {
    if (node.flags.collapsed) return [node.pos[0] + collapsedWidth(node), node.pos[1] - TITLE_H / 2];
    return [node.pos[0] + node.size[0] - 10, node.pos[1] + i * SLOT_H + SLOT_H / 2 + 3];
  }

  /**
   * Layout of the visible widgets: canvas-unit rectangles.
   * @param {GraphNode} node
   * @returns {{w: Widget, x: number, y: number, width: number, height: number}[]}
   */
  widgetRects(node) {
    const rows = Math.max(node.inputs.length, node.outputs.length);
    const top = node.pos[1] + rows * SLOT_H + 6;
    const visible = node.widgets.filter((w) => isVisibleWidget(w));
    const multiline = visible.filter((w) => w.kind === "STRING" && w.options.multiline);
    // Multiline text fields share the node's spare height unless images need it.
    const rt = this.runtime.get(String(node.id));
    const fixed = visible.length * WIDGET_H + 4;
    const spare = rt?.images?.length || rt?.preview ? 0 : Math.max(0, node.pos[1] + node.height - top - fixed);
    const grow = multiline.length ? Math.max(WIDGET_H * 2, spare / multiline.length) : 0;
    let y = top;
    const out = [];
    for (const w of visible) {
      const height = multiline.includes(w) ? WIDGET_H - 4 + grow : WIDGET_H - 4;
      out.push({ w, x: node.pos[0] + 10, y, width: node.size[0] - 20, height });
      y += height + 4;
    }
    return out;
  }

  /** Client rectangle of a node, for tests and overlays. @param {number} id */
  nodeClientRect(id) {
    const n = /** @type {GraphNode} */ (this.graph.nodes.get(id));
    const [x, y] = this.toClient(n.pos[0], n.pos[1] - titleHeight(n));
    return { x, y, width: n.size[0] * this.ds.scale, height: (n.height + titleHeight(n)) * this.ds.scale };
  }

  /** Client position of a slot centre. @param {number} id @param {"in"|"out"} side @param {number} i */
  slotClientPos(id, side, i) {
    const n = /** @type {GraphNode} */ (this.graph.nodes.get(id));
    const p = side === "in" ? this.inputPos(n, i) : this.outputPos(n, i);
    return this.toClient(p[0], p[1]);
  }

  /** Client rectangle of a widget. @param {number} id @param {string} name */
  widgetClientRect(id, name) {
    const n = /** @type {GraphNode} */ (this.graph.nodes.get(id));
    const r = this.widgetRects(n).find((r) => r.w.name === name);
    if (!r) return null;
    const [x, y] = this.toClient(r.x, r.y);
    return { x, y, width: r.width * this.ds.scale, height: r.height * this.ds.scale };
  }

  // ---- view operations ---------------------------------------------------------------------

  /** Zoom by `factor` keeping the canvas point under client (cx, cy) fixed. */
  zoomAt(/** @type {number} */ factor, /** @type {number} */ cx, /** @type {number} */ cy) {
    const before = this.toGraph(cx, cy);
    this.ds.scale = Math.min(4, Math.max(0.1, this.ds.scale * factor));
    const after = this.toGraph(cx, cy);
    this.ds.offset[0] += after[0] - before[0];
    this.ds.offset[1] += after[1] - before[1];
    this.dirty();
  }

  /** Frame all nodes (or the selection) in the view. */
  fitView(onlySelected = false) {
    const nodes = [...this.graph.nodes.values()].filter((n) => !onlySelected || this.selected.has(n.id));
    const boxes = [...nodes.map((n) => [n.pos[0], n.pos[1] - TITLE_H, n.size[0], n.height + TITLE_H]),
      ...(onlySelected ? [] : this.graph.groups.map((g) => g.bounding))];
    if (!boxes.length) {
      this.ds = { scale: 1, offset: [0, 0] };
      return this.dirty();
    }
    const x0 = Math.min(...boxes.map((b) => b[0])), y0 = Math.min(...boxes.map((b) => b[1]));
    const x1 = Math.max(...boxes.map((b) => b[0] + b[2])), y1 = Math.max(...boxes.map((b) => b[1] + b[3]));
    const r = this.canvas.getBoundingClientRect();
    const scale = Math.min(1.5, Math.max(0.1, Math.min((r.width - 80) / (x1 - x0), (r.height - 80) / (y1 - y0))));
    this.ds.scale = scale;
    this.ds.offset = [r.width / 2 / scale - (x0 + x1) / 2, r.height / 2 / scale - (y0 + y1) / 2];
    this.dirty();
  }

  /** @param {number[]} delta in client pixels */
  pan(delta) {
    this.ds.offset[0] += delta[0] / this.ds.scale;
    this.ds.offset[1] += delta[1] / this.ds.scale;
    this.dirty();
  }

  /** Put the current view into the graph's `extra.ds` (saved with the workflow). */
  storeView() {
    this.graph.extra.ds = { scale: this.ds.scale, offset: [...this.ds.offset] };
  }

  /** Restore the view saved in a workflow, or fit it. */
  restoreView() {
    const ds = this.graph.extra.ds;
    if (ds && typeof ds.scale === "number" && Array.isArray(ds.offset)) this.ds = { scale: ds.scale, offset: [...ds.offset] };
    else this.fitView();
    this.dirty();
  }

  // ---- hit testing -------------------------------------------------------------------------

  /** Nodes in draw order (selected ones on top). */
  drawOrder() {
    const all = [...this.graph.nodes.values()];
    return [...all.filter((n) => !this.selected.has(n.id)), ...all.filter((n) => this.selected.has(n.id))];
  }

  /** @param {number[]} p @returns {GraphNode|null} */
  nodeAt(p) {
    const order = this.drawOrder();
    for (let i = order.length - 1; i >= 0; i--) {
      const n = order[i];
      const w = n.flags.collapsed ? collapsedWidth(n) : n.size[0];
      const h = n.flags.collapsed ? 0 : n.height;
      if (p[0] >= n.pos[0] - 6 && p[0] <= n.pos[0] + w + 6 && p[1] >= n.pos[1] - titleHeight(n) && p[1] <= n.pos[1] + h) return n;
    }
    return null;
  }

  /** @param {GraphNode} n @param {number[]} p @returns {{side: "in"|"out", index: number}|null} */
  slotAt(n, p) {
    const near = (/** @type {number[]} */ q) => Math.abs(q[0] - p[0]) < 12 && Math.abs(q[1] - p[1]) < SLOT_H / 2;
    for (let i = 0; i < n.inputs.length; i++) if (near(this.inputPos(n, i))) return { side: "in", index: i };
    for (let i = 0; i < n.outputs.length; i++) if (near(this.outputPos(n, i))) return { side: "out", index: i };
    return null;
  }

  /** The link whose midpoint marker is under `p`. @param {number[]} p */
  linkAt(p) {
    for (const l of this.graph.links.values()) {
      const o = this.graph.nodes.get(l.origin_id), t = this.graph.nodes.get(l.target_id);
      if (!o || !t) continue;
      const m = bezierMid(this.outputPos(o, l.origin_slot), this.inputPos(t, l.target_slot));
      if (Math.hypot(m[0] - p[0], m[1] - p[1]) < 8) return l;
    }
    return null;
  }

  /** Client position of a link's midpoint marker. @param {number} linkId */
  linkMidClientPos(linkId) {
    const l = /** @type {import("./graph.js").Link} */ (this.graph.links.get(linkId));
    const o = /** @type {GraphNode} */ (this.graph.nodes.get(l.origin_id)), t = /** @type {GraphNode} */ (this.graph.nodes.get(l.target_id));
    const m = bezierMid(this.outputPos(o, l.origin_slot), this.inputPos(t, l.target_slot));
    return this.toClient(m[0], m[1]);
  }

  /**
   * Menu of a link's midpoint: insert a reroute point there, or delete the link.
   * @param {import("./graph.js").Link} link @param {number[]} p @param {number[]} client
   */
  linkMenu(link, p, client) {
    this.hooks.menu([
      { label: "Add Reroute", action: () => this.insertReroute(link, p) },
      { label: "Delete Link", action: () => { this.graph.removeLink(link.id); this.hooks.commit(); } },
    ], client);
  }

  /** Split a link with a reroute node at `p`. @param {import("./graph.js").Link} link @param {number[]} p */
  insertReroute(link, p) {
    const { origin_id, origin_slot, target_id, target_slot } = link;
    const r = this.graph.addNode("Reroute", [p[0] - 37, p[1] - 13]);
    this.graph.removeLink(link.id);
    this.graph.connect(origin_id, origin_slot, r.id, 0);
    this.graph.connect(r.id, 0, target_id, target_slot);
    this.hooks.commit();
  }

  /** @param {number[]} p */
  groupAt(p) {
    for (let i = this.graph.groups.length - 1; i >= 0; i--) {
      const g = this.graph.groups[i];
      const [x, y, w] = g.bounding;
      if (p[0] >= x && p[0] <= x + w && p[1] >= y && p[1] <= y + g.font_size + 10) return g;
    }
    return null;
  }

  /** @param {number[]} p */
  groupCornerAt(p) {
    return this.graph.groups.find((g) => {
      const [x, y, w, h] = g.bounding;
      return Math.abs(p[0] - (x + w)) < RESIZE && Math.abs(p[1] - (y + h)) < RESIZE;
    }) ?? null;
  }

  // ---- events ------------------------------------------------------------------------------

  bindEvents() {
    const c = this.canvas;
    c.addEventListener("pointerdown", (e) => this.onPointerDown(e));
    window.addEventListener("pointermove", (e) => this.onPointerMove(e));
    window.addEventListener("pointerup", (e) => this.onPointerUp(e));
    c.addEventListener("dblclick", (e) => this.onDoubleClick(e));
    c.addEventListener("contextmenu", (e) => this.onContextMenu(e));
    c.addEventListener("wheel", (e) => {
      e.preventDefault();
      // Pinch gestures arrive as ctrl+wheel with small deltas; mouse wheels as ±100.
      const k = e.ctrlKey ? 0.01 : 0.0015;
      this.zoomAt(Math.exp(-e.deltaY * k), e.clientX, e.clientY);
    }, { passive: false });
  }

  /**
   * Two-finger touch: pinch zooms around the fingers' midpoint and moving both pans.
   * Returns true while a pinch owns the event.
   * @param {PointerEvent} e @param {"down"|"move"|"up"} phase
   */
  trackTouch(e, phase) {
    if (e.pointerType !== "touch") return false;
    if (phase === "up") {
      this.touches.delete(e.pointerId);
      if (this.drag?.kind === "pinch") this.drag = null;
      return false;
    }
    if (phase === "down" || this.touches.has(e.pointerId)) this.touches.set(e.pointerId, [e.clientX, e.clientY]);
    if (this.touches.size !== 2) return false;
    const [a, b] = [...this.touches.values()];
    const dist = Math.hypot(a[0] - b[0], a[1] - b[1]), mid = [(a[0] + b[0]) / 2, (a[1] + b[1]) / 2];
    if (this.drag?.kind === "pinch") {
      this.pan([mid[0] - this.drag.mid[0], mid[1] - this.drag.mid[1]]);
      this.zoomAt(dist / this.drag.dist, mid[0], mid[1]);
    }
    this.drag = { kind: "pinch", dist, mid, moved: true };
    return true;
  }

  /** @param {PointerEvent} e */
  onPointerDown(e) {
    if (this.trackTouch(e, "down")) return;
    this.closeEditor();
    this.showTooltip("");
    const p = this.toGraph(e.clientX, e.clientY);
    this.mouse = p;
    const start = { client: [e.clientX, e.clientY], graph: p, moved: false };
    if (e.button === 1) {
      this.drag = { ...start, kind: "pan" };
      e.preventDefault();
      return;
    }
    if (e.button !== 0) return;
    this.canvas.setPointerCapture?.(e.pointerId);
    const node = this.nodeAt(p);
    if (node) {
      this.selectedGroup = null;
      const slot = this.slotAt(node, p);
      if (slot?.side === "out") {
        this.drag = { ...start, kind: "link", from: { node: node.id, slot: slot.index }, type: this.graph.outputType(node.id, slot.index) };
        return;
      }
      if (slot?.side === "in") {
        const linkId = node.inputs[slot.index].link;
        const link = linkId != null ? this.graph.links.get(linkId) : undefined;
        if (link) {
          // Re-drag an existing link: pick it up from its output end.
          this.graph.removeLink(link.id);
          this.drag = { ...start, kind: "link", from: { node: link.origin_id, slot: link.origin_slot }, type: link.type, moved: true, redrag: true };
        } else {
          this.drag = { ...start, kind: "link-in", to: { node: node.id, slot: slot.index }, type: node.inputs[slot.index].type };
        }
        return;
      }
      if (p[1] < node.pos[1] && p[0] < node.pos[0] + 20) {
        node.flags.collapsed = !node.flags.collapsed || undefined;
        if (!node.flags.collapsed) delete node.flags.collapsed;
        this.graph.changed();
        this.hooks.commit();
        return;
      }
      if (!node.flags.collapsed) {
        if (p[0] > node.pos[0] + node.size[0] - RESIZE && p[1] > node.pos[1] + node.height - RESIZE) {
          this.drag = { ...start, kind: "resize", node: node.id, size: [...node.size] };
          return;
        }
        const wr = this.widgetRects(node).find((r) => p[0] >= r.x && p[0] <= r.x + r.width && p[1] >= r.y && p[1] <= r.y + r.height);
        if (wr && node.mode !== MODE_MUTED) {
          this.select(node.id, false);
          this.onWidgetDown(node, wr, start);
          return;
        }
      }
      if (e.shiftKey || e.ctrlKey || e.metaKey) {
        if (this.selected.has(node.id) && (e.ctrlKey || e.metaKey)) this.selected.delete(node.id);
        else this.selected.add(node.id);
      } else if (!this.selected.has(node.id)) this.select(node.id, false);
      this.drag = { ...start, kind: "move", origins: [...this.selected].map((id) => [id, [...(this.graph.nodes.get(id)?.pos ?? [0, 0])]]) };
      this.dirty();
      return;
    }
    const link = this.linkAt(p);
    if (link) {
      this.linkMenu(link, p, [e.clientX, e.clientY]);
      return;
    }
    const corner = this.groupCornerAt(p);
    if (corner) {
      this.drag = { ...start, kind: "group-resize", group: corner, bounding: [...corner.bounding] };
      return;
    }
    const group = this.groupAt(p);
    if (group) {
      this.selectedGroup = group;
      this.selected.clear();
      const inside = this.graph.nodesInGroup(group);
      this.drag = { ...start, kind: "group-move", group, bounding: [...group.bounding], origins: inside.map((n) => [n.id, [...n.pos]]) };
      this.dirty();
      return;
    }
    if (e.shiftKey || e.ctrlKey || e.metaKey) {
      this.drag = { ...start, kind: "box", additive: true };
      return;
    }
    this.drag = { ...start, kind: "pan" };
  }

  /** @param {PointerEvent} e */
  onPointerMove(e) {
    if (this.trackTouch(e, "move")) return;
    const p = this.toGraph(e.clientX, e.clientY);
    this.mouse = p;
    const d = this.drag;
    if (!d) {
      this.updateHover(p);
      return;
    }
    const dx = e.clientX - d.client[0], dy = e.clientY - d.client[1];
    if (!d.moved && Math.hypot(dx, dy) < 3) return;
    d.moved = true;
    const gx = p[0] - d.graph[0], gy = p[1] - d.graph[1];
    switch (d.kind) {
      case "pan": {
        const last = d.last ?? d.client;
        this.pan([e.clientX - last[0], e.clientY - last[1]]);
        d.last = [e.clientX, e.clientY];
        break;
      }
      case "move":
        for (const [id, o] of d.origins) {
          const n = this.graph.nodes.get(id);
          if (n) n.pos = [o[0] + gx, o[1] + gy];
        }
        break;
      case "resize": {
        const n = this.graph.nodes.get(d.node);
        if (n) n.size = [Math.max(80, d.size[0] + gx), Math.max(n.computeHeight(), d.size[1] + gy)];
        break;
      }
      case "group-move":
        d.group.bounding = [d.bounding[0] + gx, d.bounding[1] + gy, d.bounding[2], d.bounding[3]];
        for (const [id, o] of d.origins) {
          const n = this.graph.nodes.get(id);
          if (n) n.pos = [o[0] + gx, o[1] + gy];
        }
        break;
      case "group-resize":
        d.group.bounding = [d.bounding[0], d.bounding[1], Math.max(100, d.bounding[2] + gx), Math.max(60, d.bounding[3] + gy)];
        break;
      case "widget-drag":
        this.dragNumber(d, dx);
        break;
    }
    this.dirty();
  }

  /** Cursor shape, and the tooltip of the input, output or widget under the pointer. @param {number[]} p */
  updateHover(p) {
    const node = this.nodeAt(p);
    const slot = node && this.slotAt(node, p);
    this.canvas.style.cursor = slot ? "crosshair" : node ? "default" : "grab";
    let text = "";
    if (node && slot) {
      text = slot.side === "in" ? this.inputTooltip(node, node.inputs[slot.index]?.name) : this.graph.def(node.type)?.output_tooltips?.[slot.index] ?? "";
    } else if (node && !node.flags.collapsed) {
      const r = this.widgetRects(node).find((r) => p[0] >= r.x && p[0] <= r.x + r.width && p[1] >= r.y && p[1] <= r.y + r.height);
      if (r) text = this.inputTooltip(node, r.w.of ?? r.w.name);
      else if (p[1] < node.pos[1]) text = this.graph.def(node.type)?.description ?? "";
    }
    this.showTooltip(text);
  }

  /** @param {GraphNode} node @param {string|undefined} name */
  inputTooltip(node, name) {
    const def = this.graph.def(node.type);
    if (!def || name === undefined) return "";
    const spec = def.input?.required?.[name] ?? def.input?.optional?.[name];
    return spec?.[1]?.tooltip ?? "";
  }

  /** Show `text` near the pointer after a short pause; empty text hides it. @param {string} text */
  showTooltip(text) {
    clearTimeout(this.tooltipTimer);
    this.tooltipEl?.remove();
    this.tooltipEl = null;
    if (!text) return;
    this.tooltipTimer = window.setTimeout(() => {
      const [x, y] = this.toClient(this.mouse[0], this.mouse[1]);
      const el = Object.assign(document.createElement("div"), { className: "tooltip", textContent: text });
      Object.assign(el.style, { left: `${x + 12}px`, top: `${y + 16}px` });
      document.body.appendChild(el);
      this.tooltipEl = el;
    }, 500);
  }

  /** @param {PointerEvent} e */
  onPointerUp(e) {
    this.trackTouch(e, "up");
    const d = this.drag;
    if (!d || d.kind === "pinch") return;
    this.drag = null;
    const p = this.toGraph(e.clientX, e.clientY);
    switch (d.kind) {
      case "pan":
        if (!d.moved && e.button === 0) {
          this.selected.clear();
          this.selectedGroup = null;
        }
        break;
      case "box": {
        const [x0, x1] = [Math.min(d.graph[0], p[0]), Math.max(d.graph[0], p[0])];
        const [y0, y1] = [Math.min(d.graph[1], p[1]), Math.max(d.graph[1], p[1])];
        for (const n of this.graph.nodes.values()) {
          if (n.pos[0] < x1 && n.pos[0] + n.size[0] > x0 && n.pos[1] - TITLE_H < y1 && n.pos[1] + n.height > y0) this.selected.add(n.id);
        }
        break;
      }
      case "link":
        if (d.moved) this.dropLink(d, p, e);
        break;
      case "link-in":
        if (d.moved) this.dropLinkOnOutput(d, p, e);
        break;
      case "widget-drag":
        if (!d.moved) this.onWidgetClick(d.node, d.rect, d.graph);
        break;
    }
    this.dirty();
    this.graph.changed();
    this.hooks.commit();
  }

  /**
   * Finish dragging a link from an output: connect to the slot under the pointer, or to the
   * first compatible input of the node under it; on empty canvas open the filtered search.
   * @param {any} d @param {number[]} p @param {PointerEvent} e
   */
  dropLink(d, p, e) {
    const target = this.nodeAt(p);
    if (target) {
      const slot = this.slotAt(target, p);
      let index = slot?.side === "in" ? slot.index : -1;
      if (index < 0) index = target.inputs.findIndex((inp, i) => inp.link == null && !this.graph.linkProblem(d.from.node, d.from.slot, target.id, i));
      if (index < 0) index = target.inputs.findIndex((_, i) => !this.graph.linkProblem(d.from.node, d.from.slot, target.id, i));
      if (index < 0) index = slot?.side === "in" ? slot.index : 0;
      if (!target.inputs[index]) {
        this.hooks.hint(`${target.displayTitle} has no input for ${d.type}`, "error");
        return;
      }
      const r = this.graph.connect(d.from.node, d.from.slot, target.id, index);
      if (!r.ok) this.hooks.hint(`Link refused: ${r.reason}`, "error");
      return;
    }
    if (d.redrag) return; // an existing link dropped on empty canvas is deleted
    this.hooks.search(p, [e.clientX, e.clientY], { inputType: d.type }, (type) => {
      const node = this.graph.addNode(type, p);
      const idx = node.inputs.findIndex((_, i) => !this.graph.linkProblem(d.from.node, d.from.slot, node.id, i));
      if (idx >= 0) this.graph.connect(d.from.node, d.from.slot, node.id, idx);
      else {
        for (const w of node.widgets) {
          if (w.kind === d.type && this.graph.convertWidgetToInput(node, w.name)) {
            this.graph.connect(d.from.node, d.from.slot, node.id, node.inputs.length - 1);
            break;
          }
        }
      }
      this.select(node.id, false);
      this.hooks.commit();
    });
  }

  /** Finish dragging from an empty input: connect to an output, or search for a source. @param {any} d @param {number[]} p @param {PointerEvent} e */
  dropLinkOnOutput(d, p, e) {
    const source = this.nodeAt(p);
    if (source) {
      const slot = this.slotAt(source, p);
      let index = slot?.side === "out" ? slot.index : source.outputs.findIndex((_, i) => !this.graph.linkProblem(source.id, i, d.to.node, d.to.slot));
      if (index < 0) index = 0;
      if (!source.outputs[index]) return this.hooks.hint(`${source.displayTitle} has no outputs`, "error");
      const r = this.graph.connect(source.id, index, d.to.node, d.to.slot);
      if (!r.ok) this.hooks.hint(`Link refused: ${r.reason}`, "error");
      return;
    }
    this.hooks.search(p, [e.clientX, e.clientY], { outputType: d.type }, (type) => {
      const node = this.graph.addNode(type, [p[0] - SOURCE_OFFSET, p[1]]);
      const idx = node.outputs.findIndex((_, i) => !this.graph.linkProblem(node.id, i, d.to.node, d.to.slot));
      if (idx >= 0) this.graph.connect(node.id, idx, d.to.node, d.to.slot);
      this.hooks.commit();
    });
  }

  /** @param {MouseEvent} e */
  onDoubleClick(e) {
    const p = this.toGraph(e.clientX, e.clientY);
    const node = this.nodeAt(p);
    if (node && p[1] < node.pos[1]) return this.renameNode(node);
    if (node) return;
    const group = this.groupAt(p);
    if (group) return this.renameGroup(group);
    this.hooks.search(p, [e.clientX, e.clientY], {}, (type) => {
      const n = this.graph.addNode(type, p);
      this.select(n.id, false);
      this.hooks.commit();
    });
  }

  /** @param {MouseEvent} e */
  onContextMenu(e) {
    e.preventDefault();
    const p = this.toGraph(e.clientX, e.clientY);
    const node = this.nodeAt(p);
    if (node) {
      if (!this.selected.has(node.id)) this.select(node.id, false);
      this.hooks.menu(this.hooks.nodeMenu(node), [e.clientX, e.clientY]);
      return;
    }
    const group = this.groupAt(p);
    if (group) {
      this.hooks.menu([
        { label: "Rename Group", action: () => this.renameGroup(group) },
        { label: "Remove Group", action: () => { this.graph.groups = this.graph.groups.filter((g) => g !== group); this.graph.changed(); this.hooks.commit(); } },
        { label: "Select Nodes In Group", action: () => { this.selected = new Set(this.graph.nodesInGroup(group).map((n) => n.id)); this.dirty(); } },
      ], [e.clientX, e.clientY]);
      return;
    }
    this.hooks.menu(this.hooks.canvasMenu(p), [e.clientX, e.clientY]);
  }

  /** @param {number} id @param {boolean} additive */
  select(id, additive) {
    if (!additive) this.selected.clear();
    this.selected.add(id);
    this.selectedGroup = null;
    this.dirty();
  }

  // ---- widgets -----------------------------------------------------------------------------

  /** Press on a widget: a drag changes numbers, a click is handled on release. @param {GraphNode} node @param {any} rect @param {any} start */
  onWidgetDown(node, rect, start) {
    this.drag = { ...start, kind: "widget-drag", node, rect, startValue: rect.w.value };
  }

  /** Horizontal drag on a number widget changes it by one step per 6 pixels. @param {any} d @param {number} dx */
  dragNumber(d, dx) {
    const w = d.rect.w;
    if (w.kind !== "INT" && w.kind !== "FLOAT") return;
    w.value = clampNumber(w, d.startValue + Math.round(dx / 6) * numberStep(w));
    this.graph.changed();
  }

  /** A click on a widget: arrows step, the middle edits or opens the value list. @param {GraphNode} node @param {any} r @param {number[]} p */
  onWidgetClick(node, r, p) {
    const w = r.w;
    const left = p[0] < r.x + 18, right = p[0] > r.x + r.width - 18;
    const change = (/** @type {any} */ v) => {
      w.value = v;
      if (w.name === "image" && node.widgets.some((x) => x.kind === "upload")) this.onImageChosen(node);
      this.graph.changed();
      this.hooks.commit();
    };
    switch (w.kind) {
      case "INT":
      case "FLOAT":
        if (left || right) return change(clampNumber(w, w.value + (right ? 1 : -1) * numberStep(w)));
        return this.editText(r, String(w.value), (text) => {
          const v = Number(text);
          if (text.trim() !== "" && Number.isFinite(v)) change(clampNumber(w, v));
          else this.hooks.hint(`${w.name}: "${text}" is not a number`, "error");
        });
      case "BOOLEAN":
        return change(!w.value);
      case "COMBO":
      case "control": {
        const values = w.kind === "control" ? CONTROL_VALUES : w.values ?? [];
        if (left || right) {
          const i = values.indexOf(w.value);
          const next = values[Math.min(values.length - 1, Math.max(0, i + (right ? 1 : -1)))];
          return next === undefined ? undefined : change(next);
        }
        const [cx, cy] = this.toClient(r.x, r.y + r.height);
        return this.hooks.menu(values.map((v) => ({ label: String(v), action: () => change(v) })), [cx, cy]);
      }
      case "STRING":
        return this.editText(r, String(w.value ?? ""), (text) => change(text), !!w.options.multiline);
      case "upload":
        return this.hooks.upload(node);
    }
  }

  /** LoadImage-style nodes refresh their preview when the chosen image changes. @param {GraphNode} node */
  onImageChosen(node) {
    this.hooks.imageChosen(node);
  }

  /**
   * Edit a value in a DOM field placed over the widget. Enter (Ctrl+Enter when multiline)
   * commits, Escape cancels, leaving the field commits.
   * @param {any} r @param {string} value @param {(text: string) => void} done @param {boolean} [multiline]
   */
  editText(r, value, done, multiline = false) {
    this.closeEditor();
    const [x, y] = this.toClient(r.x, r.y);
    const el = document.createElement(multiline ? "textarea" : "input");
    el.className = "widget-editor";
    el.value = value;
    Object.assign(el.style, { left: `${x}px`, top: `${y}px`, width: `${r.width * this.ds.scale}px`,
      height: `${(multiline ? Math.max(r.height, 80) : r.height) * this.ds.scale}px`, fontSize: `${Math.max(11, 13 * this.ds.scale)}px` });
    let finished = false;
    const finish = (/** @type {boolean} */ ok) => {
      if (finished) return;
      finished = true;
      el.remove();
      this.editor = null;
      if (ok && el.value !== value) done(el.value);
    };
    el.addEventListener("keydown", (e) => {
      const ke = /** @type {KeyboardEvent} */ (e);
      ke.stopPropagation();
      if (ke.key === "Escape") finish(false);
      if (ke.key === "Enter" && (!multiline || ke.ctrlKey)) { ke.preventDefault(); finish(true); }
    });
    el.addEventListener("blur", () => finish(true));
    document.body.appendChild(el);
    el.focus();
    if (el instanceof HTMLInputElement) el.select();
    this.editor = { el, finish };
  }

  closeEditor() {
    this.editor?.finish(true);
  }

  /** @param {GraphNode} node */
  renameNode(node) {
    const [x, y] = [node.pos[0], node.pos[1] - TITLE_H];
    this.editText({ x: x + 20, y: y + 2, width: node.size[0] - 24, height: TITLE_H - 4 }, node.displayTitle, (t) => {
      node.title = t.trim() || undefined;
      this.graph.changed();
      this.hooks.commit();
    });
  }

  /** @param {Group} g */
  renameGroup(g) {
    this.editText({ x: g.bounding[0] + 4, y: g.bounding[1] + 2, width: g.bounding[2] - 8, height: g.font_size + 6 }, g.title, (t) => {
      g.title = t;
      this.graph.changed();
      this.hooks.commit();
    });
  }

  // ---- drawing -----------------------------------------------------------------------------

  draw() {
    const t0 = performance.now();
    this.needsDraw = false;
    const ctx = this.ctx;
    const dpr = window.devicePixelRatio || 1;
    const W = this.canvas.width / dpr, H = this.canvas.height / dpr;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.fillStyle = "#1e1e1e";
    ctx.fillRect(0, 0, W, H);
    const s = this.ds.scale;
    ctx.setTransform(dpr * s, 0, 0, dpr * s, dpr * this.ds.offset[0] * s, dpr * this.ds.offset[1] * s);
    const view = [-this.ds.offset[0], -this.ds.offset[1], W / s, H / s];
    this.drawGrid(ctx, view);
    for (const g of this.graph.groups) this.drawGroup(ctx, g);
    this.drawLinks(ctx, view);
    const detail = s >= 0.45;
    for (const n of this.drawOrder()) {
      const w = n.flags.collapsed ? collapsedWidth(n) : n.size[0];
      const h = n.flags.collapsed ? 0 : n.height;
      if (n.pos[0] + w < view[0] || n.pos[0] > view[0] + view[2] || n.pos[1] + h < view[1] || n.pos[1] - TITLE_H - 40 > view[1] + view[3]) continue;
      this.drawNode(ctx, n, detail);
    }
    this.drawGesture(ctx);
    this.drawTimes.push(performance.now() - t0);
    if (this.drawTimes.length > 600) this.drawTimes.splice(0, 300);
  }

  /** @param {CanvasRenderingContext2D} ctx @param {number[]} v */
  drawGrid(ctx, v) {
    const step = this.ds.scale < 0.5 ? 100 : 20;
    ctx.strokeStyle = "#282828";
    ctx.lineWidth = 1 / this.ds.scale;
    ctx.beginPath();
    for (let x = Math.floor(v[0] / step) * step; x < v[0] + v[2]; x += step) { ctx.moveTo(x, v[1]); ctx.lineTo(x, v[1] + v[3]); }
    for (let y = Math.floor(v[1] / step) * step; y < v[1] + v[3]; y += step) { ctx.moveTo(v[0], y); ctx.lineTo(v[0] + v[2], y); }
    ctx.stroke();
  }

  /** @param {CanvasRenderingContext2D} ctx @param {Group} g */
  drawGroup(ctx, g) {
    const [x, y, w, h] = g.bounding;
    ctx.globalAlpha = 0.25;
    ctx.fillStyle = g.color || "#3f789e";
    ctx.fillRect(x, y, w, h);
    ctx.globalAlpha = 1;
    ctx.strokeStyle = this.selectedGroup === g ? "#fff" : g.color || "#3f789e";
    ctx.lineWidth = this.selectedGroup === g ? 2 : 1;
    ctx.strokeRect(x, y, w, h);
    ctx.fillStyle = "#eee";
    ctx.font = `${g.font_size || 24}px sans-serif`;
    ctx.textBaseline = "top";
    ctx.textAlign = "left";
    ctx.fillText(g.title, x + 6, y + 4);
    ctx.beginPath();
    ctx.moveTo(x + w, y + h - 10); ctx.lineTo(x + w, y + h); ctx.lineTo(x + w - 10, y + h);
    ctx.stroke();
  }

  /** @param {CanvasRenderingContext2D} ctx @param {number[]} v */
  drawLinks(ctx, v) {
    ctx.lineWidth = 3;
    for (const l of this.graph.links.values()) {
      const o = this.graph.nodes.get(l.origin_id), t = this.graph.nodes.get(l.target_id);
      if (!o || !t) continue;
      const a = this.outputPos(o, l.origin_slot), b = this.inputPos(t, l.target_slot);
      if (Math.max(a[0], b[0]) < v[0] || Math.min(a[0], b[0]) > v[0] + v[2] ||
        Math.max(a[1], b[1]) < v[1] - 50 || Math.min(a[1], b[1]) > v[1] + v[3] + 50) continue;
      ctx.strokeStyle = typeColor(l.type);
      ctx.globalAlpha = o.mode === MODE_MUTED || t.mode === MODE_MUTED ? 0.3 : 0.9;
      bezier(ctx, a, b);
      if (this.ds.scale >= 0.45) {
        const m = bezierMid(a, b);
        ctx.fillStyle = ctx.strokeStyle;
        ctx.beginPath();
        ctx.arc(m[0], m[1], 4, 0, Math.PI * 2);
        ctx.fill();
      }
    }
    ctx.globalAlpha = 1;
  }

  /** @param {CanvasRenderingContext2D} ctx */
  drawGesture(ctx) {
    const d = this.drag;
    if (!d || !d.moved) return;
    if (d.kind === "link") {
      const n = this.graph.nodes.get(d.from.node);
      if (!n) return;
      ctx.lineWidth = 3;
      ctx.strokeStyle = typeColor(d.type);
      bezier(ctx, this.outputPos(n, d.from.slot), this.mouse);
    } else if (d.kind === "link-in") {
      const n = this.graph.nodes.get(d.to.node);
      if (!n) return;
      ctx.lineWidth = 3;
      ctx.strokeStyle = typeColor(d.type);
      bezier(ctx, this.mouse, this.inputPos(n, d.to.slot));
    } else if (d.kind === "box") {
      ctx.strokeStyle = "#fff";
      ctx.lineWidth = 1 / this.ds.scale;
      ctx.setLineDash([5, 5]);
      ctx.strokeRect(d.graph[0], d.graph[1], this.mouse[0] - d.graph[0], this.mouse[1] - d.graph[1]);
      ctx.setLineDash([]);
    }
  }

  /** @param {CanvasRenderingContext2D} ctx @param {GraphNode} n @param {boolean} detail */
  drawNode(ctx, n, detail) {
    const rt = this.runtime.get(String(n.id));
    const [x, y] = n.pos;
    const collapsed = !!n.flags.collapsed;
    const w = collapsed ? collapsedWidth(n) : n.size[0];
    const h = collapsed ? 0 : n.height;
    const selected = this.selected.has(n.id);
    ctx.globalAlpha = n.mode === MODE_MUTED ? 0.45 : 1;
    const broken = n.missing && !n.subgraph;
    ctx.fillStyle = n.mode === MODE_BYPASS ? "#6a2a6a" : n.bgcolor ?? (broken ? "#5a2020" : NODE_BG);
    const th = titleHeight(n);
    ctx.beginPath();
    ctx.roundRect(x, y - th, w, h + th, 6);
    ctx.fill();
    const outline = rt?.errors?.length ? "#ff3b3b" : rt?.running ? "#3cd070" : selected ? "#ffffff" : null;
    if (outline) {
      ctx.lineWidth = rt?.errors?.length || rt?.running ? 3 : 1.5;
      ctx.strokeStyle = outline;
      ctx.beginPath();
      ctx.roundRect(x - 1, y - th - 1, w + 2, h + th + 2, 7);
      ctx.stroke();
    }
    if (th) this.drawTitle(ctx, n, w, detail, broken);
    if (rt?.progress !== undefined && rt.running) {
      ctx.fillStyle = "#3cd070";
      ctx.fillRect(x, y - 3, w * Math.min(1, Math.max(0, rt.progress)), 3);
    }
    if (collapsed) {
      ctx.globalAlpha = 1;
      return;
    }
    // Slots.
    ctx.font = "12px sans-serif";
    // While a link is dragged, inputs that cannot take its type fade out.
    const dragType = this.drag?.kind === "link" && this.drag.moved ? this.drag.type : null;
    const base = ctx.globalAlpha;
    n.inputs.forEach((inp, i) => {
      const [sx, sy] = this.inputPos(n, i);
      ctx.globalAlpha = dragType && !typesCompatible(dragType, inp.type) ? base * 0.25 : base;
      ctx.fillStyle = typeColor(inp.type === "*" && n.type === "Reroute" ? n.outputs[0]?.type ?? "*" : inp.type);
      ctx.beginPath();
      ctx.arc(sx, sy, inp.link != null ? 5 : 4, 0, Math.PI * 2);
      inp.link != null ? ctx.fill() : (ctx.lineWidth = 2, ctx.strokeStyle = ctx.fillStyle, ctx.stroke());
      if (detail && n.type !== "Reroute") {
        ctx.fillStyle = DIM;
        ctx.textAlign = "left";
        ctx.fillText(inp.label ?? inp.name, sx + 10, sy);
      }
    });
    ctx.globalAlpha = base;
    n.outputs.forEach((out, i) => {
      const [sx, sy] = this.outputPos(n, i);
      ctx.fillStyle = typeColor(out.type);
      ctx.beginPath();
      ctx.arc(sx, sy, 5, 0, Math.PI * 2);
      ctx.fill();
      if (detail && n.type !== "Reroute") {
        ctx.fillStyle = DIM;
        ctx.textAlign = "right";
        ctx.fillText(out.label ?? out.name, sx - 10, sy);
      }
    });
    if (detail) {
      for (const r of this.widgetRects(n)) drawWidget(ctx, r);
      this.drawImages(ctx, n, rt);
    }
    if (rt?.errors?.length) {
      ctx.font = "12px sans-serif";
      ctx.textAlign = "left";
      ctx.textBaseline = "top";
      ctx.fillStyle = "#ff8080";
      rt.errors.slice(0, 4).forEach((msg, i) => ctx.fillText(clip(ctx, msg, Math.max(w, 360)), x, y + h + 6 + i * 16));
    }
    ctx.globalAlpha = 1;
  }

  /**
   * Title bar: colour, collapse toggle and the (possibly renamed) title with its mode.
   * @param {CanvasRenderingContext2D} ctx @param {GraphNode} n @param {number} w @param {boolean} detail @param {boolean} broken
   */
  drawTitle(ctx, n, w, detail, broken) {
    const [x, y] = n.pos;
    const collapsed = !!n.flags.collapsed;
    ctx.fillStyle = n.color ?? NODE_TITLE;
    ctx.beginPath();
    ctx.roundRect(x, y - TITLE_H, w, TITLE_H, collapsed ? 6 : [6, 6, 0, 0]);
    ctx.fill();
    ctx.fillStyle = collapsed ? "#888" : "#bbb";
    ctx.beginPath();
    ctx.arc(x + 11, y - TITLE_H / 2, 5, 0, Math.PI * 2);
    ctx.fill();
    if (!detail && !collapsed) return;
    ctx.fillStyle = broken ? "#ffb0b0" : TEXT;
    ctx.font = "bold 13px sans-serif";
    ctx.textBaseline = "middle";
    ctx.textAlign = "left";
    const mode = n.mode === MODE_BYPASS ? " (bypassed)" : n.mode === MODE_MUTED ? " (muted)" : "";
    ctx.fillText(clip(ctx, n.displayTitle + mode, w - 26), x + 22, y - TITLE_H / 2);
  }

  /** Output images (or the live preview) fill the space under the widgets. @param {CanvasRenderingContext2D} ctx @param {GraphNode} n @param {NodeRuntime|undefined} rt */
  drawImages(ctx, n, rt) {
    const img = rt?.preview ?? rt?.images?.[0];
    if (!img || !img.complete || !img.naturalWidth) return;
    const rects = this.widgetRects(n);
    const rows = Math.max(n.inputs.length, n.outputs.length);
    const top = rects.length ? rects[rects.length - 1].y + rects[rects.length - 1].height + 6 : n.pos[1] + rows * SLOT_H + 6;
    const availH = n.pos[1] + n.height - top - 6, availW = n.size[0] - 12;
    if (availH < 20) return;
    const k = Math.min(availW / img.naturalWidth, availH / img.naturalHeight);
    const iw = img.naturalWidth * k, ih = img.naturalHeight * k;
    ctx.drawImage(img, n.pos[0] + (n.size[0] - iw) / 2, top, iw, ih);
    const count = rt?.images?.length ?? 0;
    if (!rt?.preview && count > 1) {
      ctx.fillStyle = TEXT;
      ctx.textAlign = "right";
      ctx.fillText(`${count} images`, n.pos[0] + n.size[0] - 8, top + 10);
    }
  }
}

/** How far left of the drop point a node created to feed an input is placed. */
const SOURCE_OFFSET = 260;

/** Reroute points are drawn as a small pill without a title bar. @param {GraphNode} n */
function titleHeight(n) {
  return n.type === "Reroute" ? 0 : TITLE_H;
}

/** @param {GraphNode} n */
function collapsedWidth(n) {
  return Math.max(80, Math.min(260, n.displayTitle.length * 7.5 + 36));
}

/** @param {Widget} w */
function numberStep(w) {
  if (w.kind === "INT") return Math.max(1, Math.round(w.options.step ?? 1));
  return w.options.step ?? 0.1;
}

/** Clamp to min/max and round to the widget's precision. @param {Widget} w @param {number} v */
function clampNumber(w, v) {
  const o = w.options;
  if (o.min !== undefined) v = Math.max(o.min, v);
  if (o.max !== undefined) v = Math.min(o.max, v);
  if (w.kind === "INT") return Math.round(v);
  const round = o.round ?? (o.step ?? 0.01);
  return Number((Math.round(v / round) * round).toFixed(6));
}

/** The point halfway along the link curve from `a` to `b`. @param {number[]} a @param {number[]} b */
export function bezierMid(a, b) {
  const dist = Math.max(40, Math.abs(b[0] - a[0]) * 0.5);
  // Cubic Bézier at t = 0.5: (P0 + 3 P1 + 3 P2 + P3) / 8.
  return [(a[0] + 3 * (a[0] + dist) + 3 * (b[0] - dist) + b[0]) / 8, (a[1] + 3 * a[1] + 3 * b[1] + b[1]) / 8];
}

/** @param {CanvasRenderingContext2D} ctx @param {number[]} a @param {number[]} b */
function bezier(ctx, a, b) {
  const dist = Math.max(40, Math.abs(b[0] - a[0]) * 0.5);
  ctx.beginPath();
  ctx.moveTo(a[0], a[1]);
  ctx.bezierCurveTo(a[0] + dist, a[1], b[0] - dist, b[1], b[0], b[1]);
  ctx.stroke();
}

/** Truncate text to a width with an ellipsis. @param {CanvasRenderingContext2D} ctx @param {string} text @param {number} max */
function clip(ctx, text, max) {
  if (ctx.measureText(text).width <= max) return text;
  let lo = 0, hi = text.length;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (ctx.measureText(text.slice(0, mid) + "…").width <= max) lo = mid; else hi = mid - 1;
  }
  return text.slice(0, lo) + "…";
}

/** @param {any} v */
function formatValue(v) {
  if (typeof v === "number" && !Number.isInteger(v)) return String(Number(v.toFixed(4)));
  return String(v);
}

/** @param {CanvasRenderingContext2D} ctx @param {{w: Widget, x: number, y: number, width: number, height: number}} r */
function drawWidget(ctx, r) {
  const { w, x, y, width, height } = r;
  ctx.fillStyle = "#222";
  ctx.strokeStyle = "#555";
  ctx.lineWidth = 1;
  ctx.beginPath();
  ctx.roundRect(x, y, width, height, w.kind === "STRING" && w.options.multiline ? 4 : height / 2);
  ctx.fill();
  ctx.stroke();
  ctx.font = "12px sans-serif";
  ctx.textBaseline = "middle";
  const mid = y + height / 2;
  const label = w.kind === "control" ? "control after generate" : w.name;
  switch (w.kind) {
    case "INT":
    case "FLOAT":
    case "COMBO":
    case "control":
      ctx.fillStyle = DIM;
      ctx.textAlign = "left";
      ctx.fillText("◀", x + 5, mid);
      ctx.textAlign = "right";
      ctx.fillText("▶", x + width - 5, mid);
      ctx.textAlign = "left";
      ctx.fillText(clip(ctx, label, width * 0.45), x + 20, mid);
      ctx.fillStyle = TEXT;
      ctx.textAlign = "right";
      ctx.fillText(clip(ctx, formatValue(w.value), width * 0.5 - 20), x + width - 20, mid);
      break;
    case "BOOLEAN":
      ctx.fillStyle = DIM;
      ctx.textAlign = "left";
      ctx.fillText(label, x + 12, mid);
      ctx.fillStyle = w.value ? "#8c8" : "#777";
      ctx.beginPath();
      ctx.arc(x + width - 14, mid, 5, 0, Math.PI * 2);
      ctx.fill();
      ctx.fillStyle = TEXT;
      ctx.textAlign = "right";
      ctx.fillText(w.value ? (w.options.label_on ?? "true") : (w.options.label_off ?? "false"), x + width - 26, mid);
      break;
    case "STRING":
      ctx.textAlign = "left";
      if (w.options.multiline) {
        ctx.fillStyle = TEXT;
        ctx.textBaseline = "top";
        const lines = wrap(ctx, String(w.value ?? ""), width - 12).slice(0, Math.floor((height - 6) / 15));
        lines.forEach((line, i) => ctx.fillText(line, x + 6, y + 4 + i * 15));
      } else {
        ctx.fillStyle = DIM;
        ctx.fillText(label, x + 12, mid);
        ctx.fillStyle = TEXT;
        ctx.textAlign = "right";
        ctx.fillText(clip(ctx, String(w.value ?? ""), width * 0.6), x + width - 12, mid);
      }
      break;
    case "upload":
      ctx.fillStyle = TEXT;
      ctx.textAlign = "center";
      ctx.fillText("choose file to upload", x + width / 2, mid);
      break;
  }
}

/** Greedy word wrap. @param {CanvasRenderingContext2D} ctx @param {string} text @param {number} max */
function wrap(ctx, text, max) {
  const out = [];
  for (const para of text.split("\n")) {
    let line = "";
    for (const word of para.split(" ")) {
      const next = line ? line + " " + word : word;
      if (ctx.measureText(next).width > max && line) {
        out.push(line);
        line = word;
      } else line = next;
    }
    out.push(line);
  }
  return out;
}
