// Reading workflows out of dropped files (workflows.md §4.2).
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { readPngText, parseWorkflowFile } from "../../web/js/png.js";

const png = readFileSync(new URL("../fixtures/web/workflow.png", import.meta.url));
const enc = (s) => new TextEncoder().encode(s);

test("the workflow and prompt text chunks are read from a saved PNG", () => {
  const text = readPngText(new Uint8Array(png));
  assert.deepEqual(Object.keys(text).sort(), ["prompt", "workflow"]);
  assert.equal(JSON.parse(text.workflow).nodes.length, 7);
});

test("a PNG with a workflow chunk opens as an editor workflow", () => {
  const r = parseWorkflowFile(new Uint8Array(png), "x.png");
  assert.equal(r.kind, "workflow");
  assert.equal(r.data.last_node_id, 9);
});

test("JSON files open as workflows or API prompts and other data is refused with a message", () => {
  assert.equal(parseWorkflowFile(enc('{"nodes": [], "links": []}'), "a.json").kind, "workflow");
  assert.equal(parseWorkflowFile(enc('{"1": {"class_type": "X", "inputs": {}}}'), "b.json").kind, "prompt");
  assert.throws(() => parseWorkflowFile(enc("hello"), "c.txt"), /c.txt: not a workflow JSON or PNG file/);
  assert.throws(() => parseWorkflowFile(enc('{"a": 1}'), "d.json"), /neither an editor workflow nor an API prompt/);
});

test("non-PNG bytes give no text chunks", () => {
  assert.equal(readPngText(enc("GIF89a....")), null);
});
