// @ts-check
/**
 * The server connection: JSON routes of api.md under `/api`, and the `/ws` event socket with
 * binary previews. Reconnects by itself (with the same client id) when the server restarts.
 */

/**
 * @typedef {{type: string, data: any}} ServerMessage
 * @typedef {(msg: ServerMessage) => void} Listener
 */

export class Api {
  /** @param {string} [base] URL prefix of the server ("" = same origin) */
  constructor(base = "") {
    this.base = base;
    /** @type {string} */
    this.clientId = sessionStorage.getItem("kiln.clientId") ?? "";
    /** @type {Set<Listener>} */
    this.listeners = new Set();
    /** @type {WebSocket|null} */
    this.socket = null;
    this.connected = false;
    /** whether the socket has been open at least once (to tell a reconnect from the first connect) */
    this.everConnected = false;
    this.retryMs = 500;
  }

  /** @param {string} path */
  url(path) {
    return `${this.base}/api${path}`;
  }

  /**
   * Fetch a JSON route; non-2xx replies throw an error carrying the parsed body.
   * @param {string} path @param {RequestInit} [init]
   */
  async json(path, init) {
    const res = await fetch(this.url(path), init);
    const text = await res.text();
    let body = null;
    try {
      body = text ? JSON.parse(text) : null;
    } catch {
      body = text;
    }
    if (!res.ok) throw Object.assign(new Error(`${path}: HTTP ${res.status}`), { status: res.status, body });
    return body;
  }

