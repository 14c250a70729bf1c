// @ts-check
/**
 * The graph model: nodes, links, groups, editor-format (0.4 / v1) serialize and configure,
 * copy/paste and an undo stack. No DOM — the canvas view renders it and node tests drive it.
 */
import { widgetSpecs, socketSpecs, defaultValue, typesCompatible, VIRTUAL_DEFS } from "./nodedefs.js";

/** @typedef {import("./nodedefs.js").NodeDefs} NodeDefs */
/** @typedef {import("./nodedefs.js").NodeDef} NodeDef */
/** @typedef {import("./nodedefs.js").WidgetSpec} WidgetSpec */
/** @typedef {{name: string, type: string, link: number|null, widget?: {name: string}, label?: string, [k: string]: any}} InputSlot */
/** @typedef {{name: string, type: string, links: number[]|null, slot_index?: number, label?: string, [k: string]: any}} OutputSlot */
/** @typedef {WidgetSpec & {value: any, converted?: boolean}} Widget */
/** @typedef {{id: number, origin_id: number, origin_slot: number, target_id: number, target_slot: number, type: string, parentId?: number}} Link */
/** @typedef {{id: number, title: string, bounding: number[], color: string, font_size: number, flags: Record<string, any>, [k: string]: any}} Group */
/** @typedef {{ok: boolean, link?: Link, reason?: string}} ConnectResult  `reason` says why a link was refused */

const NODE_KEYS = new Set(["id", "type", "pos", "size", "flags", "order", "mode", "inputs", "outputs", "properties",
  "widgets_values", "title", "color", "bgcolor", "shape"]);
const GRAPH_KEYS = new Set(["id", "revision", "last_node_id", "last_link_id", "nodes", "links", "groups", "config", "extra",
  "version", "state", "reroutes"]);

export const MODE_NORMAL = 0, MODE_MUTED = 2, MODE_BYPASS = 4;
export const NODE_WIDTH = 240;
// Litegraph's metrics (slot 20, widget 20 + 4 gap), so node sizes saved by other editors fit exactly.
export const TITLE_H = 26, SLOT_H = 20, WIDGET_H = 24;

/** A node on the canvas. Keeps unknown keys of the file so re-saving loses nothing. */
export class GraphNode {
  /** @param {number} id @param {string} type */
  constructor(id, type) {
    this.id = id;
    this.type = type;
    /** @type {string|undefined} title shown; undefined means the default (display name) */
    this.title = undefined;
    /** @type {number[]} */ this.pos = [0, 0];
    /** @type {number[]} */ this.size = [NODE_WIDTH, 80];
    /** @type {Record<string, any>} */ this.flags = {};
    this.mode = MODE_NORMAL;
    /** @type {InputSlot[]} */ this.inputs = [];
    /** @type {OutputSlot[]} */ this.outputs = [];
    /** @type {Record<string, any>} */ this.properties = {};
    /** @type {Widget[]} */ this.widgets = [];
    /** @type {any[]|Record<string, any>|null} raw values kept for nodes without a definition */
    this.rawWidgetValues = null;
    /** @type {Record<string, any>} */ this.extra = {};
    /** @type {string|undefined} */ this.color = undefined;
    /** @type {string|undefined} */ this.bgcolor = undefined;
    /** @type {number|undefined} */ this.shape = undefined;
    this.defaultTitle = type;
    /** true when the node type has no server definition; its saved data is kept verbatim */
    this.missing = false;
    /** true for an instance of one of the workflow's subgraph definitions */
    this.subgraph = false;
  }

  /** @param {string} name */
  widget(name) {
    return this.widgets.find((w) => w.name === name);
  }

  /** The node class name under the name ComfyUI's frontend uses (read by pack extensions). */
  get comfyClass() {
    return this.type;
  }

  /** Title shown on the canvas. */
  get displayTitle() {
    return this.title ?? this.defaultTitle;
  }

  /** Drawn height: the saved size, grown when it is too small for the slots and widgets. */
  get height() {
    return Math.max(this.size[1], this.computeHeight());
  }

