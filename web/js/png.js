// @ts-check
/**
 * Reading an embedded workflow out of a dropped file (workflows.md §4.2): PNG `tEXt`/`iTXt`/`comf`
 * chunks, or JSON. No DOM; the app passes the file's bytes.
 */
import { isApiPrompt } from "./prompt.js";

const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47];

/**
 * Text chunks of a PNG as keyword → value; later chunks with the same keyword win.
 * Values are the raw bytes after the first NUL, decoded as UTF-8 without decompression,
 * exactly as the official editor reads them. Returns null for non-PNG data.
 * @param {Uint8Array} bytes
 * @returns {Record<string, string> | null}
 */
export function readPngText(bytes) {
  if (bytes.length < 8 || PNG_SIGNATURE.some((b, i) => bytes[i] !== b)) return null;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const decoder = new TextDecoder("utf-8");
  /** @type {Record<string, string>} */
  const out = {};
  let pos = 8;
  while (pos + 8 <= bytes.length) {
    const len = view.getUint32(pos);
    const type = String.fromCharCode(...bytes.subarray(pos + 4, pos + 8));
    const start = pos + 8, end = start + len;
    if (end > bytes.length) break;
    if (type === "tEXt" || type === "iTXt" || type === "comf") {
      const data = bytes.subarray(start, end);
      const nul = data.indexOf(0);
      if (nul > 0) out[decoder.decode(data.subarray(0, nul))] = decoder.decode(data.subarray(nul + 1));
    }
    if (type === "IEND") break;
    pos = end + 4;
  }
  return out;
}

/**
 * What a dropped file holds: an editor workflow or an API prompt.
 * @param {Uint8Array} bytes
 * @param {string} name file name (for error messages)
 * @returns {{kind: "workflow" | "prompt", data: any}}
 */
export function parseWorkflowFile(bytes, name) {
  const text = readPngText(bytes);
  if (text) {
    if (text.workflow) return { kind: "workflow", data: JSON.parse(text.workflow) };
    if (text.prompt) {
      const data = JSON.parse(text.prompt);
      if (isApiPrompt(data)) return { kind: "prompt", data };
    }
    throw new Error(`${name}: no workflow found in this PNG`);
  }
  let data;
  try {
    data = JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    throw new Error(`${name}: not a workflow JSON or PNG file`);
  }
  if (data && Array.isArray(data.nodes)) return { kind: "workflow", data };
  if (isApiPrompt(data)) return { kind: "prompt", data };
  throw new Error(`${name}: JSON is neither an editor workflow nor an API prompt`);
}