  /** @param {string} path @param {any} body */
  post(path, body) {
    return this.json(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  }

  objectInfo() {
    return this.json("/object_info");
  }

  /**
   * Queue a prompt; a validation failure throws with `body = {error, node_errors}`.
   * @param {Record<string, any>} prompt @param {Record<string, any>} workflow
   * @param {{previewMethod?: string}} [opts] `previewMethod` asks for live previews (api.md §1.1)
   */
  queuePrompt(prompt, workflow, opts = {}) {
    /** @type {Record<string, any>} */
    const extra = { extra_pnginfo: { workflow } };
    if (opts.previewMethod) extra.preview_method = opts.previewMethod;
    return this.post("/prompt", { client_id: this.clientId, prompt, extra_data: extra });
  }

  /** The user's stored settings ({} when none or unreachable). */
  async settings() {
    try {
      return (await this.json("/settings")) ?? {};
    } catch {
      return {};
    }
  }

  /** @param {string} id @param {any} value */
  saveSetting(id, value) {
    return this.post(`/settings/${encodeURIComponent(id)}`, value);
  }

  queue() {
    return this.json("/queue");
  }

  history(maxItems = 64) {
    return this.json(`/history?max_items=${maxItems}`);
  }

  /** @param {string[]} ids */
  deleteQueued(ids) {
    return this.post("/queue", { delete: ids });
  }

  /** @param {string[]} ids */
  deleteHistory(ids) {
    return this.post("/history", { delete: ids });
  }

  interrupt() {
    return this.post("/interrupt", {});
  }

  /** @param {{filename: string, subfolder?: string, type?: string}} f */
  viewUrl(f) {
    const q = new URLSearchParams({ filename: f.filename, subfolder: f.subfolder ?? "", type: f.type ?? "output" });
    return this.url(`/view?${q}`);
  }

  /** @param {File} file @returns {Promise<{name: string, subfolder: string, type: string}>} */
  async uploadImage(file) {
    const form = new FormData();
    form.append("image", file, file.name);
    form.append("type", "input");
    const res = await fetch(this.url("/upload/image"), { method: "POST", body: form });
    if (!res.ok) throw new Error(`upload failed: HTTP ${res.status}`);
    return res.json();
  }

  /**
   * Saved workflows of the user (`workflows/*.json` in the user directory); [] before the first
   * save, when the server answers 404 for the missing folder (api.md §10.5).
   * @returns {Promise<string[]>}
   */
  async userWorkflows() {
    try {
      const files = await this.json("/userdata?dir=workflows&recurse=true&split=false&full_info=false");
      return (files ?? []).filter((/** @type {any} */ f) => typeof f === "string" && f.endsWith(".json"));
    } catch (e) {
      if (/** @type {any} */ (e).status === 404) return [];
      throw e;
    }
  }

  /** @param {string} path relative to the user directory */
  async getUserFile(path) {
    return this.json(`/userdata/${encodeURIComponent(path)}`);
  }

  /** @param {string} path @param {string} text */
  async putUserFile(path, text) {
    const res = await fetch(this.url(`/userdata/${encodeURIComponent(path)}?overwrite=true`), { method: "POST", body: text,
      headers: { "Content-Type": "application/json" } });
    if (!res.ok) throw new Error(`saving ${path} failed: HTTP ${res.status}`);
  }

  /** Names of shipped workflows from `/templates/index.json` (flat or official shape). */
  async templates() {
    const res = await fetch(`${this.base}/templates/index.json`);
    if (!res.ok) return [];
    const data = await res.json().catch(() => []);
    if (!Array.isArray(data)) return [];
    return data.flatMap((e) => typeof e === "string" ? [e] : (e?.templates ?? []).map((/** @type {any} */ t) => t.name)).filter(Boolean);
  }

  /** @param {string} name */
  async template(name) {
    const res = await fetch(`${this.base}/templates/${encodeURIComponent(name)}.json`);
    if (!res.ok) return null;
    return res.json();
  }

  /** @returns {Promise<string[]>} */
  async extensions() {
    try {
      return await this.json("/extensions");
    } catch {
      return [];
    }
  }

  /** @param {Listener} fn */
  on(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  /** @param {string} type @param {any} data */
  emit(type, data) {
    for (const fn of this.listeners) fn({ type, data });
  }

  /** Open the event socket; on close, retry with backoff and announce `reconnected`. */
  connect() {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const host = this.base ? new URL(this.base).host : location.host;
    const q = this.clientId ? `?clientId=${encodeURIComponent(this.clientId)}` : "";
    const ws = new WebSocket(`${proto}//${host}/api/ws${q}`);
    ws.binaryType = "arraybuffer";
    this.socket = ws;
    let opened = false;
    ws.addEventListener("open", () => {
      opened = true;
      ws.send(JSON.stringify({ type: "feature_flags", data: { supports_preview_metadata: true } }));
      const wasDown = this.everConnected && !this.connected;
      this.connected = true;
      this.everConnected = true;
      this.retryMs = 500;
      this.emit("connection", { connected: true, reconnected: wasDown });
    });
    ws.addEventListener("message", (ev) => {
      if (typeof ev.data === "string") {
        let msg;
        try {
          msg = JSON.parse(ev.data);
        } catch {
          return;
        }
        if (msg.type === "status" && msg.data?.sid) {
          this.clientId = msg.data.sid;
          sessionStorage.setItem("kiln.clientId", this.clientId);
        }
        this.emit(msg.type, msg.data);
      } else {
        const preview = decodeBinary(ev.data);
        if (preview) this.emit("b_preview", preview);
      }
    });
    ws.addEventListener("close", () => {
      if (this.socket !== ws) return;
      if (this.connected || !opened) {
        this.connected = false;
        this.emit("connection", { connected: false });
      }
      setTimeout(() => this.connect(), this.retryMs);
      this.retryMs = Math.min(5000, this.retryMs * 2);
    });
  }
}

/**
 * Decode a binary frame (api.md §11.6): event 1 (preview) or 4 (preview with metadata).
 * @param {ArrayBuffer} buf
 * @returns {{blob: Blob, nodeId: string|null} | null}
 */
export function decodeBinary(buf) {
  const view = new DataView(buf);
  if (buf.byteLength < 8) return null;
  const event = view.getUint32(0);
  if (event === 1) {
    const mime = view.getUint32(4) === 2 ? "image/png" : "image/jpeg";
    return { blob: new Blob([buf.slice(8)], { type: mime }), nodeId: null };
  }
  if (event === 4) {
    const len = view.getUint32(4);
    const meta = JSON.parse(new TextDecoder().decode(new Uint8Array(buf, 8, len)));
    return { blob: new Blob([buf.slice(8 + len)], { type: meta.image_type ?? "image/jpeg" }), nodeId: meta.display_node_id ?? meta.node_id ?? null };
  }
  return null;
}
