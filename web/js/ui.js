// @ts-check
/** Small DOM widgets of the app shell: context menus, the node search box, toasts and a name dialog. */

/** @typedef {import("./canvas.js").MenuItem} MenuItem */

/** @type {HTMLElement[]} open menu panels, outermost first */
let openMenus = [];

export function closeMenus() {
  for (const m of openMenus) m.remove();
  openMenus = [];
}

/**
 * Show a context menu at client position `at`; items with `submenu` open to the side on hover.
 * @param {MenuItem[]} items @param {number[]} at @param {number} [depth]
 */
export function showMenu(items, at, depth = 0) {
  for (const m of openMenus.splice(depth)) m.remove();
  const el = document.createElement("div");
  el.className = "menu";
  el.setAttribute("role", "menu");
  for (const item of items) {
    if (!item) {
      el.appendChild(Object.assign(document.createElement("div"), { className: "menu-sep" }));
      continue;
    }
    const row = document.createElement("div");
    row.className = "menu-item" + (item.submenu ? " has-sub" : "") + (item.disabled ? " disabled" : "");
    row.textContent = item.label;
    row.setAttribute("role", "menuitem");
    row.setAttribute("aria-label", item.label);
    if (item.submenu) row.setAttribute("aria-haspopup", "menu");
    row.addEventListener("pointerenter", () => {
      if (item.submenu && !item.disabled) {
        const r = row.getBoundingClientRect();
        showMenu(item.submenu, [r.right - 2, r.top], depth + 1);
      } else for (const m of openMenus.splice(depth + 1)) m.remove();
    });
    row.addEventListener("click", (e) => {
      e.stopPropagation();
      if (item.disabled || item.submenu) return;
      closeMenus();
      item.action?.();
    });
    el.appendChild(row);
  }
  if (items.length > 12) addMenuFilter(el);
  document.body.appendChild(el);
  el.querySelector("input")?.focus();
  const r = el.getBoundingClientRect();
  el.style.left = `${Math.max(0, Math.min(at[0], innerWidth - r.width - 4))}px`;
  el.style.top = `${Math.max(0, Math.min(at[1], innerHeight - r.height - 4))}px`;
  openMenus.push(el);
}

/**
 * A type-to-filter field on top of long menus (e.g. 44 sampler names); Enter picks the first match.
 * @param {HTMLElement} menu
 */
function addMenuFilter(menu) {
  const input = Object.assign(document.createElement("input"), { className: "menu-filter", placeholder: "Filter" });
  input.setAttribute("aria-label", "Filter");
  const rows = () => /** @type {HTMLElement[]} */ ([...menu.querySelectorAll(".menu-item")]);
  input.addEventListener("input", () => {
    const q = input.value.toLowerCase();
    for (const row of rows()) row.hidden = !(row.textContent ?? "").toLowerCase().includes(q);
    for (const sep of menu.querySelectorAll(".menu-sep")) /** @type {HTMLElement} */ (sep).hidden = q !== "";
  });
  input.addEventListener("keydown", (e) => {
    e.stopPropagation();
    if (e.key === "Escape") closeMenus();
    if (e.key === "Enter") rows().find((r) => !r.hidden)?.click();
  });
  menu.prepend(input);
}

addEventListener("pointerdown", (e) => {
  if (!openMenus.some((m) => m.contains(/** @type {Node} */ (e.target)))) closeMenus();
}, true);
addEventListener("keydown", (e) => { if (e.key === "Escape") closeMenus(); });

/**
 * The node search box: type to filter, arrows to move, Enter or click to pick.
 * @param {number[]} at client position
 * @param {(query: string) => {name: string, label: string, detail: string}[]} search
 * @param {(name: string) => void} pick
 * @param {string} [filterLabel] shown when the list is filtered by a slot type
 */
