// @ts-check
/**
 * Reading `/object_info` node definitions: which inputs are sockets, which are widgets, in
 * which order their values sit in `widgets_values` (workflows.md §3.3), and slot type rules.
 * No DOM: shared by the graph model, the API-format converter and the view.
 */

/** @typedef {[any, Record<string, any>?]} InputSpec  `[type | options list, options?]` */
/**
 * @typedef {{input?: {required?: Record<string, InputSpec>, optional?: Record<string, InputSpec>, hidden?: Record<string, any>},
 *   input_order?: {required?: string[], optional?: string[]}, output?: (string|string[])[], output_name?: string[],
 *   output_is_list?: boolean[], name: string, display_name?: string, description?: string, category?: string,
 *   output_node?: boolean, python_module?: string, output_tooltips?: string[], deprecated?: boolean, experimental?: boolean}} NodeDef
 */
/** @typedef {Record<string, NodeDef>} NodeDefs */
/**
 * One value slot of a node's `widgets_values`.
 * `kind` is the widget type; `control` and `filter` are the values that follow
 * control_after_generate widgets, `upload` is the button value LoadImage stores last.
 * @typedef {{name: string, kind: 'INT'|'FLOAT'|'STRING'|'BOOLEAN'|'COMBO'|'control'|'filter'|'upload',
 *   options: Record<string, any>, values?: any[], of?: string, serialize: boolean}} WidgetSpec
 */

export const WIDGET_KINDS = new Set(["INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"]);
export const CONTROL_VALUES = ["fixed", "increment", "decrement", "randomize"];
const UPLOAD_KEYS = ["image_upload", "video_upload", "audio_upload", "animated_image_upload"];

/**
 * Input names in the order the editor lays them out: input_order first, then the rest.
 * @param {NodeDef} def
 * @returns {{name: string, spec: InputSpec, optional: boolean}[]}
 */
export function orderedInputs(def) {
  /** @type {{name: string, spec: InputSpec, optional: boolean}[]} */
  const out = [];
  const seen = new Set();
  for (const group of /** @type {const} */ (["required", "optional"])) {
    const specs = def.input?.[group] ?? {};
    const order = def.input_order?.[group] ?? [];
    for (const name of [...order.filter((n) => n in specs), ...Object.keys(specs)]) {
      if (seen.has(group + name)) continue;
      seen.add(group + name);
      out.push({ name, spec: specs[name], optional: group === "optional" });
    }
  }
  return out;
}

/**
 * The widget kind of an input spec, or null when the input is a socket.
 * @param {InputSpec} spec
 * @returns {'INT'|'FLOAT'|'STRING'|'BOOLEAN'|'COMBO'|null}
 */
export function widgetKind(spec) {
  const [type, opts = {}] = spec;
  if (opts?.forceInput || opts?.defaultInput) return null;
  if (Array.isArray(type)) return "COMBO";
  if (typeof type === "string" && WIDGET_KINDS.has(type)) return /** @type {any} */ (type);
  return null;
}

/**
 * Choices of a combo spec, in either the legacy `[[...], {}]` or the `["COMBO", {options}]` form.
 * @param {InputSpec} spec
 * @returns {any[]}
 */
export function comboValues(spec) {
  if (Array.isArray(spec[0])) return spec[0];
  return spec[1]?.options ?? [];
}

/**
 * How many control values follow a widget in `widgets_values` (workflows.md §3.3 rule 3).
 * @param {string} name
 * @param {string} kind
 * @param {Record<string, any>} opts
 */
export function controlCount(name, kind, opts) {
  const cag = opts?.control_after_generate;
  if (kind === "INT") return cag === true || (cag === undefined && (name === "seed" || name === "noise_seed")) ? 1 : 0;
  if (kind === "FLOAT") return cag === true ? 1 : 0;
  if (kind === "COMBO") return cag === true ? 2 : 0;
  return 0;
}

/**
 * The value slots of a node, in `widgets_values` order.
 * @param {NodeDef} def
 * @returns {WidgetSpec[]}
 */
export function widgetSpecs(def) {
  /** @type {WidgetSpec[]} */
  const out = [];
  let upload = false;
  for (const { name, spec } of orderedInputs(def)) {
    const kind = widgetKind(spec);
    if (!kind) continue;
    const options = spec[1] ?? {};
    /** @type {WidgetSpec} */
    const w = { name, kind, options, serialize: true };
    if (kind === "COMBO") w.values = comboValues(spec);
    out.push(w);
    const n = controlCount(name, kind, options);
    if (n >= 1) out.push({ name: `${name}:control`, kind: "control", options: {}, of: name, serialize: false });
    if (n >= 2) out.push({ name: `${name}:filter`, kind: "filter", options: {}, of: name, serialize: false });
    if (UPLOAD_KEYS.some((k) => options[k])) upload = true;
  }
  if (upload) out.push({ name: "upload", kind: "upload", options: {}, serialize: false });
  return out;
}

/**
 * Link-only inputs of a node (hidden inputs excluded).
 * @param {NodeDef} def
 * @returns {{name: string, type: string, optional: boolean}[]}
 */
export function socketSpecs(def) {
  return orderedInputs(def)
    .filter(({ spec }) => !widgetKind(spec))
    .map(({ name, spec, optional }) => ({ name, type: String(spec[0]), optional }));
}

/**
 * The default value of a widget (rule 6 of workflows.md §3.3).
 * @param {WidgetSpec} w
 */
export function defaultValue(w) {
  const o = w.options;
  switch (w.kind) {
    case "INT":
    case "FLOAT":
      return o.default ?? o.min ?? 0;
    case "STRING":
      return o.default ?? "";
    case "BOOLEAN":
      return o.default ?? false;
    case "COMBO":
      return o.default ?? w.values?.[0] ?? "";
    case "control":
      return "randomize";
    case "filter":
      return "";
    case "upload":
      return "image";
  }
}

/**
 * Whether an output of type `out` may feed an input of type `input`: equal, either is `*`,
 * or the comma-separated unions overlap.
 * @param {string} out
 * @param {string} input
 */
export function typesCompatible(out, input) {
  if (out === "*" || input === "*" || out === input) return true;
  const a = String(out).split(",").map((s) => s.trim());
  const b = new Set(String(input).split(",").map((s) => s.trim()));
  return a.some((t) => b.has(t));
}

/** Frontend-only node types: never sent to the server (workflows.md §2.8). */
export const VIRTUAL_TYPES = new Set(["Reroute", "PrimitiveNode", "Note", "MarkdownNote"]);

/**
 * Definitions of the editor's own virtual nodes, in /object_info shape so they can be searched
 * and created like server nodes.
 * @type {NodeDefs}
 */
export const VIRTUAL_DEFS = {
  Reroute: { name: "Reroute", display_name: "Reroute", category: "utils", description: "A waypoint that routes one link.",
    input: { required: { "": ["*"] } }, output: ["*"], output_name: [""] },
  Note: { name: "Note", display_name: "Note", category: "utils", description: "A text note on the canvas; never executed.",
    input: { required: { text: ["STRING", { multiline: true }] } }, output: [] },
  MarkdownNote: { name: "MarkdownNote", display_name: "Markdown Note", category: "utils",
    description: "A Markdown text note on the canvas; never executed.",
    input: { required: { text: ["STRING", { multiline: true }] } }, output: [] },
};