  /** Height needed for slots and visible widgets (images are added by the view). */
  computeHeight() {
    const rows = Math.max(this.inputs.length, this.outputs.length);
    const widgets = this.widgets.filter((w) => isVisibleWidget(w));
    let h = rows * SLOT_H + 6;
    for (const w of widgets) h += w.kind === "STRING" && w.options.multiline ? WIDGET_H * 3 : WIDGET_H;
    return Math.max(widgets.length ? h + 8 : h, 30);
  }
}

/** @param {Widget} w */
export function isVisibleWidget(w) {
  return !w.converted && w.kind !== "filter";
}

/** A workflow graph bound to the node definitions it was built with. */
export class Graph {
  /** @param {NodeDefs} [defs] */
  constructor(defs = {}) {
    /** @type {NodeDefs} */
    this.defs = defs;
    this.clear();
    /** @type {Set<() => void>} */
    this.listeners = new Set();
    /** @type {Set<(node: GraphNode) => void>} called for nodes created by `addNode` (not loaded ones) */
    this.nodeCreatedListeners = new Set();
  }

  clear() {
    /** @type {Map<number, GraphNode>} insertion-ordered */
    this.nodes = new Map();
    /** @type {Map<number, Link>} */
    this.links = new Map();
    /** @type {Group[]} */
    this.groups = [];
    this.lastNodeId = 0;
    this.lastLinkId = 0;
    this.lastGroupId = 0;
    /** @type {string} */
    this.id = randomId();
    this.revision = 0;
    /** @type {Record<string, any>} */
    this.extra = {};
    /** @type {Record<string, any>} */
    this.config = {};
    /** @type {Record<string, any>} unknown top-level keys, kept verbatim */
    this.unknown = {};
  }

  /** Notify the view that something changed. */
  changed() {
    for (const fn of this.listeners ?? []) fn();
  }

  /** @param {string} type */
  def(type) {
    return this.defs[type] ?? VIRTUAL_DEFS[type];
  }

  /**
   * Create a node of `type` with default widget values and add it.
   * @param {string} type
   * @param {number[]} [pos]
   */
  addNode(type, pos = [0, 0]) {
    const node = this.buildNode(++this.lastNodeId, type);
    node.pos = [pos[0], pos[1]];
    node.size = [NODE_WIDTH, node.computeHeight()];
    if (type === "Reroute") node.size = [75, 26];
    this.nodes.set(node.id, node);
    for (const fn of this.nodeCreatedListeners) fn(node);
    this.changed();
    return node;
  }

  /**
   * A node with slots and widgets from its definition (no values from a file yet).
   * @param {number} id
   * @param {string} type
   */
  buildNode(id, type) {
    const node = new GraphNode(id, type);
    const def = this.def(type);
    const sub = (this.unknown.definitions?.subgraphs ?? []).find((/** @type {any} */ d) => d.id === type);
    if (sub) {
      // Kept as saved (like a missing node) but drawn with the definition's name and IO.
      node.missing = node.subgraph = true;
      node.defaultTitle = sub.name ?? "Subgraph";
      node.inputs = (sub.inputs ?? []).map((/** @type {any} */ i) => ({ name: i.name, type: i.type, link: null }));
      node.outputs = (sub.outputs ?? []).map((/** @type {any} */ o) => ({ name: o.name, type: o.type, links: null }));
      return node;
    }
    if (!def) {
      node.missing = true;
      return node;
    }
    node.defaultTitle = def.display_name || def.name || type;
    if (this.defs[type]) node.properties["Node name for S&R"] = type;
    node.inputs = socketSpecs(def).map((s) => ({ name: s.name, type: s.type, link: null }));
    const outTypes = def.output ?? [];
    node.outputs = outTypes.map((t, i) => ({
      name: def.output_name?.[i] ?? String(t), type: Array.isArray(t) ? "COMBO" : String(t), links: null,
      ...(type === "Reroute" ? {} : { slot_index: i }),
    }));
    node.widgets = widgetSpecs(def).map((w) => ({ ...w, value: defaultValue(w) }));
    return node;
  }

  /** @param {number} id */
  removeNode(id) {
    const node = this.nodes.get(id);
    if (!node) return;
    for (const link of [...this.links.values()]) {
      if (link.origin_id === id || link.target_id === id) this.removeLink(link.id);
    }
    this.nodes.delete(id);
    this.changed();
  }

