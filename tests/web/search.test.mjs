// Node search ranking and type filters.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { searchNodes, byCategory, fuzzyScore } from "../../web/js/search.js";

const defs = JSON.parse(readFileSync(new URL("../fixtures/web/object_info.json", import.meta.url), "utf8"));

test("an exact prefix of the display name ranks first", () => {
  assert.equal(searchNodes(defs, "ksampler")[0], "KSampler");
  assert.equal(searchNodes(defs, "vae dec")[0], "VAEDecode");
});

test("scattered letters still find a node", () => {
  assert.ok(fuzzyScore("ltntimg", "Empty Latent Image") > 0);
  assert.equal(searchNodes(defs, "emlat")[0], "EmptyLatentImage");
  assert.equal(fuzzyScore("zzz", "KSampler"), -1);
});

test("the category finds its nodes", () => {
  const hits = searchNodes(defs, "loaders");
  assert.ok(hits.includes("CheckpointLoaderSimple") && hits.includes("LoraLoader"));
});

test("filtering by an output type lists only nodes that accept it", () => {
  const hits = searchNodes(defs, "", { inputType: "IMAGE" });
  assert.deepEqual(hits.sort(), ["ImageInvert", "PreviewImage", "SaveImage", "VAEEncode"]);
});

test("filtering by an input type lists only nodes that produce it", () => {
  assert.deepEqual(searchNodes(defs, "", { outputType: "VAE" }), ["CheckpointLoaderSimple"]);
});

test("nodes are grouped by category for the add-node menu", () => {
  const cats = byCategory(defs);
  assert.deepEqual(cats.get("loaders"), ["CheckpointLoaderSimple", "LoraLoader"]);
  assert.ok([...cats.keys()].includes("sampling"));
});
