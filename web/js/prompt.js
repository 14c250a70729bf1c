// @ts-check
/**
 * Editor workflow → API prompt conversion (workflows.md §3), the editor's value rewrites
 * (dynamic prompts, filename patterns, §3.7) and API prompt → workflow import (§4.2 step 4).
 * Works on plain JSON so it converts any loaded file, not only the live graph.
 */
import { widgetSpecs, socketSpecs, typesCompatible, VIRTUAL_TYPES } from "./nodedefs.js";
import { normalizeLinks } from "./graph.js";

/** @typedef {import("./nodedefs.js").NodeDefs} NodeDefs */
/** @typedef {Record<string, {inputs: Record<string, any>, class_type: string, _meta: {title: string}}>} ApiPrompt */

/**
 * Map a node's `widgets_values` to named API inputs (§3.3).
 * @param {import("./nodedefs.js").NodeDef} def
 * @param {any} values array, or an object keyed by widget name
 */
export function widgetInputs(def, values) {
  /** @type {Record<string, any>} */
  const inputs = {};
  const specs = widgetSpecs(def);
  const byName = values && !Array.isArray(values) && typeof values === "object";
  specs.forEach((w, i) => {
    if (!w.serialize) return;
    let v;
    if (byName) {
      if (!(w.name in values)) return;
      v = values[w.name];
    } else if (Array.isArray(values) && i < values.length) v = values[i];
    else v = missingDefault(w);
    inputs[w.name] = Array.isArray(v) ? { __value__: v } : v;
  });
  return inputs;
}

/** @param {import("./nodedefs.js").WidgetSpec} w */
function missingDefault(w) {
  const o = w.options;
  if (w.kind === "INT" || w.kind === "FLOAT") return o.default ?? o.min ?? 0;
  if (w.kind === "STRING") return o.default ?? "";
  if (w.kind === "BOOLEAN") return o.default ?? false;
  return o.default ?? w.values?.[0];
}

/**
 * One graph level during conversion: the top-level workflow or a subgraph instance's inside.
 * @typedef {{nodes: Map<any, any>, links: Map<any, import("./graph.js").Link>, prefix: string,
 *   parent: Scope | null, instance: any}} Scope
 */

/**
 * Convert an editor workflow to an API prompt (§3.1): primitives, subgraph flattening with
 * `"<instance>:<inner>"` ids, reroutes, mute and bypass.
 * @param {Record<string, any>} workflow
 * @param {NodeDefs} defs
 * @returns {ApiPrompt}
 */
