// @ts-check
/**
 * The app shell: boots the editor, wires the graph model, canvas view and server connection,
 * and owns the toolbar, queue/history panel, gallery, files and keyboard shortcuts.
 */
import { Graph, UndoStack, MODE_MUTED, MODE_BYPASS, MODE_NORMAL, TITLE_H } from "./graph.js";
import { VIRTUAL_DEFS } from "./nodedefs.js";
import { CanvasView } from "./canvas.js";
import { Api } from "./api.js";
import { workflowToPrompt, applyEditorRewrites, promptToWorkflow } from "./prompt.js";
import { parseWorkflowFile } from "./png.js";
import { searchNodes, byCategory } from "./search.js";
import { showMenu, showSearch, toast, askName } from "./ui.js";

/** @typedef {import("./graph.js").GraphNode} GraphNode */
/** @typedef {import("./canvas.js").MenuItem} MenuItem */
/** @typedef {import("./nodedefs.js").NodeDefs} NodeDefs */

const AUTOSAVE_KEY = "kiln.workflow";
const CLIPBOARD_KEY = "kiln.clipboard";
/** Server-stored setting (api.md §10.4): send `preview_method: "auto"` with each prompt. */
const LIVE_PREVIEW_SETTING = "Kiln.LivePreview";
const NODE_COLORS = { red: ["#322", "#533"], brown: ["#332922", "#593930"], green: ["#232", "#353"], blue: ["#223", "#335"],
  purple: ["#323", "#535"], cyan: ["#233", "#355"], yellow: ["#432", "#653"] };

/**
 * @typedef {{name: string, setup?: (app: App) => any, nodeCreated?: (node: GraphNode, app: App) => any,
 *   [k: string]: any}} Extension
 */

/** Keyboard and mouse reference shown by the "Keys" button. */
const SHORTCUTS = [
  ["Ctrl+Enter", "queue the graph"], ["Double-click canvas", "search and add a node"], ["Right-click", "menus"],
  ["Drag canvas / middle button", "pan"], ["Wheel / pinch", "zoom"], ["Ctrl/Shift+drag", "box select"],
  ["Drag output → input", "link (drop on canvas: search)"], ["Ctrl+C / Ctrl+V", "copy / paste"],
  ["Ctrl+Z / Ctrl+Y", "undo / redo"], ["Delete", "remove selection"], ["Ctrl+M / Ctrl+B", "mute / bypass"],
  ["Alt+C", "collapse"], ["Ctrl+G", "group selection"], [".", "fit view"], ["R", "refresh node lists"],
  ["Ctrl+S / Ctrl+O", "save / open"],
];

function toggleShortcuts() {
  const open = document.querySelector(".shortcuts");
  if (open) return open.remove();
  const panel = Object.assign(document.createElement("div"), { className: "shortcuts" });
  const table = document.createElement("table");
  for (const [key, what] of SHORTCUTS) {
    const row = table.insertRow();
    row.insertCell().textContent = key;
    row.insertCell().textContent = what;
  }
  panel.appendChild(table);
  panel.addEventListener("click", () => panel.remove());
  document.body.appendChild(panel);
}

export class App {
  constructor() {
    this.api = new Api();
    /** @type {NodeDefs} */
    this.defs = {};
    this.graph = new Graph({});
    this.undo = new UndoStack(this.graph);
    /** @type {Extension[]} */
    this.extensions = [];
    /** @type {Map<string, {number: number, size: number}>} prompts queued from this page */
    this.myPrompts = new Map();
    /** @type {string|null} */
    this.runningPrompt = null;
    /** @type {{url: string, node: string}[]} */
    this.gallery = [];
    this.autosaveTimer = 0;
    /** @type {GraphNode|null} the node the image upload chooser is open for */
    this.uploadTarget = null;
    const canvas = /** @type {HTMLCanvasElement} */ (document.getElementById("graph-canvas"));
    this.view = new CanvasView(canvas, this.graph, {
      commit: () => this.commit(),
      hint: (text, kind) => toast(text, kind),
      search: (at, screen, filter, done) => this.openSearch(screen, filter, done),
      menu: (items, at) => showMenu(items, at),
      nodeMenu: (node) => this.nodeMenu(node),
      canvasMenu: (at) => this.canvasMenu(at),
      upload: (node) => this.chooseUpload(node),
      imageChosen: (node) => this.showInputImage(node),
    });
  }

