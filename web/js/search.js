// @ts-check
/** Fuzzy node search by display name, class name and category, optionally filtered by slot type. */
import { socketSpecs, widgetSpecs, typesCompatible } from "./nodedefs.js";

/** @typedef {import("./nodedefs.js").NodeDefs} NodeDefs */

/**
 * Score how well `query` matches `text`: higher is better, -1 for no match. Consecutive and
 * word-start matches score more, so "ksa" ranks KSampler above "Mask Sampler".
 * @param {string} query
 * @param {string} text
 */
export function fuzzyScore(query, text) {
  const q = query.toLowerCase(), t = text.toLowerCase();
  if (!q) return 0;
  const idx = t.indexOf(q);
  if (idx >= 0) return 1000 - idx * 2 - (t.length - q.length) * 0.1 + (idx === 0 ? 200 : 0);
  let score = 0, ti = 0, run = 0;
  for (const c of q) {
    const found = t.indexOf(c, ti);
    if (found < 0) return -1;
    run = found === ti ? run + 1 : 0;
    const wordStart = found === 0 || /[\s_\-/()]/.test(t[found - 1]) || (text[found] !== t[found]);
    score += 10 + run * 5 + (wordStart ? 8 : 0) - Math.min(found - ti, 10);
    ti = found + 1;
  }
  return score;
}

/**
 * Node classes matching `query`, best first.
 * @param {NodeDefs} defs
 * @param {string} query
 * @param {{inputType?: string, outputType?: string, limit?: number}} [filter]
 *   inputType: the node must accept this type on some input; outputType: must produce it.
 * @returns {string[]}
 */
export function searchNodes(defs, query, filter = {}) {
  /** @type {[string, number][]} */
  const hits = [];
  for (const [name, def] of Object.entries(defs)) {
    if (def.deprecated) continue;
    if (filter.inputType && !acceptsType(def, filter.inputType)) continue;
    if (filter.outputType && !(def.output ?? []).some((t) => typesCompatible(filter.outputType ?? "", String(t)))) continue;
    const s = Math.max(fuzzyScore(query, def.display_name ?? name), fuzzyScore(query, name) - 1,
      fuzzyScore(query, `${def.category ?? ""}/${def.display_name ?? name}`) - 300);
    if (s >= 0) hits.push([name, s]);
  }
  hits.sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
  return hits.slice(0, filter.limit ?? 50).map(([n]) => n);
}

/**
 * Whether a node has an input (socket, or widget convertible to one) that accepts `type`.
 * @param {import("./nodedefs.js").NodeDef} def
 * @param {string} type
 */
export function acceptsType(def, type) {
  return socketSpecs(def).some((s) => typesCompatible(type, s.type)) ||
    (["INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"].includes(type) && widgetSpecs(def).some((w) => w.kind === type));
}

/**
 * Node classes grouped by category path, for the right-click "Add Node" menu.
 * @param {NodeDefs} defs
 * @returns {Map<string, string[]>} category → class names sorted by display name
 */
export function byCategory(defs) {
  /** @type {Map<string, string[]>} */
  const out = new Map();
  for (const [name, def] of Object.entries(defs)) {
    if (def.deprecated) continue;
    const cat = def.category || "sd";
    out.set(cat, [...(out.get(cat) ?? []), name]);
  }
  for (const list of out.values()) list.sort((a, b) => (defs[a].display_name ?? a).localeCompare(defs[b].display_name ?? b));
  return new Map([...out].sort((a, b) => a[0].localeCompare(b[0])));
}