export function workflowToPrompt(workflow, defs) {
  /** @type {Map<string, any>} */
  const subgraphs = new Map((workflow.definitions?.subgraphs ?? []).map((/** @type {any} */ d) => [d.id, d]));
  /** @param {any} g @param {string} prefix @param {Scope|null} parent @param {any} instance @returns {Scope} */
  const scope = (g, prefix, parent, instance) => ({
    nodes: new Map((g.nodes ?? []).map((/** @type {any} */ n) => [n.id, n])),
    links: new Map(normalizeLinks(g.links ?? []).map((l) => [l.id, l])), prefix, parent, instance,
  });
  /** @param {Scope} sc @param {any} node */
  const inner = (sc, node) => scope(subgraphs.get(node.type), `${sc.prefix}${node.id}:`, sc, node);

  /** @type {Map<string, Record<string, any>>} primitive values per target node path */
  const overrides = new Map();

  /**
   * Follow a link upstream (§3.4) to a real source `[path id, slot]`, or null when nothing feeds
   * it. An unlinked subgraph input resolves to nothing, so the inner widget keeps its own value.
   * @param {Scope} sc @param {any} linkId
   * @returns {[string, number] | null}
   */
  const resolve = (sc, linkId) => {
    const seen = new Set();
    let link = sc.links.get(linkId);
    while (link) {
      const key = `${sc.prefix}/${link.id}`;
      if (seen.has(key)) return null;
      seen.add(key);
      if (link.origin_id === -10) {
        const parent = sc.parent, input = sc.instance?.inputs?.[link.origin_slot];
        if (!parent || input?.link == null) return null;
        sc = parent;
        link = sc.links.get(input.link);
        continue;
      }
      const origin = sc.nodes.get(link.origin_id);
      if (!origin) return [`${sc.prefix}${link.origin_id}`, Number(link.origin_slot)];
      if (origin.type === "Reroute") {
        const next = origin.inputs?.[0]?.link;
        link = next != null ? sc.links.get(next) : undefined;
        continue;
      }
      if (origin.type === "PrimitiveNode") return null;
      if (origin.mode === 4) {
        const k = Number(link.origin_slot);
        const t = origin.outputs?.[k]?.type ?? link.type;
        const ins = origin.inputs ?? [];
        const pick = (ins[k] && typesCompatible(ins[k].type, t) ? ins[k] : null)
          ?? ins.find((/** @type {any} */ i) => i.type === t)
          ?? ins.find((/** @type {any} */ i) => typesCompatible(i.type, t));
        link = pick?.link != null ? sc.links.get(pick.link) : undefined;
        continue;
      }
      if (subgraphs.has(origin.type) && origin.mode !== 2) {
        const sub = inner(sc, origin);
        const feed = [...sub.links.values()].find((l) => l.target_id === -20 && Number(l.target_slot) === Number(link?.origin_slot));
        if (!feed) return null;
        sc = sub;
        link = feed;
        continue;
      }
      return [`${sc.prefix}${origin.id}`, Number(link.origin_slot)];
    }
    return null;
  };

  /** @type {ApiPrompt} */
  const prompt = {};
  /** @param {Scope} sc @param {Set<string>} stack definitions being expanded (guards recursion) */
  const emit = (sc, stack) => {
    // Primitive nodes push their value into the widgets they feed (§3.5).
    for (const n of sc.nodes.values()) {
      if (n.type !== "PrimitiveNode" || !Array.isArray(n.widgets_values) || !n.widgets_values.length) continue;
      for (const l of n.outputs?.[0]?.links ?? []) {
        const link = sc.links.get(l);
        const target = link && sc.nodes.get(link.target_id);
        const input = target?.inputs?.[link?.target_slot ?? -1];
        const name = input?.widget?.name ?? input?.name;
        if (!name) continue;
        const path = `${sc.prefix}${target.id}`;
        overrides.set(path, { ...(overrides.get(path) ?? {}), [name]: n.widgets_values[0] });
      }
    }
    for (const n of sc.nodes.values()) {
      if (VIRTUAL_TYPES.has(n.type) || n.mode === 2 || n.mode === 4) continue;
      if (subgraphs.has(n.type)) {
        if (stack.has(n.type)) throw new Error(`subgraph ${n.type} contains itself`);
        emit(inner(sc, n), new Set([...stack, n.type]));
        continue;
      }
      const path = `${sc.prefix}${n.id}`;
      const def = defs[n.type];
      /** @type {Record<string, any>} */
      const inputs = def ? widgetInputs(def, n.widgets_values) : {};
      for (const [k, v] of Object.entries(overrides.get(path) ?? {})) inputs[k] = Array.isArray(v) ? { __value__: v } : v;
      for (const input of n.inputs ?? []) {
        if (input.link == null) continue;
        const src = resolve(sc, input.link);
        if (src) inputs[input.name] = src;
      }
      const title = n.title ?? def?.display_name ?? n.type;
      prompt[path] = { inputs, class_type: n.type, _meta: { title } };
    }
  };
  emit(scope(workflow, "", null, null), new Set());
  // Links from muted or missing nodes dangle: drop them (§3.1 step 7).
  for (const node of Object.values(prompt)) {
    for (const [k, v] of Object.entries(node.inputs)) {
      if (Array.isArray(v) && v.length === 2 && !(v[0] in prompt)) delete node.inputs[k];
    }
  }
  return prompt;
}

/**
 * Resolve `{a|b}` choices and strip comments in a dynamic-prompt string (§3.7.1).
 * @param {string} text
 * @param {() => number} [random]
 */