  // ---- boot --------------------------------------------------------------------------------

  async start() {
    this.bindToolbar();
    this.bindKeys();
    this.bindDrop();
    this.api.on((msg) => this.onServerMessage(msg));
    this.graph.nodeCreatedListeners.add((node) => {
      for (const ext of this.extensions) this.callExtension(ext, "nodeCreated", node);
    });
    await Promise.all([this.loadDefs(), this.loadSettings()]);
    this.api.connect();
    await this.loadExtensions();
    await this.loadInitialWorkflow();
    this.refreshQueue();
    document.body.dataset.ready = "true";
  }

  async loadDefs() {
    try {
      this.defs = await this.api.objectInfo();
    } catch (e) {
      toast(`Could not load node definitions: ${/** @type {Error} */ (e).message}`, "error");
      this.defs = {};
    }
    this.graph.updateDefs(this.defs);
  }

  /** Apply stored settings to the toolbar (live preview is on unless switched off). */
  async loadSettings() {
    const settings = await this.api.settings();
    const box = /** @type {HTMLInputElement} */ (document.getElementById("live-preview"));
    box.checked = settings[LIVE_PREVIEW_SETTING] !== false;
    box.addEventListener("change", () => {
      this.api.saveSetting(LIVE_PREVIEW_SETTING, box.checked).catch((e) => toast(e.message, "error"));
    });
  }

  /** Re-read node definitions so combo lists show files added on the server. */
  async refreshDefs() {
    await this.loadDefs();
    toast("Node definitions refreshed");
  }

  /** Autosaved graph first, else the server's default workflow, else an empty canvas. */
  async loadInitialWorkflow() {
    const saved = localStorage.getItem(AUTOSAVE_KEY);
    if (saved) {
      try {
        this.loadWorkflow(JSON.parse(saved), { keepView: true });
        return;
      } catch (e) {
        toast(`Autosaved workflow could not be restored: ${/** @type {Error} */ (e).message}`, "error");
      }
    }
    const names = await this.api.templates().catch(() => []);
    const wf = names.includes("default") ? await this.api.template("default").catch(() => null) : null;
    if (wf) this.loadWorkflow(wf);
    this.view.fitView();
  }

  async loadExtensions() {
    const urls = await this.api.extensions();
    for (const url of urls) {
      try {
        await import(url);
      } catch (e) {
        console.warn(`extension ${url} failed to load`, e);
        toast(`Extension ${url} failed to load`, "error");
      }
    }
    for (const ext of this.extensions) await this.callExtension(ext, "setup");
  }

  /**
   * Register a web extension (custom-node `WEB_DIRECTORY` scripts call this).
   * @param {Extension} ext
   */
  registerExtension(ext) {
    this.extensions.push(ext);
    if (document.body.dataset.ready === "true") this.callExtension(ext, "setup");
  }

  /** @param {Extension} ext @param {string} hook @param {...any} args */
  async callExtension(ext, hook, ...args) {
    try {
      await ext[hook]?.(...args, this);
    } catch (e) {
      console.warn(`extension ${ext.name}.${hook} failed`, e);
    }
  }

  // ---- workflows ---------------------------------------------------------------------------

  /**
   * Replace the graph with a workflow document.
   * @param {Record<string, any>} wf @param {{keepView?: boolean}} [opts]
   */
  loadWorkflow(wf, opts = {}) {
    try {
      this.graph.configure(wf);
    } catch (e) {
      toast(`Could not open the workflow: ${/** @type {Error} */ (e).message}`, "error");
      this.undo.restore(this.undo.current);
      return;
    }
    this.view.selected.clear();
    this.view.runtime.clear();
    for (const n of this.graph.nodes.values()) this.showInputImage(n);
    const missing = [...new Set([...this.graph.nodes.values()].filter((n) => n.missing && !n.subgraph && n.type !== "PrimitiveNode").map((n) => n.type))];
    if (missing.length) toast(`Missing node types: ${missing.join(", ")}`, "error");
    if (opts.keepView) this.view.restoreView();
    else if (wf.extra?.ds) this.view.restoreView();
    else this.view.fitView();
    this.undo.reset();
    this.autosave();
  }

  /** The graph as saved: current view included. */
  serialize() {
    this.view.storeView();
    return this.graph.serialize();
  }

