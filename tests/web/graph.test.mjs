// Graph model: building nodes from /object_info, links, serialization, undo, copy/paste.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { Graph, UndoStack, MODE_BYPASS } from "../../web/js/graph.js";

const fixture = (name) => JSON.parse(readFileSync(new URL(`../fixtures/web/${name}`, import.meta.url), "utf8"));
const defs = fixture("object_info.json");

test("a new KSampler has sockets for links and widgets with the definition's defaults", () => {
  const g = new Graph(defs);
  const ks = g.addNode("KSampler");
  assert.deepEqual(ks.inputs.map((i) => i.name), ["model", "positive", "negative", "latent_image"]);
  assert.deepEqual(ks.widgets.map((w) => w.value), [0, "randomize", 20, 8, "euler", "simple", 1]);
  assert.equal(ks.displayTitle, "KSampler");
});

test("LoadImage stores its upload button value last", () => {
  const g = new Graph(defs);
  assert.deepEqual(g.addNode("LoadImage").widgets.map((w) => w.value), ["example.png", "image"]);
});

test("connecting matching types links output to input and records both ends", () => {
  const g = new Graph(defs);
  const ck = g.addNode("CheckpointLoaderSimple"), ks = g.addNode("KSampler");
  const r = g.connect(ck.id, 0, ks.id, 0);
  assert.ok(r.ok);
  assert.equal(ks.inputs[0].link, r.link.id);
  assert.deepEqual(ck.outputs[0].links, [r.link.id]);
  assert.equal(r.link.type, "MODEL");
});

test("an incompatible link is refused with a hint naming both types", () => {
  const g = new Graph(defs);
  const ck = g.addNode("CheckpointLoaderSimple"), ks = g.addNode("KSampler");
  const r = g.connect(ck.id, 1, ks.id, 0);
  assert.equal(r.ok, false);
  assert.match(r.reason, /CLIP output cannot connect to MODEL input "model"/);
  assert.equal(g.links.size, 0);
});

test("a second link into the same input replaces the first", () => {
  const g = new Graph(defs);
  const a = g.addNode("EmptyLatentImage"), b = g.addNode("EmptyLatentImage"), ks = g.addNode("KSampler");
  g.connect(a.id, 0, ks.id, 3);
  g.connect(b.id, 0, ks.id, 3);
  assert.equal(g.links.size, 1);
  assert.equal(a.outputs[0].links, null);
  assert.equal(g.links.get(ks.inputs[3].link).origin_id, b.id);
});

test("links that would close a cycle are refused", () => {
  const g = new Graph(defs);
  const a = g.addNode("ImageInvert"), b = g.addNode("ImageInvert");
  assert.ok(g.connect(a.id, 0, b.id, 0).ok);
  const r = g.connect(b.id, 0, a.id, 0);
  assert.equal(r.ok, false);
  assert.match(r.reason, /cycle/);
});

test("a reroute carries the type of its source and refuses other types downstream", () => {
  const g = new Graph(defs);
  const ck = g.addNode("CheckpointLoaderSimple"), rr = g.addNode("Reroute"), ks = g.addNode("KSampler");
  assert.ok(g.connect(ck.id, 2, rr.id, 0).ok);
  assert.equal(rr.outputs[0].type, "VAE");
  assert.equal(g.connect(rr.id, 0, ks.id, 0).ok, false);
  g.connect(ck.id, 0, rr.id, 0);
  assert.ok(g.connect(rr.id, 0, ks.id, 0).ok);
});

test("removing a node removes its links from the nodes on the other side", () => {
  const g = new Graph(defs);
  const ck = g.addNode("CheckpointLoaderSimple"), ks = g.addNode("KSampler");
  g.connect(ck.id, 0, ks.id, 0);
  g.removeNode(ck.id);
  assert.equal(ks.inputs[0].link, null);
  assert.equal(g.links.size, 0);
});

test("the default workflow survives configure then serialize unchanged", () => {
  const wf = fixture("default_workflow.json");
  const g = new Graph(defs);
  g.configure(wf);
  assert.deepEqual(g.serialize(), wf);
});