  /** @param {number} linkId */
  removeLink(linkId) {
    const link = this.links.get(linkId);
    if (!link) return;
    const origin = this.nodes.get(link.origin_id);
    const out = origin?.outputs[link.origin_slot];
    if (out?.links) {
      out.links = out.links.filter((l) => l !== linkId);
      if (!out.links.length) out.links = null;
    }
    const target = this.nodes.get(link.target_id);
    const input = target?.inputs[link.target_slot];
    if (input && input.link === linkId) input.link = null;
    this.links.delete(linkId);
    this.changed();
  }

  /**
   * The type an output really carries: a Reroute forwards the type of its input.
   * @param {number} nodeId
   * @param {number} slot
   * @returns {string}
   */
  outputType(nodeId, slot) {
    const seen = new Set();
    let node = this.nodes.get(nodeId);
    while (node && node.type === "Reroute" && !seen.has(node.id)) {
      seen.add(node.id);
      const l = node.inputs[0]?.link;
      const link = l != null ? this.links.get(l) : undefined;
      if (!link) return "*";
      slot = link.origin_slot;
      node = this.nodes.get(link.origin_id);
    }
    return node?.outputs[slot]?.type ?? "*";
  }

  /**
   * Why output `oslot` of `originId` may not feed input `tslot` of `targetId`, or null if it may.
   * @param {number} originId @param {number} oslot @param {number} targetId @param {number} tslot
   * @returns {string|null}
   */
  linkProblem(originId, oslot, targetId, tslot) {
    const origin = this.nodes.get(originId), target = this.nodes.get(targetId);
    if (!origin || !target) return "node not found";
    const out = origin.outputs[oslot], input = target.inputs[tslot];
    if (!out || !input) return "slot not found";
    if (originId === targetId) return "a node cannot feed itself";
    const outType = this.outputType(originId, oslot);
    let inType = input.type;
    if (target.type === "Reroute") inType = this.rerouteDownstreamType(target) ?? "*";
    if (!typesCompatible(outType, inType)) {
      return `${outType} output cannot connect to ${inType} input "${input.label ?? input.name}"`;
    }
    if (this.reaches(targetId, originId)) return "that link would make a cycle";
    return null;
  }

  /**
   * The type the links leaving a reroute require, or null if unconstrained.
   * @param {GraphNode} reroute
   * @returns {string|null}
   */
  rerouteDownstreamType(reroute) {
    for (const l of reroute.outputs[0]?.links ?? []) {
      const link = this.links.get(l);
      const t = link && this.nodes.get(link.target_id);
      if (!t) continue;
      if (t.type === "Reroute") {
        const d = this.rerouteDownstreamType(t);
        if (d) return d;
      } else return t.inputs[link.target_slot]?.type ?? null;
    }
    return null;
  }

  /** Whether `to` is downstream of `from`. @param {number} from @param {number} to */
  reaches(from, to) {
    const stack = [from], seen = new Set();
    while (stack.length) {
      const id = /** @type {number} */ (stack.pop());
      if (id === to) return true;
      if (seen.has(id)) continue;
      seen.add(id);
      for (const out of this.nodes.get(id)?.outputs ?? []) {
        for (const l of out.links ?? []) {
          const link = this.links.get(l);
          if (link) stack.push(link.target_id);
        }
      }
    }
    return false;
  }

  /**
   * Connect an output to an input, replacing the input's previous link. Refuses
   * incompatible types and cycles with a reason the view shows as a hint.
   * @param {number} originId @param {number} oslot @param {number} targetId @param {number} tslot
   * @returns {ConnectResult}
   */
  connect(originId, oslot, targetId, tslot) {
    const problem = this.linkProblem(originId, oslot, targetId, tslot);
    if (problem) return { ok: false, reason: problem };
    const origin = /** @type {GraphNode} */ (this.nodes.get(originId));
    const target = /** @type {GraphNode} */ (this.nodes.get(targetId));
    const old = target.inputs[tslot].link;
    if (old != null) this.removeLink(old);
    /** @type {Link} */
    const link = { id: ++this.lastLinkId, origin_id: originId, origin_slot: oslot, target_id: targetId, target_slot: tslot,
      type: this.outputType(originId, oslot) };
    this.links.set(link.id, link);
    target.inputs[tslot].link = link.id;
    const out = origin.outputs[oslot];
    out.links = [...(out.links ?? []), link.id];
    if (target.type === "Reroute") this.refreshRerouteTypes();
    this.changed();
    return { ok: true, link };
  }