export function showSearch(at, search, pick, filterLabel) {
  closeSearch();
  const box = document.createElement("div");
  box.className = "search";
  box.id = "node-search";
  const input = document.createElement("input");
  input.placeholder = filterLabel ? `Search nodes (${filterLabel})` : "Search nodes";
  input.setAttribute("aria-label", "Search nodes");
  const list = document.createElement("div");
  list.className = "search-results";
  box.append(input, list);
  document.body.appendChild(box);
  box.style.left = `${Math.max(0, Math.min(at[0], innerWidth - 360))}px`;
  box.style.top = `${Math.max(0, Math.min(at[1], innerHeight - 340))}px`;
  let results = /** @type {{name: string, label: string, detail: string}[]} */ ([]);
  let active = 0;
  const render = () => {
    results = search(input.value).slice(0, 30);
    active = Math.min(active, Math.max(0, results.length - 1));
    list.replaceChildren(...results.map((r, i) => {
      const row = document.createElement("div");
      row.className = "search-item" + (i === active ? " active" : "");
      row.dataset.type = r.name;
      row.append(Object.assign(document.createElement("span"), { textContent: r.label }),
        Object.assign(document.createElement("span"), { className: "search-detail", textContent: r.detail }));
      row.addEventListener("pointerdown", (e) => { e.preventDefault(); choose(i); });
      return row;
    }));
  };
  const choose = (/** @type {number} */ i) => {
    const r = results[i];
    closeSearch();
    if (r) pick(r.name);
  };
  input.addEventListener("input", () => { active = 0; render(); });
  input.addEventListener("keydown", (e) => {
    e.stopPropagation();
    if (e.key === "ArrowDown") { active = Math.min(results.length - 1, active + 1); render(); e.preventDefault(); }
    else if (e.key === "ArrowUp") { active = Math.max(0, active - 1); render(); e.preventDefault(); }
    else if (e.key === "Enter") choose(active);
    else if (e.key === "Escape") closeSearch();
  });
  // Clicking elsewhere closes this box (not a newer one opened meanwhile).
  input.addEventListener("blur", () => setTimeout(() => box.remove(), 150));
  render();
  input.focus();
}

export function closeSearch() {
  document.getElementById("node-search")?.remove();
}

/**
 * A passing message at the bottom of the screen (hints, errors) — never a blocking alert.
 * @param {string} text @param {"info"|"error"} [kind]
 */
export function toast(text, kind = "info") {
  let host = document.getElementById("toasts");
  if (!host) {
    host = Object.assign(document.createElement("div"), { id: "toasts" });
    document.body.appendChild(host);
  }
  const el = document.createElement("div");
  el.className = `toast ${kind}`;
  el.setAttribute("role", kind === "error" ? "alert" : "status");
  el.textContent = text;
  host.appendChild(el);
  setTimeout(() => el.remove(), kind === "error" ? 6000 : 3000);
}

/**
 * Ask for a name in a small in-page dialog.
 * @param {string} title @param {string} value
 * @returns {Promise<string|null>}
 */
export function askName(title, value) {
  return new Promise((resolve) => {
    const back = Object.assign(document.createElement("div"), { className: "dialog-back" });
    const dlg = Object.assign(document.createElement("form"), { className: "dialog" });
    const label = Object.assign(document.createElement("label"), { textContent: title });
    const input = Object.assign(document.createElement("input"), { value, name: "name" });
    const ok = Object.assign(document.createElement("button"), { type: "submit", textContent: "OK" });
    const cancel = Object.assign(document.createElement("button"), { type: "button", textContent: "Cancel" });
    label.appendChild(input);
    dlg.append(label, ok, cancel);
    back.appendChild(dlg);
    document.body.appendChild(back);
    const done = (/** @type {string|null} */ v) => { back.remove(); resolve(v); };
    dlg.addEventListener("submit", (e) => { e.preventDefault(); done(input.value.trim() || null); });
    cancel.addEventListener("click", () => done(null));
    input.addEventListener("keydown", (e) => { e.stopPropagation(); if (e.key === "Escape") done(null); });
    input.focus();
    input.select();
  });
}