test("unknown node types and unknown keys are kept verbatim when re-saved", () => {
  const wf = fixture("default_workflow.json");
  wf.nodes.push({ id: 20, type: "SomePackNode", pos: [0, 0], size: [100, 50], flags: {}, order: 7, mode: 0, inputs: [],
    outputs: [], properties: { custom: 1 }, widgets_values: { a: 1 }, extra_key: "kept" });
  wf.extra.VHS_thing = { x: 1 };
  wf.models = [{ name: "m", url: "u", directory: "checkpoints" }];
  const g = new Graph(defs);
  g.configure(wf);
  assert.equal(g.nodes.get(20).missing, true);
  const out = g.serialize();
  const { order: _o, ...saved } = out.nodes.at(-1);
  const { order: _e, ...expected } = wf.nodes.at(-1);
  assert.deepEqual(saved, expected);
  assert.deepEqual(out.extra.VHS_thing, { x: 1 });
  assert.deepEqual(out.models, wf.models);
  assert.equal(out.last_node_id, 20);
});

test("version 1 workflows with link objects load as the same graph", () => {
  const wf = fixture("default_workflow.json");
  const v1 = { ...wf, version: 1, state: { lastNodeId: 9, lastLinkId: 9, lastGroupId: 0, lastRerouteId: 0 },
    links: wf.links.map(([id, o, os, t, ts, type]) => ({ id, origin_id: o, origin_slot: os, target_id: t, target_slot: ts, type })) };
  delete v1.last_node_id;
  delete v1.last_link_id;
  const g = new Graph(defs);
  g.configure(v1);
  const out = g.serialize();
  assert.deepEqual(out.links, wf.links);
  assert.equal(out.last_link_id, 9);
});

test("converting a widget to an input adds a socket and converting back removes it with its link", () => {
  const g = new Graph(defs);
  const ks = g.addNode("KSampler"), ks2 = g.addNode("KSampler");
  g.connect(g.addNode("EmptyLatentImage").id, 0, ks.id, 3);
  assert.ok(g.convertWidgetToInput(ks, "steps"));
  assert.deepEqual(ks.inputs.at(-1), { name: "steps", type: "INT", link: null, widget: { name: "steps" } });
  assert.equal(ks.widget("steps").converted, true);
  g.convertWidgetToInput(ks, "cfg");
  assert.ok(g.convertInputToWidget(ks, "steps"));
  assert.deepEqual(ks.inputs.map((i) => i.name), ["model", "positive", "negative", "latent_image", "cfg"]);
  assert.equal(ks.widget("steps").converted, false);
  assert.equal(ks2.inputs.length, 4);
});

test("a converted widget input stays converted after save and reload", () => {
  const g = new Graph(defs);
  const ks = g.addNode("KSampler");
  g.convertWidgetToInput(ks, "seed");
  const g2 = new Graph(defs);
  g2.configure(g.serialize());
  assert.equal(g2.nodes.get(ks.id).widget("seed").converted, true);
});

test("undo and redo step through committed changes only", () => {
  const g = new Graph(defs);
  const undo = new UndoStack(g);
  const n = g.addNode("KSampler");
  undo.commit();
  n.widget("steps").value = 33;
  undo.commit();
  assert.equal(undo.commit(), false, "nothing changed, nothing recorded");
  assert.ok(undo.undo());
  assert.equal(g.nodes.get(n.id).widget("steps").value, 20);
  assert.ok(undo.undo());
  assert.equal(g.nodes.size, 0);
  assert.equal(undo.undo(), false);
  undo.redo();
  undo.redo();
  assert.equal(g.nodes.get(n.id).widget("steps").value, 33);
});

test("a new change after undo discards the redo branch", () => {
  const g = new Graph(defs);
  const undo = new UndoStack(g);
  g.addNode("KSampler");
  undo.commit();
  undo.undo();
  g.addNode("VAEDecode");
  undo.commit();
  assert.equal(undo.redo(), false);
});

test("copy and paste duplicates nodes with their internal links but not external ones", () => {
  const g = new Graph(defs);
  const ck = g.addNode("CheckpointLoaderSimple"), a = g.addNode("ImageInvert", [100, 100]), b = g.addNode("ImageInvert", [400, 100]);
  const vd = g.addNode("VAEDecode");
  g.connect(ck.id, 2, vd.id, 1);
  g.connect(vd.id, 0, a.id, 0);
  g.connect(a.id, 0, b.id, 0);
  const ids = g.paste(g.copy([a.id, b.id]), [1000, 1000]);
  assert.equal(ids.length, 2);
  const [na, nb] = ids.map((id) => g.nodes.get(id));
  assert.deepEqual(na.pos, [1000, 1000]);
  assert.deepEqual(nb.pos, [1300, 1000]);
  assert.equal(na.inputs[0].link, null);
  assert.equal(g.links.get(nb.inputs[0].link).origin_id, na.id);
});