  /** Reroute outputs show the type flowing through them. */
  refreshRerouteTypes() {
    for (const n of this.nodes.values()) {
      if (n.type !== "Reroute" || !n.outputs[0]) continue;
      const t = this.outputType(n.id, 0);
      n.outputs[0].type = t;
      for (const l of n.outputs[0].links ?? []) {
        const link = this.links.get(l);
        if (link) link.type = t;
      }
    }
  }

  /**
   * Turn a widget into an input socket so a link can feed it.
   * @param {GraphNode} node @param {string} name
   */
  convertWidgetToInput(node, name) {
    const w = node.widget(name);
    if (!w || w.converted || !["INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"].includes(w.kind)) return false;
    w.converted = true;
    node.inputs.push({ name, type: w.kind, link: null, widget: { name } });
    node.size[1] = Math.max(node.size[1], node.computeHeight());
    this.changed();
    return true;
  }

  /**
   * Turn a converted input back into a widget, dropping its link.
   * @param {GraphNode} node @param {string} name
   */
  convertInputToWidget(node, name) {
    const idx = node.inputs.findIndex((i) => i.widget?.name === name);
    const w = node.widget(name);
    if (idx < 0 || !w) return false;
    const linkId = node.inputs[idx].link;
    if (linkId != null) this.removeLink(linkId);
    node.inputs.splice(idx, 1);
    for (const link of this.links.values()) {
      if (link.target_id === node.id && link.target_slot > idx) link.target_slot--;
    }
    w.converted = false;
    node.size[1] = Math.max(node.size[1], node.computeHeight());
    this.changed();
    return true;
  }

  /**
   * Update control_after_generate widgets after a queue (workflows.md §3.7.3).
   * @param {() => number} [random] a 0..1 source
   */
  applyControlAfterGenerate(random = Math.random) {
    for (const node of this.nodes.values()) {
      for (const c of node.widgets) {
        if (c.kind !== "control" || !c.of) continue;
        const w = node.widget(c.of);
        if (!w || w.converted) continue;
        w.value = nextControlValue(w, String(c.value), random);
      }
    }
    this.changed();
  }

  /**
   * Take new node definitions (e.g. after files were added on the server): combo widgets get
   * the fresh choice lists; values stay as they are even when no longer listed.
   * @param {NodeDefs} defs
   */
  updateDefs(defs) {
    this.defs = defs;
    for (const node of this.nodes.values()) {
      const def = this.def(node.type);
      if (!def) continue;
      const specs = new Map(widgetSpecs(def).map((w) => [w.name, w]));
      for (const w of node.widgets) {
        const spec = specs.get(w.name);
        if (w.kind === "COMBO" && spec?.values) w.values = spec.values;
      }
    }
    this.changed();
  }

  /** @param {number[]} bounding */
  addGroup(bounding, title = "Group") {
    /** @type {Group} */
    const g = { id: ++this.lastGroupId, title, bounding: [...bounding], color: "#3f789e", font_size: 24, flags: {} };
    this.groups.push(g);
    this.changed();
    return g;
  }

  /** Nodes whose whole box lies inside the group. @param {Group} g */
  nodesInGroup(g) {
    const [x, y, w, h] = g.bounding;
    return [...this.nodes.values()].filter((n) => n.pos[0] >= x && n.pos[1] - TITLE_H >= y &&
      n.pos[0] + n.size[0] <= x + w && n.pos[1] + n.height <= y + h);
  }

