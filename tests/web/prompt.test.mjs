// Editor workflow → API prompt conversion (workflows.md §3) and API prompt → workflow import.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { workflowToPrompt, applyEditorRewrites, expandDynamicPrompt, expandFilenamePattern, promptToWorkflow } from "../../web/js/prompt.js";
import { Graph } from "../../web/js/graph.js";

const fixture = (name) => JSON.parse(readFileSync(new URL(`../fixtures/web/${name}`, import.meta.url), "utf8"));
const defs = fixture("object_info.json");

test("the default workflow converts to exactly the official editor's API prompt", () => {
  assert.deepEqual(workflowToPrompt(fixture("default_workflow.json"), defs), fixture("default_prompt.json"));
});

test("a muted node is left out and the inputs it fed are dropped", () => {
  const wf = fixture("default_workflow.json");
  wf.nodes.find((n) => n.id === 5).mode = 2;
  const p = workflowToPrompt(wf, defs);
  assert.equal(p["5"], undefined);
  assert.equal(p["3"].inputs.latent_image, undefined);
  assert.deepEqual(p["3"].inputs.model, ["4", 0]);
});

test("a bypassed node passes its matching input through to the nodes it fed", () => {
  const g = new Graph(defs);
  const ck = g.addNode("CheckpointLoaderSimple"), vd = g.addNode("VAEDecode"), inv = g.addNode("ImageInvert");
  const save = g.addNode("SaveImage"), el = g.addNode("EmptyLatentImage");
  g.connect(el.id, 0, vd.id, 0);
  g.connect(ck.id, 2, vd.id, 1);
  g.connect(vd.id, 0, inv.id, 0);
  g.connect(inv.id, 0, save.id, 0);
  inv.mode = 4;
  const p = workflowToPrompt(g.serialize(), defs);
  assert.equal(p[String(inv.id)], undefined);
  assert.deepEqual(p[String(save.id)].inputs.images, [String(vd.id), 0]);
});

test("links through reroutes resolve to the real source", () => {
  const g = new Graph(defs);
  const ck = g.addNode("CheckpointLoaderSimple"), r1 = g.addNode("Reroute"), r2 = g.addNode("Reroute"), vd = g.addNode("VAEDecode");
  g.connect(ck.id, 2, r1.id, 0);
  g.connect(r1.id, 0, r2.id, 0);
  g.connect(r2.id, 0, vd.id, 1);
  const p = workflowToPrompt(g.serialize(), defs);
  assert.deepEqual(Object.keys(p).sort(), [String(ck.id), String(vd.id)].sort());
  assert.deepEqual(p[String(vd.id)].inputs.vae, [String(ck.id), 2]);
});

test("a linked converted widget sends the link instead of the widget value", () => {
  const g = new Graph(defs);
  const ks = g.addNode("KSampler"), other = g.addNode("KSampler");
  g.convertWidgetToInput(ks, "steps");
  g.convertWidgetToInput(other, "seed");
  const p = workflowToPrompt(g.serialize(), defs);
  assert.equal(p[String(ks.id)].inputs.steps, 20, "unlinked converted widget keeps its value");
  assert.equal(p[String(ks.id)].inputs.seed, 0);
  assert.equal("seed:control" in p[String(ks.id)].inputs, false);
});

test("primitive nodes write their value into the widgets they feed", () => {
  const wf = fixture("default_workflow.json");
  const ks = wf.nodes.find((n) => n.id === 3);
  ks.inputs.push({ name: "steps", type: "INT", link: 10, widget: { name: "steps" } });
  wf.nodes.push({ id: 10, type: "PrimitiveNode", pos: [0, 0], size: [200, 80], flags: {}, order: 0, mode: 0, inputs: [],
    outputs: [{ name: "INT", type: "INT", links: [10], widget: { name: "steps" } }], properties: {}, widgets_values: [7, "fixed"] });
  wf.links.push([10, 10, 0, 3, 4, "INT"]);
  const p = workflowToPrompt(wf, defs);
  assert.equal(p["3"].inputs.steps, 7);
  assert.equal(p["10"], undefined);
});

test("fewer saved values than widgets fall back to the definition defaults", () => {
  const wf = fixture("default_workflow.json");
  wf.nodes.find((n) => n.id === 5).widgets_values = [768];
  assert.deepEqual(workflowToPrompt(wf, defs)["5"].inputs, { width: 768, height: 512, batch_size: 1 });
});

test("LoadImage sends its image name but not the upload button value", () => {
  const g = new Graph(defs);
  const li = g.addNode("LoadImage");
  li.widget("image").value = "cat.png";
  assert.deepEqual(workflowToPrompt(g.serialize(), defs)[String(li.id)].inputs, { image: "cat.png" });
});