test("seed control after generate increments, decrements, randomizes within range or stays fixed", () => {
  const g = new Graph(defs);
  const ks = g.addNode("KSampler");
  const seed = ks.widget("seed"), control = ks.widget("seed:control");
  seed.value = 5;
  control.value = "increment"; g.applyControlAfterGenerate(); assert.equal(seed.value, 6);
  control.value = "decrement"; g.applyControlAfterGenerate(); assert.equal(seed.value, 5);
  control.value = "fixed"; g.applyControlAfterGenerate(); assert.equal(seed.value, 5);
  control.value = "randomize"; g.applyControlAfterGenerate(() => 0.5);
  assert.ok(Number.isSafeInteger(seed.value) && seed.value > 5);
  seed.value = 0; control.value = "decrement"; g.applyControlAfterGenerate(); assert.equal(seed.value, 0);
});

test("groups contain the nodes inside their bounds and are saved", () => {
  const g = new Graph(defs);
  const inside = g.addNode("VAEDecode", [50, 60]);
  g.addNode("VAEDecode", [900, 900]);
  const grp = g.addGroup([0, 0, 400, 300], "Decode");
  assert.deepEqual(g.nodesInGroup(grp).map((n) => n.id), [inside.id]);
  assert.equal(g.serialize().groups[0].title, "Decode");
});

test("bypass and mute modes and renamed titles are saved", () => {
  const g = new Graph(defs);
  const n = g.addNode("VAEDecode");
  n.mode = MODE_BYPASS;
  n.title = "Decode it";
  const s = g.serialize().nodes[0];
  assert.equal(s.mode, 4);
  assert.equal(s.title, "Decode it");
});

test("refreshed definitions update combo choices but keep chosen values", () => {
  const g = new Graph(defs);
  const ck = g.addNode("CheckpointLoaderSimple");
  ck.widget("ckpt_name").value = "gone.safetensors";
  const fresh = structuredClone(defs);
  fresh.CheckpointLoaderSimple.input.required.ckpt_name[0] = ["new.safetensors"];
  g.updateDefs(fresh);
  assert.deepEqual(ck.widget("ckpt_name").values, ["new.safetensors"]);
  assert.equal(ck.widget("ckpt_name").value, "gone.safetensors");
});

test("a primitive node's edited value is saved in front of its control value", () => {
  const wf = { last_node_id: 1, last_link_id: 0, links: [], groups: [], config: {}, extra: {}, version: 0.4,
    nodes: [{ id: 1, type: "PrimitiveNode", pos: [0, 0], size: [200, 80], flags: {}, order: 0, mode: 0, inputs: [],
      outputs: [{ name: "INT", type: "INT", links: null, widget: { name: "steps" } }], properties: {}, widgets_values: [7, "fixed"] }] };
  const g = new Graph(defs);
  g.configure(wf);
  g.nodes.get(1).widgets[0].value = 9;
  assert.deepEqual(g.serialize().nodes[0].widgets_values, [9, "fixed"]);
});

test("a subgraph instance shows its definition's name and keeps the definitions on save", () => {
  const wf = fixture("default_workflow.json");
  wf.definitions = { subgraphs: [{ id: "abc", name: "Decoder", inputs: [{ name: "samples", type: "LATENT" }],
    outputs: [{ name: "image", type: "IMAGE" }], nodes: [], links: [] }] };
  wf.nodes.push({ id: 10, type: "abc", pos: [0, 0], size: [200, 60], flags: {}, order: 7, mode: 0,
    inputs: [{ name: "samples", type: "LATENT", link: null }], outputs: [{ name: "image", type: "IMAGE", links: null }],
    properties: { proxyWidgets: [] }, widgets_values: [] });
  const g = new Graph(defs);
  g.configure(wf);
  const inst = g.nodes.get(10);
  assert.equal(inst.subgraph, true);
  assert.equal(inst.displayTitle, "Decoder");
  const out = g.serialize();
  assert.deepEqual(out.definitions, wf.definitions);
  const { order: _a, ...saved } = out.nodes.at(-1);
  const { order: _b, ...orig } = wf.nodes.at(-1);
  assert.deepEqual(saved, orig);
});