  /** Execution order: a topological sort (informational `order` field). */
  computeOrder() {
    /** @type {Map<number, number>} */
    const indeg = new Map();
    for (const n of this.nodes.values()) indeg.set(n.id, 0);
    for (const l of this.links.values()) {
      if (indeg.has(l.target_id)) indeg.set(l.target_id, /** @type {number} */ (indeg.get(l.target_id)) + 1);
    }
    const queue = [...indeg].filter(([, d]) => d === 0).map(([id]) => id);
    /** @type {Map<number, number>} */
    const order = new Map();
    while (queue.length) {
      const id = /** @type {number} */ (queue.shift());
      order.set(id, order.size);
      for (const out of this.nodes.get(id)?.outputs ?? []) {
        for (const l of out.links ?? []) {
          const link = this.links.get(l);
          if (!link || !indeg.has(link.target_id)) continue;
          const d = /** @type {number} */ (indeg.get(link.target_id)) - 1;
          indeg.set(link.target_id, d);
          if (d === 0) queue.push(link.target_id);
        }
      }
    }
    for (const id of indeg.keys()) if (!order.has(id)) order.set(id, order.size);
    return order;
  }

  /** @param {GraphNode} node @param {number} order */
  serializeNode(node, order) {
    /** @type {Record<string, any>} */
    const o = {
      id: node.id, type: node.type, pos: [...node.pos], size: [...node.size], flags: { ...node.flags }, order,
      mode: node.mode, inputs: node.inputs.map((i) => ({ ...i })),
      outputs: node.outputs.map((o) => ({ ...o, links: o.links ? [...o.links] : o.links })),
      properties: structuredClone(node.properties),
      widgets_values: node.missing ? missingWidgetValues(node) : node.widgets.map((w) => w.value),
    };
    if (node.title !== undefined && node.title !== node.defaultTitle) o.title = node.title;
    if (node.color !== undefined) o.color = node.color;
    if (node.bgcolor !== undefined) o.bgcolor = node.bgcolor;
    if (node.shape !== undefined) o.shape = node.shape;
    return { ...o, ...structuredClone(node.extra) };
  }

  /**
   * The editor-format (version 0.4) document.
   * @returns {Record<string, any>}
   */
  serialize() {
    const order = this.computeOrder();
    return {
      id: this.id, revision: this.revision, last_node_id: this.lastNodeId, last_link_id: this.lastLinkId,
      nodes: [...this.nodes.values()].map((n) => this.serializeNode(n, order.get(n.id) ?? 0)),
      links: [...this.links.values()].map((l) => [l.id, l.origin_id, l.origin_slot, l.target_id, l.target_slot, l.type]),
      groups: this.groups.map((g) => structuredClone(g)),
      config: structuredClone(this.config), extra: structuredClone(this.extra), version: 0.4,
      ...structuredClone(this.unknown),
    };
  }

  /**
   * Load an editor workflow (version 0.4 or 1). Nodes of unknown types are kept as "missing"
   * with their saved values so a re-save loses nothing.
   * @param {Record<string, any>} data
   */
  configure(data) {
    if (!data || !Array.isArray(data.nodes)) throw new Error("not an editor workflow (no nodes array)");
    this.clear();
    for (const [k, v] of Object.entries(data)) if (!GRAPH_KEYS.has(k)) this.unknown[k] = structuredClone(v);
    if (data.version === 1 && Array.isArray(data.reroutes)) this.unknown.reroutes = structuredClone(data.reroutes);
    this.id = typeof data.id === "string" ? data.id : this.id;
    this.revision = data.revision ?? 0;
    this.extra = structuredClone(data.extra ?? {});
    this.config = structuredClone(data.config ?? {});
    this.lastNodeId = data.last_node_id ?? data.state?.lastNodeId ?? 0;
    this.lastLinkId = data.last_link_id ?? data.state?.lastLinkId ?? 0;
    for (const n of data.nodes) {
      const node = this.configureNode(n);
      this.nodes.set(node.id, node);
      if (typeof node.id === "number") this.lastNodeId = Math.max(this.lastNodeId, node.id);
    }
    for (const l of normalizeLinks(data.links ?? [])) {
      this.links.set(l.id, l);
      this.lastLinkId = Math.max(this.lastLinkId, l.id);
    }
    this.groups = (data.groups ?? []).map((g) => structuredClone(g));
    this.lastGroupId = Math.max(data.state?.lastGroupId ?? 0, ...this.groups.map((g) => g.id ?? 0));
    this.changed();
  }