test("dynamic prompts pick one option per block, keep escapes and drop comments", () => {
  assert.equal(expandDynamicPrompt("a {red|blue} car // draft", () => 0), "a red car ");
  assert.equal(expandDynamicPrompt("a {red|{green|blue}} car", () => 0.99), "a blue car");
  assert.equal(expandDynamicPrompt("x /* note */y \\{a\\|b\\} }"), "x y {a|b} }");
});

test("filename patterns expand dates and node widget values with unsafe characters replaced", () => {
  const wf = fixture("default_workflow.json");
  const p = workflowToPrompt(wf, defs);
  const now = new Date(2026, 10, 25, 14, 29, 32);
  assert.equal(expandFilenamePattern("%date:yyyy-MM-dd%/%date:hhmmss%", p, wf, now), "2026-11-25/142932");
  assert.equal(expandFilenamePattern("run_%KSampler.steps%_%width%", p, wf, now), "run_20_%width%");
  wf.nodes.find((n) => n.id === 9).widgets_values = ["%CheckpointLoaderSimple.ckpt_name%"];
  wf.nodes.find((n) => n.id === 4).widgets_values = ["sd/v1:x.safetensors"];
  const p2 = applyEditorRewrites(workflowToPrompt(wf, defs), wf, defs, { now });
  assert.equal(p2["9"].inputs.filename_prefix, "sd_v1_x.safetensors");
});

test("an API prompt imports as a linked workflow that converts back to the same prompt", () => {
  const prompt = fixture("default_prompt.json");
  const wf = promptToWorkflow(prompt, defs);
  assert.equal(wf.nodes.length, 7);
  assert.deepEqual(workflowToPrompt(wf, defs), prompt);
});

test("importing an API prompt with unknown node types reports them", () => {
  assert.throws(() => promptToWorkflow({ "1": { class_type: "Nope", inputs: {} } }, defs), /missing node types: Nope/);
});

/** The default workflow with VAEDecode moved into a subgraph instance (#10), optionally nested once more. */
function withSubgraph(nested = false) {
  const wf = fixture("default_workflow.json");
  const decode = { id: 1, type: "VAEDecode", pos: [0, 0], size: [200, 50], flags: {}, order: 0, mode: 0,
    inputs: [{ name: "samples", type: "LATENT", link: 1 }, { name: "vae", type: "VAE", link: 2 }],
    outputs: [{ name: "IMAGE", type: "IMAGE", links: [3] }], properties: {}, widgets_values: [] };
  const io = (name, type) => ({ id: name, name, type, linkIds: [] });
  const def = (id, nodes) => ({ id, version: 1, name: id, nodes, groups: [], config: {}, extra: {},
    inputs: [io("samples", "LATENT"), io("vae", "VAE")], outputs: [io("image", "IMAGE")],
    links: [{ id: 1, origin_id: -10, origin_slot: 0, target_id: 1, target_slot: 0, type: "LATENT" },
      { id: 2, origin_id: -10, origin_slot: 1, target_id: 1, target_slot: 1, type: "VAE" },
      { id: 3, origin_id: 1, origin_slot: 0, target_id: -20, target_slot: 0, type: "IMAGE" }] });
  const outer = nested ? def("outer", [{ ...decode, type: "inner" }]) : null;
  wf.definitions = { subgraphs: [def("inner", [decode]), ...(outer ? [outer] : [])] };
  const instance = wf.nodes.find((n) => n.id === 8);
  instance.type = nested ? "outer" : "inner";
  instance.id = 10;
  wf.links = wf.links.map((l) => (l[1] === 8 ? [l[0], 10, ...l.slice(2)] : l[3] === 8 ? [...l.slice(0, 3), 10, ...l.slice(4)] : l));
  return wf;
}

test("subgraph instances flatten into path ids wired through the instance's inputs and outputs", () => {
  const p = workflowToPrompt(withSubgraph(), defs);
  assert.equal(p["10"], undefined);
  assert.deepEqual(p["10:1"], { inputs: { samples: ["3", 0], vae: ["4", 2] }, class_type: "VAEDecode", _meta: { title: "VAE Decode" } });
  assert.deepEqual(p["9"].inputs.images, ["10:1", 0]);
});

test("nested subgraphs get one path segment per level", () => {
  const p = workflowToPrompt(withSubgraph(true), defs);
  assert.deepEqual(p["10:1:1"].inputs, { samples: ["3", 0], vae: ["4", 2] });
  assert.deepEqual(p["9"].inputs.images, ["10:1:1", 0]);
});

test("a muted subgraph instance mutes everything inside it", () => {
  const wf = withSubgraph();
  wf.nodes.find((n) => n.id === 10).mode = 2;
  const p = workflowToPrompt(wf, defs);
  assert.equal(p["10:1"], undefined);
  assert.equal(p["9"].inputs.images, undefined);
});