  /** Record one undo step and schedule an autosave. */
  commit() {
    this.undo.commit();
    clearTimeout(this.autosaveTimer);
    this.autosaveTimer = window.setTimeout(() => this.autosave(), 300);
  }

  autosave() {
    try {
      localStorage.setItem(AUTOSAVE_KEY, JSON.stringify(this.serialize()));
    } catch (e) {
      console.warn("autosave failed", e);
    }
  }

  /** @param {Uint8Array} bytes @param {string} name */
  openBytes(bytes, name) {
    try {
      const r = parseWorkflowFile(bytes, name);
      if (r.kind === "workflow") this.loadWorkflow(r.data);
      else this.loadWorkflow(promptToWorkflow(r.data, this.defs));
      toast(`Opened ${name}`);
    } catch (e) {
      toast(/** @type {Error} */ (e).message, "error");
    }
  }

  /** @param {File} file */
  async openFile(file) {
    this.openBytes(new Uint8Array(await file.arrayBuffer()), file.name);
  }

  /** @param {string} filename @param {any} data */
  download(filename, data) {
    const a = document.createElement("a");
    a.href = URL.createObjectURL(new Blob([JSON.stringify(data, null, 2)], { type: "application/json" }));
    a.download = filename;
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 1000);
  }

  async saveToFile() {
    const name = await askName("Save workflow as", "workflow");
    if (name) this.download(name.endsWith(".json") ? name : `${name}.json`, this.serialize());
  }

  async saveToServer() {
    const name = await askName("Save to my workflows as", "workflow");
    if (!name) return;
    const file = `workflows/${name.endsWith(".json") ? name : `${name}.json`}`;
    try {
      await this.api.putUserFile(file, JSON.stringify(this.serialize()));
      toast(`Saved ${file}`);
    } catch (e) {
      toast(/** @type {Error} */ (e).message, "error");
    }
  }

  exportApi() {
    try {
      this.download("workflow_api.json", this.buildPrompt());
    } catch (e) {
      toast(/** @type {Error} */ (e).message, "error");
    }
  }

  /** The Workflows menu: shipped workflows and the user's saved ones, listed when opened. @param {number[]} at */
  async workflowsMenu(at) {
    const [templates, user] = await Promise.all([this.api.templates().catch(() => []), this.api.userWorkflows().catch(() => [])]);
    const src = { templates, user };
    /** @type {MenuItem[]} */
    const items = [
      ...src.templates.map((/** @type {string} */ t) => ({ label: `Example: ${t}`, action: () => this.openTemplate(t) })),
      null,
      ...src.user.map((/** @type {string} */ f) => ({ label: f.replace(/\.json$/, ""), action: () => this.openUserWorkflow(f) })),
    ];
    if (!src.templates.length && !src.user.length) items.push({ label: "No saved workflows", disabled: true });
    showMenu(items, at);
  }

  /** Open a shipped workflow, framed in the view. @param {string} name */
  async openTemplate(name) {
    const wf = await this.api.template(name);
    if (!wf) return toast(`Workflow ${name} not found`, "error");
    this.loadWorkflow(wf);
    this.view.fitView();
  }

  /** @param {string} file */
  async openUserWorkflow(file) {
    try {
      this.loadWorkflow(await this.api.getUserFile(`workflows/${file}`));
    } catch (e) {
      toast(/** @type {Error} */ (e).message, "error");
    }
  }

  // ---- queueing ----------------------------------------------------------------------------

  buildPrompt() {
    const wf = this.serialize();
    return applyEditorRewrites(workflowToPrompt(wf, this.defs), wf, this.defs);
  }

  /** Queue the graph `batch count` times, updating control_after_generate widgets after each. */
  async queue() {
    const count = Math.max(1, Math.min(100, Number(/** @type {HTMLInputElement} */ (document.getElementById("batch-count")).value) || 1));
    for (const rt of this.view.runtime.values()) rt.errors = [];
    this.view.dirty();
    for (let i = 0; i < count; i++) {
      let prompt;
      try {
        prompt = this.buildPrompt();
      } catch (e) {
        toast(/** @type {Error} */ (e).message, "error");
        return;
      }
      try {
        const live = /** @type {HTMLInputElement} */ (document.getElementById("live-preview")).checked;
        const res = await this.api.queuePrompt(prompt, this.serialize(), { previewMethod: live ? "auto" : undefined });
        this.myPrompts.set(res.prompt_id, { number: res.number, size: Object.keys(prompt).length });
        if (res.node_errors && Object.keys(res.node_errors).length) this.showNodeErrors(res.node_errors);
      } catch (e) {
        const body = /** @type {any} */ (e).body;
        if (body?.node_errors && Object.keys(body.node_errors).length) this.showNodeErrors(body.node_errors);
        const err = body?.error;
        const text = typeof err === "object" ? `${err.message}${err.details ? `: ${err.details}` : ""}` : err ?? /** @type {Error} */ (e).message;
        toast(`Prompt failed: ${text}`, "error");
        return;
      }
      this.graph.applyControlAfterGenerate();
      this.commit();
    }
    this.refreshQueue();
  }

  /** Outline the failing nodes with their messages (api.md §1.3 shape). @param {Record<string, any>} nodeErrors */
  showNodeErrors(nodeErrors) {
    for (const [id, entry] of Object.entries(nodeErrors)) {
      const msgs = (entry.errors ?? []).map((/** @type {any} */ er) => `${er.message}${er.details ? `: ${er.details}` : ""}`);
      this.runtimeOf(id).errors = msgs;
    }
    this.view.dirty();
  }

  /** @param {string} id */
  runtimeOf(id) {
    let rt = this.view.runtime.get(id);
    if (!rt) this.view.runtime.set(id, (rt = {}));
    return rt;
  }

  /** @param {import("./api.js").ServerMessage} msg */
  onServerMessage({ type, data }) {
    switch (type) {
      case "connection":
        this.setStatus(data.connected ? "connected" : "reconnecting…", data.connected);
        if (data.reconnected) {
          toast("Reconnected to the server");
          this.loadDefs().then(() => this.refreshQueue());
        }
        break;
      case "status":
        document.getElementById("queue-size").textContent = String(data?.status?.exec_info?.queue_remaining ?? 0);
        this.refreshQueue();
        break;
      case "execution_start":
        this.runningPrompt = data.prompt_id;
        for (const rt of this.view.runtime.values()) { rt.running = false; rt.progress = undefined; rt.preview = undefined; }
        this.setProgress(0);
        break;
      case "executing": {
        for (const rt of this.view.runtime.values()) rt.running = false;
        const id = data.display_node ?? data.node;
        if (id == null) {
          this.runningPrompt = null;
          this.setProgress(null);
        } else {
          const rt = this.runtimeOf(String(id));
          rt.running = true;
          rt.progress = 0;
        }
        this.view.dirty();
        break;
      }
      case "progress": {
        const rt = this.runtimeOf(String(data.node));
        rt.progress = data.max ? data.value / data.max : 0;
        this.view.dirty();
        break;
      }
      case "progress_state": {
        const nodes = Object.values(data.nodes ?? {});
        if (nodes.length) {
          const total = this.myPrompts.get(data.prompt_id)?.size ?? nodes.length;
          const done = nodes.reduce((s, n) => s + (n.state === "finished" ? 1 : n.max ? n.value / n.max : 0), 0);
          this.setProgress(done / Math.max(total, nodes.length));
        }
        break;
      }
      case "executed": {
        const id = String(data.display_node ?? data.node);
        const images = data.output?.images ?? [];
        const rt = this.runtimeOf(id);
        rt.preview = undefined;
        rt.images = images.map((/** @type {any} */ f) => this.loadImage(this.api.viewUrl(f)));
        for (const f of images) this.addToGallery(this.api.viewUrl(f), id);
        this.ensureImageSpace(id);
        break;
      }
      case "execution_error": {
        const rt = this.runtimeOf(String(data.node_id));
        rt.errors = [`${data.exception_type}: ${String(data.exception_message ?? "").trim()}`];
        rt.running = false;
        toast(`Error in ${data.node_type} #${data.node_id}: ${String(data.exception_message ?? "").trim()}`, "error");
        this.view.dirty();
        break;
      }
      case "execution_interrupted":
        toast("Interrupted");
        this.setProgress(null);
        break;
      case "execution_success":
        this.setProgress(null);
        this.refreshQueue();
        break;
      case "b_preview": {
        const id = data.nodeId ?? (this.runningNodeId() ?? null);
        if (!id) break;
        const url = URL.createObjectURL(data.blob);
        const img = this.loadImage(url, () => URL.revokeObjectURL(url));
        this.runtimeOf(String(id)).preview = img;
        this.ensureImageSpace(String(id));
        break;
      }
    }
  }

  runningNodeId() {
    for (const [id, rt] of this.view.runtime) if (rt.running) return id;
    return null;
  }

  /** @param {string} url @param {() => void} [onload] */
  loadImage(url, onload) {
    const img = new Image();
    img.onload = () => { onload?.(); this.view.dirty(); };
    img.src = url;
    return img;
  }

  /** Grow a node so its images are visible. @param {string} id */
  ensureImageSpace(id) {
    const node = this.graph.nodes.get(Number(id));
    if (node && node.size[1] < node.computeHeight() + 200) node.size[1] = node.computeHeight() + 200;
    this.view.dirty();
  }

  /** @param {number|null} fraction overall progress, or null to hide */
  setProgress(fraction) {
    const bar = /** @type {HTMLElement} */ (document.getElementById("overall-progress"));
    bar.hidden = fraction === null;
    bar.style.setProperty("--p", `${Math.round((fraction ?? 0) * 100)}%`);
    bar.title = fraction === null ? "" : `${Math.round((fraction ?? 0) * 100)}%`;
  }

  /** @param {string} text @param {boolean} ok */
  setStatus(text, ok) {
    const el = /** @type {HTMLElement} */ (document.getElementById("connection"));
    el.textContent = text;
    el.className = ok ? "ok" : "down";
  }

  /** @param {string} url @param {string} node */
  addToGallery(url, node) {
    this.gallery.unshift({ url, node });
    const host = /** @type {HTMLElement} */ (document.getElementById("gallery"));
    const img = Object.assign(document.createElement("img"), { src: url, alt: `output of node ${node}`, loading: "lazy" });
    img.addEventListener("click", () => this.showLightbox(url));
    host.prepend(img);
  }

  /** @param {string} url */
  showLightbox(url) {
    const back = Object.assign(document.createElement("div"), { className: "lightbox" });
    back.appendChild(Object.assign(document.createElement("img"), { src: url }));
    back.addEventListener("click", () => back.remove());
    document.body.appendChild(back);
  }

  async refreshQueue() {
    const host = document.getElementById("queue-list");
    if (!host) return;
    let queue, history;
    try {
      [queue, history] = await Promise.all([this.api.queue(), this.api.history(64)]);
    } catch {
      return;
    }
    /** @type {HTMLElement[]} */
    const rows = [];
    const row = (/** @type {string} */ label, /** @type {string} */ cls, /** @type {[string, () => void][]} */ actions) => {
      const el = document.createElement("div");
      el.className = `queue-item ${cls}`;
      el.append(Object.assign(document.createElement("span"), { textContent: label }));
      for (const [text, fn] of actions) {
        const b = Object.assign(document.createElement("button"), { textContent: text });
        b.addEventListener("click", fn);
        el.append(b);
      }
      rows.push(el);
    };
    for (const item of queue.queue_running ?? []) {
      row(`#${item[0]} running`, "running", [["Interrupt", () => this.api.interrupt()]]);
    }
    for (const item of [...(queue.queue_pending ?? [])].sort((a, b) => a[0] - b[0])) {
      row(`#${item[0]} pending`, "pending", [["Cancel", () => this.api.deleteQueued([item[1]]).then(() => this.refreshQueue())],
        ["Load", () => this.loadFromExtra(item[3])]]);
    }
    for (const [id, entry] of Object.entries(history ?? {}).reverse()) {
      const status = entry.status?.status_str ?? "?";
      const outputs = Object.values(entry.outputs ?? {}).flatMap((/** @type {any} */ o) => o.images ?? []);
      row(`#${entry.prompt?.[0]} ${status}${outputs.length ? ` · ${outputs.length} image${outputs.length > 1 ? "s" : ""}` : ""}`, `done ${status}`,
        [["Load", () => this.loadFromExtra(entry.prompt?.[3])], ["Delete", () => this.api.deleteHistory([id]).then(() => this.refreshQueue())]]);
    }
    host.replaceChildren(...rows);
  }

  /** Reopen the workflow a queued prompt was sent with. @param {any} extra */
  loadFromExtra(extra) {
    const wf = extra?.extra_pnginfo?.workflow;
    if (wf) this.loadWorkflow(wf);
    else toast("This prompt has no saved workflow", "error");
  }

  // ---- LoadImage ---------------------------------------------------------------------------

  /** Let the user pick an image file for a LoadImage-style node. @param {GraphNode} node */
  chooseUpload(node) {
    this.uploadTarget = node;
    /** @type {HTMLInputElement} */ (document.getElementById("upload-input")).click();
  }

  /** Upload a file and select it in the node's image widget. @param {GraphNode} node @param {File} file */
  async uploadTo(node, file) {
    try {
      const res = await this.api.uploadImage(file);
      const name = res.subfolder ? `${res.subfolder}/${res.name}` : res.name;
      const w = node.widget("image");
      if (!w) return;
      if (w.values && !w.values.includes(name)) w.values.push(name);
      w.value = name;
      this.showInputImage(node);
      this.graph.changed();
      this.commit();
    } catch (e) {
      toast(/** @type {Error} */ (e).message, "error");
    }
  }

  /** Show the chosen input image on LoadImage-style nodes. @param {GraphNode} node */
  showInputImage(node) {
    const w = node.widget("image");
    if (!w || !node.widgets.some((x) => x.kind === "upload") || !w.value) return;
    const m = /^(.*?)(?: \[(input|output|temp)\])?$/.exec(String(w.value));
    const path = m?.[1] ?? String(w.value);
    const slash = path.lastIndexOf("/");
    const url = this.api.viewUrl({ filename: path.slice(slash + 1), subfolder: slash >= 0 ? path.slice(0, slash) : "", type: m?.[2] ?? "input" });
    this.runtimeOf(String(node.id)).images = [this.loadImage(url)];
    if (node.size[1] < node.computeHeight() + 150) node.size[1] = node.computeHeight() + 150;
  }

  // ---- menus and search --------------------------------------------------------------------

  /** @param {number[]} screen @param {{inputType?: string, outputType?: string}} filter @param {(type: string) => void} done */
  openSearch(screen, filter, done) {
    const all = { ...this.defs, ...VIRTUAL_DEFS };
    const label = filter.inputType ? `accepts ${filter.inputType}` : filter.outputType ? `produces ${filter.outputType}` : undefined;
    showSearch(screen, (q) => searchNodes(all, q, filter).map((name) => ({ name, label: all[name].display_name ?? name,
      detail: all[name].category ?? "" })), done, label);
  }

  /** @param {number[]} at */
  canvasMenu(at) {
    const tree = new Map();
    for (const [cat, names] of byCategory({ ...this.defs, ...VIRTUAL_DEFS })) {
      let level = tree;
      for (const part of cat.split("/")) {
        if (!level.has(part)) level.set(part, new Map());
        level = level.get(part);
      }
      level.set("\0nodes", names);
    }
    const all = { ...this.defs, ...VIRTUAL_DEFS };
    /** @param {Map<string, any>} level @returns {MenuItem[]} */
    const build = (level) => [
      ...[...level].filter(([k]) => k !== "\0nodes").map(([k, sub]) => ({ label: k, submenu: build(sub) })),
      ...(level.get("\0nodes") ?? []).map((/** @type {string} */ name) => ({ label: all[name].display_name ?? name, action: () => {
        const n = this.graph.addNode(name, at);
        this.view.select(n.id, false);
        this.commit();
      } })),
    ];
    /** @type {MenuItem[]} */
    const items = [
      { label: "Add Node", submenu: build(tree) },
      { label: "Add Group", action: () => { this.graph.addGroup([at[0], at[1], 400, 300]); this.commit(); } },
      { label: "Add Group For Selected Nodes", disabled: !this.view.selected.size, action: () => this.groupSelected() },
      { label: "Add Reroute", action: () => { this.graph.addNode("Reroute", at); this.commit(); } },
      null,
      { label: "Paste", action: () => this.paste(at) },
      { label: "Fit View", action: () => this.view.fitView() },
    ];
    return items;
  }

  /** @param {GraphNode} node */
  nodeMenu(node) {
    const sel = [...this.view.selected].map((id) => this.graph.nodes.get(id)).filter((n) => !!n);
    const targets = /** @type {GraphNode[]} */ (sel.length ? sel : [node]);
    const setMode = (/** @type {number} */ mode) => {
      const next = targets.every((n) => n.mode === mode) ? MODE_NORMAL : mode;
      for (const n of targets) n.mode = next;
      this.graph.changed();
      this.commit();
    };
    const convertible = node.widgets.filter((w) => ["INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"].includes(w.kind) && !w.converted);
    const converted = node.inputs.filter((i) => i.widget);
    const rt = this.view.runtime.get(String(node.id));
    /** @type {MenuItem[]} */
    const items = [
      { label: "Rename", action: () => this.view.renameNode(node) },
      { label: node.flags.collapsed ? "Expand" : "Collapse", action: () => this.toggleCollapse(targets) },
      { label: node.mode === MODE_MUTED ? "Unmute" : "Mute", action: () => setMode(MODE_MUTED) },
      { label: node.mode === MODE_BYPASS ? "Remove Bypass" : "Bypass", action: () => setMode(MODE_BYPASS) },
      null,
      { label: "Convert Widget to Input", disabled: !convertible.length, submenu: convertible.map((w) => ({ label: w.name,
        action: () => { this.graph.convertWidgetToInput(node, w.name); this.commit(); } })) },
      { label: "Convert Input to Widget", disabled: !converted.length, submenu: converted.map((i) => ({ label: i.name,
        action: () => { this.graph.convertInputToWidget(node, /** @type {any} */ (i.widget).name); this.commit(); } })) },
      { label: "Colors", submenu: [{ label: "No color", action: () => this.colorNodes(targets, null) },
        ...Object.keys(NODE_COLORS).map((c) => ({ label: c, action: () => this.colorNodes(targets, c) }))] },
      ...(rt?.images?.length ? [{ label: "Open Image", action: () => this.showLightbox(/** @type {any} */ (rt.images)[0].src) }] : []),
      null,
      { label: "Copy", action: () => this.copy() },
      { label: "Clone", action: () => { this.copy(); this.paste([node.pos[0] + 30, node.pos[1] + 30]); } },
      { label: "Remove", action: () => this.deleteSelected() },
    ];
    return items;
  }

  /** @param {GraphNode[]} nodes @param {string|null} color */
  colorNodes(nodes, color) {
    for (const n of nodes) {
      const c = color ? NODE_COLORS[/** @type {keyof typeof NODE_COLORS} */ (color)] : undefined;
      n.color = c?.[0];
      n.bgcolor = c?.[1];
    }
    this.graph.changed();
    this.commit();
  }

  /** @param {GraphNode[]} nodes */
  toggleCollapse(nodes) {
    const collapse = !nodes.every((n) => n.flags.collapsed);
    for (const n of nodes) {
      if (collapse) n.flags.collapsed = true;
      else delete n.flags.collapsed;
    }
    this.graph.changed();
    this.commit();
  }

  groupSelected() {
    const nodes = [...this.view.selected].map((id) => this.graph.nodes.get(id)).filter((n) => !!n);
    if (!nodes.length) return;
    const list = /** @type {GraphNode[]} */ (nodes);
    const x0 = Math.min(...list.map((n) => n.pos[0])) - 20, y0 = Math.min(...list.map((n) => n.pos[1] - TITLE_H)) - 50;
    const x1 = Math.max(...list.map((n) => n.pos[0] + n.size[0])) + 20, y1 = Math.max(...list.map((n) => n.pos[1] + n.height)) + 20;
    this.graph.addGroup([x0, y0, x1 - x0, y1 - y0]);
    this.commit();
  }

  copy() {
    const clip = this.graph.copy([...this.view.selected]);
    if (!clip.nodes.length) return;
    localStorage.setItem(CLIPBOARD_KEY, JSON.stringify(clip));
  }

  /** @param {number[]} [at] */
  paste(at = this.view.mouse) {
    const text = localStorage.getItem(CLIPBOARD_KEY);
    if (!text) return;
    const ids = this.graph.paste(JSON.parse(text), at);
    this.view.selected = new Set(ids);
    this.commit();
  }

  deleteSelected() {
    if (this.view.selectedGroup) {
      this.graph.groups = this.graph.groups.filter((g) => g !== this.view.selectedGroup);
      this.view.selectedGroup = null;
    }
    for (const id of this.view.selected) this.graph.removeNode(id);
    this.view.selected.clear();
    this.graph.changed();
    this.commit();
  }

  // ---- input -------------------------------------------------------------------------------

  bindToolbar() {
    /** @param {string} id @param {(e: MouseEvent) => void} fn */
    const on = (id, fn) => document.getElementById(id)?.addEventListener("click", fn);
    on("queue-button", () => this.queue());
    on("interrupt-button", () => this.api.interrupt());
    on("save-button", () => this.saveToFile());
    on("save-server-button", () => this.saveToServer());
    on("open-button", () => /** @type {HTMLInputElement} */ (document.getElementById("file-input")).click());
    on("export-api-button", () => this.exportApi());
    on("fit-button", () => this.view.fitView());
    on("refresh-button", () => this.refreshDefs());
    on("workflows-button", (e) => {
      const r = /** @type {HTMLElement} */ (e.currentTarget).getBoundingClientRect();
      this.workflowsMenu([r.left, r.bottom]);
    });
    on("clear-button", () => { this.graph.clear(); this.view.runtime.clear(); this.graph.changed(); this.commit(); });
    on("panel-button", () => document.body.classList.toggle("panel-open"));
    on("keys-button", () => toggleShortcuts());
    document.getElementById("upload-input")?.addEventListener("change", (e) => {
      const input = /** @type {HTMLInputElement} */ (e.target);
      const file = input.files?.[0];
      if (file && this.uploadTarget) this.uploadTo(this.uploadTarget, file);
      input.value = "";
    });
    document.getElementById("file-input")?.addEventListener("change", (e) => {
      const input = /** @type {HTMLInputElement} */ (e.target);
      const file = input.files?.[0];
      if (file) this.openFile(file);
      input.value = "";
    });
  }

  bindKeys() {
    addEventListener("keydown", (e) => {
      const t = /** @type {HTMLElement} */ (e.target);
      if (t.closest?.("input, textarea, select")) return;
      const mod = e.ctrlKey || e.metaKey;
      const key = e.key.toLowerCase();
      const selected = /** @type {GraphNode[]} */ ([...this.view.selected].map((id) => this.graph.nodes.get(id)).filter((n) => !!n));
      const toggleMode = (/** @type {number} */ mode) => {
        const next = selected.every((n) => n.mode === mode) ? MODE_NORMAL : mode;
        for (const n of selected) n.mode = next;
        this.graph.changed();
        this.commit();
      };
      let handled = true;
      if (mod && key === "enter") this.queue();
      else if (mod && key === "z" && !e.shiftKey) { this.undo.undo(); this.afterUndo(); }
      else if (mod && (key === "y" || (key === "z" && e.shiftKey))) { this.undo.redo(); this.afterUndo(); }
      else if (mod && key === "c") this.copy();
      else if (mod && key === "v") this.paste();
      else if (mod && key === "a") { this.view.selected = new Set(this.graph.nodes.keys()); this.view.dirty(); }
      else if (mod && key === "s") this.saveToFile();
      else if (mod && key === "o") /** @type {HTMLInputElement} */ (document.getElementById("file-input")).click();
      else if (mod && key === "m") toggleMode(MODE_MUTED);
      else if (mod && key === "b") toggleMode(MODE_BYPASS);
      else if (mod && key === "g") this.groupSelected();
      else if (e.altKey && key === "c") this.toggleCollapse(selected);
      else if (key === "delete" || key === "backspace") this.deleteSelected();
      else if (key === ".") this.view.fitView(selected.length > 0);
      else if (key === "r" && !mod) this.refreshDefs();
      else handled = false;
      if (handled) e.preventDefault();
    });
  }

  afterUndo() {
    this.view.selected = new Set([...this.view.selected].filter((id) => this.graph.nodes.has(id)));
    for (const n of this.graph.nodes.values()) this.showInputImage(n);
    this.view.dirty();
    this.autosave();
  }

  bindDrop() {
    addEventListener("dragover", (e) => e.preventDefault());
    addEventListener("drop", async (e) => {
      e.preventDefault();
      const file = e.dataTransfer?.files?.[0];
      if (!file) return;
      // An image dropped onto a LoadImage node is uploaded to it instead of opened.
      const p = this.view.toGraph(e.clientX, e.clientY);
      const node = this.view.nodeAt(p);
      if (node && node.widgets.some((w) => w.kind === "upload") && file.type.startsWith("image/")) return this.uploadTo(node, file);
      await this.openFile(file);
    });
  }
}