  /** @param {Record<string, any>} n */
  configureNode(n) {
    const node = this.buildNode(n.id, n.type);
    for (const [k, v] of Object.entries(n)) if (!NODE_KEYS.has(k)) node.extra[k] = structuredClone(v);
    node.pos = [...(n.pos ?? [0, 0])].map(Number);
    if (!Array.isArray(n.pos) && n.pos && typeof n.pos === "object") node.pos = [n.pos[0] ?? 0, n.pos[1] ?? 0];
    node.size = [...(n.size ?? [NODE_WIDTH, 80])].map(Number);
    node.flags = structuredClone(n.flags ?? {});
    node.mode = n.mode ?? 0;
    node.properties = { ...structuredClone(n.properties ?? {}) };
    if (n.title !== undefined) node.title = n.title;
    node.color = n.color; node.bgcolor = n.bgcolor; node.shape = n.shape;
    const defInputs = node.inputs;
    node.inputs = (n.inputs ?? []).map((/** @type {any} */ i) => ({ ...i }));
    // Sockets the definition gained since the file was saved go at the end (indices stay valid).
    for (const s of defInputs) if (!node.inputs.some((i) => i.name === s.name)) node.inputs.push(s);
    node.outputs = (n.outputs ?? node.outputs).map((/** @type {any} */ o) => ({ ...o }));
    const values = n.widgets_values;
    if (node.missing) {
      node.rawWidgetValues = values === undefined ? null : structuredClone(values);
      if (node.type === "PrimitiveNode" && Array.isArray(values) && values.length) {
        node.widgets = [{ name: "value", kind: primitiveKind(values[0]), options: {}, serialize: true, value: values[0] }];
      }
    } else if (Array.isArray(values)) {
      node.widgets.forEach((w, i) => { if (i < values.length) w.value = values[i]; });
      // Old files store true/false as the seed control value (randomize/fixed).
      for (const w of node.widgets) if (w.kind === "control" && typeof w.value === "boolean") w.value = w.value ? "randomize" : "fixed";
    } else if (values && typeof values === "object") {
      for (const w of node.widgets) if (w.name in values) w.value = values[w.name];
    }
    for (const i of node.inputs) {
      const w = i.widget && node.widget(i.widget.name);
      if (w) w.converted = true;
    }
    return node;
  }

  /**
   * A clipboard payload of the given nodes and the links between them.
   * @param {number[]} ids
   */
  copy(ids) {
    const set = new Set(ids);
    const nodes = ids.map((id) => this.nodes.get(id)).filter(Boolean).map((n) => this.serializeNode(/** @type {GraphNode} */ (n), 0));
    const links = [...this.links.values()].filter((l) => set.has(l.origin_id) && set.has(l.target_id)).map((l) => ({ ...l }));
    return { nodes, links };
  }

  /**
   * Paste a clipboard payload with its top-left corner at `at`; internal links are recreated.
   * @param {{nodes: Record<string, any>[], links: Link[]}} clip
   * @param {number[]} at
   * @returns {number[]} the new node ids
   */
  paste(clip, at) {
    if (!clip.nodes.length) return [];
    const minX = Math.min(...clip.nodes.map((n) => n.pos[0])), minY = Math.min(...clip.nodes.map((n) => n.pos[1]));
    /** @type {Map<number, number>} */
    const idMap = new Map();
    for (const src of clip.nodes) {
      const copy = structuredClone(src);
      copy.id = ++this.lastNodeId;
      copy.pos = [src.pos[0] - minX + at[0], src.pos[1] - minY + at[1]];
      for (const i of copy.inputs ?? []) i.link = null;
      for (const o of copy.outputs ?? []) o.links = null;
      const node = this.configureNode(copy);
      this.nodes.set(node.id, node);
      idMap.set(src.id, node.id);
    }
    for (const l of clip.links) {
      const o = idMap.get(l.origin_id), t = idMap.get(l.target_id);
      if (o != null && t != null) this.connect(o, l.origin_slot, t, l.target_slot);
    }
    this.changed();
    return [...idMap.values()];
  }
}

/**
 * Normalize version-0.4 link arrays and version-1 link objects to link objects.
 * @param {any[]} links
 * @returns {Link[]}
 */