export function expandDynamicPrompt(text, random = Math.random) {
  const stripped = text.replace(/\/\*[\s\S]*?\*\//g, "").replace(/\/\/.*$/gm, "");
  let i = 0;
  /** @param {boolean} inBlock @returns {string[]} options at this level */
  const parse = (inBlock) => {
    const options = [""];
    while (i < stripped.length) {
      const c = stripped[i];
      if (c === "\\" && i + 1 < stripped.length) {
        options[options.length - 1] += c + stripped[i + 1];
        i += 2;
      } else if (c === "{") {
        i++;
        const inner = parse(true);
        options[options.length - 1] += inner[Math.floor(random() * inner.length)] ?? "";
      } else if (c === "}" && inBlock) {
        i++;
        return options;
      } else if (c === "|" && inBlock) {
        options.push("");
        i++;
      } else {
        options[options.length - 1] += c;
        i++;
      }
    }
    // An unclosed block keeps its text as written.
    return inBlock ? ["{" + options.join("|")] : options;
  };
  return parse(false)[0].replace(/\\([{}|])/g, "$1");
}

const SAVE_NODES = new Set(["SaveImage", "SaveVideo", "SaveAnimatedWEBP", "SaveWEBM", "SaveAudio", "SaveGLB",
  "SaveAnimatedPNG", "CLIPSave", "VAESave", "ModelSave", "LoraSave", "SaveLatent"]);

/**
 * Expand `%date:FORMAT%` and `%Node.widget%` in a filename prefix (§3.7.2).
 * @param {string} text
 * @param {ApiPrompt} prompt
 * @param {Record<string, any>} workflow
 * @param {Date} now
 */
export function expandFilenamePattern(text, prompt, workflow, now) {
  return text.replace(/%([^%]+)%/g, (whole, body) => {
    if (body.startsWith("date:")) return formatDate(body.slice(5), now);
    const parts = body.split(".");
    if (parts.length !== 2) return whole;
    const [nodeName, widget] = parts;
    const nodes = workflow.nodes ?? [];
    const node = nodes.find((/** @type {any} */ n) => n.properties?.["Node name for S&R"] === nodeName)
      ?? nodes.find((/** @type {any} */ n) => n.title === nodeName);
    const value = node && prompt[String(node.id)]?.inputs?.[widget];
    if (value === undefined || Array.isArray(value)) return whole;
    // eslint-disable-next-line no-control-regex
    return String(value).replace(/[/?<>\\:*|"\u0000-\u001f\u007f]/g, "_");
  });
}

/** @param {string} fmt @param {Date} d */
function formatDate(fmt, d) {
  /** @type {Record<string, number>} */
  const parts = { y: d.getFullYear(), M: d.getMonth() + 1, d: d.getDate(), h: d.getHours(), m: d.getMinutes(), s: d.getSeconds() };
  return fmt.replace(/yyyy|yy|MM|M|dd|d|hh|h|mm|m|ss|s/g, (t) => {
    if (t === "yyyy") return String(parts.y);
    if (t === "yy") return String(parts.y).slice(-2);
    const v = parts[t[0]];
    return t.length === 2 ? String(v).padStart(2, "0") : String(v);
  });
}

/**
 * Apply the editor's pre-send rewrites to a converted prompt in place.
 * @param {ApiPrompt} prompt
 * @param {Record<string, any>} workflow
 * @param {NodeDefs} defs
 * @param {{random?: () => number, now?: Date}} [opts]
 */
export function applyEditorRewrites(prompt, workflow, defs, opts = {}) {
  const random = opts.random ?? Math.random, now = opts.now ?? new Date();
  for (const node of Object.values(prompt)) {
    const def = defs[node.class_type];
    if (!def) continue;
    for (const w of widgetSpecs(def)) {
      const v = node.inputs[w.name];
      if (w.kind === "STRING" && w.options.dynamicPrompts && typeof v === "string") node.inputs[w.name] = expandDynamicPrompt(v, random);
    }
  }
  for (const node of Object.values(prompt)) {
    const v = node.inputs.filename_prefix;
    if (SAVE_NODES.has(node.class_type) && typeof v === "string") {
      node.inputs.filename_prefix = expandFilenamePattern(v, prompt, workflow, now);
    }
  }
  return prompt;
}

/**
 * Whether a value is an API-format prompt: a non-empty object of `{class_type, inputs}` nodes.
 * @param {any} data
 */
export function isApiPrompt(data) {
  if (!data || typeof data !== "object" || Array.isArray(data)) return false;
  const vals = Object.values(data);
  return vals.length > 0 && vals.every((n) => n && typeof n === "object" && typeof n.class_type === "string" &&
    n.inputs && typeof n.inputs === "object");
}

/**
 * Build an editor workflow from an API prompt (§4.2 step 4): one node per entry, widget values
 * from constants, links from link inputs, laid out left to right by depth.
 * @param {ApiPrompt} prompt
 * @param {NodeDefs} defs
 */
export function promptToWorkflow(prompt, defs) {
  const missing = [...new Set(Object.values(prompt).map((n) => n.class_type).filter((t) => !defs[t]))];
  if (missing.length) throw new Error(`missing node types: ${missing.join(", ")}`);
  /** @type {Map<string, number>} */
  const ids = new Map();
  let next = Math.max(0, ...Object.keys(prompt).map(Number).filter(Number.isInteger)) + 1;
  for (const key of Object.keys(prompt)) ids.set(key, /^\d+$/.test(key) ? Number(key) : next++);
  /** @type {any[]} */
  const links = [];
  /** @type {Map<string, any>} */
  const nodes = new Map();
  for (const [key, p] of Object.entries(prompt)) {
    const def = defs[p.class_type];
    const specs = widgetSpecs(def);
    const values = specs.map((w) => {
      if (w.kind === "control") return "fixed";
      if (w.kind === "filter") return "";
      if (w.kind === "upload") return "image";
      const v = p.inputs[w.name];
      if (v === undefined || (Array.isArray(v) && v.length === 2 && typeof v[0] === "string")) return missingDefault(w);
      return v && typeof v === "object" && "__value__" in v ? v.__value__ : v;
    });
    /** @type {Record<string, any>[]} */
    const inputs = socketSpecs(def).map((s) => ({ name: s.name, type: s.type, link: null }));
    for (const w of specs) {
      const v = p.inputs[w.name];
      if (w.serialize && Array.isArray(v) && v.length === 2 && typeof v[0] === "string") {
        inputs.push({ name: w.name, type: w.kind, link: null, widget: { name: w.name } });
      }
    }
    const outputs = (def.output ?? []).map((t, i) => ({ name: def.output_name?.[i] ?? String(t), type: String(t), links: null, slot_index: i }));
    const title = p._meta?.title;
    nodes.set(key, { id: ids.get(key), type: p.class_type, pos: [0, 0], size: [240, 120], flags: {}, order: 0, mode: 0,
      inputs, outputs, properties: { "Node name for S&R": p.class_type }, widgets_values: values,
      ...(title && title !== def.display_name ? { title } : {}) });
  }
  let linkId = 0;
  for (const [key, p] of Object.entries(prompt)) {
    const target = nodes.get(key);
    for (const [name, v] of Object.entries(p.inputs)) {
      if (!Array.isArray(v) || v.length !== 2 || !nodes.has(String(v[0]))) continue;
      const slot = target.inputs.findIndex((/** @type {any} */ i) => i.name === name);
      if (slot < 0) continue;
      const origin = nodes.get(String(v[0]));
      const out = origin.outputs[Number(v[1])];
      if (!out) continue;
      const id = ++linkId;
      links.push([id, origin.id, Number(v[1]), target.id, slot, out.type]);
      target.inputs[slot].link = id;
      out.links = [...(out.links ?? []), id];
    }
  }
  // Depth = longest path from a source; columns by depth, rows in prompt order.
  /** @type {Map<number, number>} */
  const depth = new Map();
  const byId = new Map([...nodes.values()].map((n) => [n.id, n]));
  /** @param {any} n @param {Set<number>} stack @returns {number} */
  const depthOf = (n, stack) => {
    if (depth.has(n.id)) return /** @type {number} */ (depth.get(n.id));
    if (stack.has(n.id)) return 0;
    stack.add(n.id);
    let d = 0;
    for (const l of links) if (l[3] === n.id) d = Math.max(d, depthOf(byId.get(l[1]), stack) + 1);
    depth.set(n.id, d);
    return d;
  };
  /** @type {Map<number, number>} */
  const rows = new Map();
  for (const n of nodes.values()) {
    const d = depthOf(n, new Set());
    const r = rows.get(d) ?? 0;
    rows.set(d, r + 1);
    n.pos = [40 + d * 320, 40 + r * 260];
  }
  return { last_node_id: Math.max(0, ...byId.keys()), last_link_id: linkId, nodes: [...nodes.values()], links, groups: [],
    config: {}, extra: {}, version: 0.4 };
}