export function normalizeLinks(links) {
  return links.filter(Boolean).map((l) => Array.isArray(l)
    ? { id: l[0], origin_id: l[1], origin_slot: l[2], target_id: l[3], target_slot: l[4], type: l[5] }
    : { id: l.id, origin_id: l.origin_id, origin_slot: l.origin_slot, target_id: l.target_id, target_slot: l.target_slot,
      type: l.type, ...(l.parentId != null ? { parentId: l.parentId } : {}) });
}

/**
 * Saved values of a node without a definition: the file's values, with a PrimitiveNode's
 * edited value in front of its own control values.
 * @param {GraphNode} node
 */
function missingWidgetValues(node) {
  const raw = node.rawWidgetValues == null ? [] : structuredClone(node.rawWidgetValues);
  if (Array.isArray(raw) && node.widgets.length) raw[0] = node.widgets[0].value;
  return node.rawWidgetValues == null && !node.widgets.length ? [] : raw;
}

/** @param {any} v */
function primitiveKind(v) {
  return typeof v === "number" ? (Number.isInteger(v) ? "INT" : "FLOAT") : typeof v === "boolean" ? "BOOLEAN" : "STRING";
}

/**
 * The value a widget takes after a queue under its control mode.
 * @param {Widget} w @param {string} mode @param {() => number} random
 */
export function nextControlValue(w, mode, random) {
  const o = w.options;
  if (w.kind === "COMBO") {
    const vals = w.values ?? [];
    const i = vals.indexOf(w.value);
    if (mode === "increment" || mode === "increment-wrap") return vals[Math.min(i + 1, vals.length - 1)] ?? w.value;
    if (mode === "decrement") return vals[Math.max(i - 1, 0)] ?? w.value;
    if (mode === "randomize") return vals[Math.floor(random() * vals.length)] ?? w.value;
    return w.value;
  }
  const step = w.kind === "INT" ? Math.max(1, Math.round(o.step ?? 1)) : o.step ?? 0.1;
  const min = o.min ?? 0;
  // Seeds may be up to 2^64-1; keep randomized values in the exactly representable range.
  const max = Math.min(o.max ?? Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER);
  const clamp = (/** @type {number} */ v) => Math.min(max, Math.max(min, v));
  if (mode === "increment") return clamp(w.value + step);
  if (mode === "decrement") return clamp(w.value - step);
  if (mode === "randomize") {
    const v = min + random() * (max - min);
    return w.kind === "INT" ? Math.floor(v) : v;
  }
  return w.value;
}

function randomId() {
  if (globalThis.crypto?.randomUUID) return globalThis.crypto.randomUUID();
  return "xxxxxxxx-xxxx-4xxx-8xxx-xxxxxxxxxxxx".replace(/x/g, () => Math.floor(Math.random() * 16).toString(16));
}

/**
 * Snapshot-based undo/redo. The view calls `commit()` after each finished user action;
 * identical snapshots are not recorded, so a click that changes nothing adds no step.
 */
export class UndoStack {
  /** @param {Graph} graph @param {number} [limit] */
  constructor(graph, limit = 200) {
    this.graph = graph;
    this.limit = limit;
    this.reset();
  }

  /** Forget history; the current graph becomes the base state. */
  reset() {
    /** @type {string[]} */ this.undoList = [];
    /** @type {string[]} */ this.redoList = [];
    this.current = this.snapshot();
  }

  snapshot() {
    const s = this.graph.serialize();
    delete s.extra?.ds;
    return JSON.stringify(s);
  }

  /** Record the graph's state as one undoable step; returns whether anything changed. */
  commit() {
    const s = this.snapshot();
    if (s === this.current) return false;
    this.undoList.push(this.current);
    if (this.undoList.length > this.limit) this.undoList.shift();
    this.current = s;
    this.redoList = [];
    return true;
  }

  undo() {
    const prev = this.undoList.pop();
    if (prev === undefined) return false;
    this.redoList.push(this.current);
    this.restore(prev);
    return true;
  }

  redo() {
    const next = this.redoList.pop();
    if (next === undefined) return false;
    this.undoList.push(this.current);
    this.restore(next);
    return true;
  }

  /** @param {string} s */
  restore(s) {
    const ds = this.graph.extra.ds;
    this.current = s;
    this.graph.configure(JSON.parse(s));
    if (ds) this.graph.extra.ds = ds;
  }
}

