"""Kiln command line: serve (default) · run WORKFLOW · validate WORKFLOW · nodes [--json]."""
from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
import threading

from engine.config import RuntimeConfig, add_arguments, config_from_args
from engine.errors import WorkflowError

COMMANDS = ("serve", "run", "validate", "nodes")
MAX_PNG_TEXT = 16 * 1024 * 1024
log = logging.getLogger("kiln")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="main.py", description="Kiln: a ComfyUI-compatible node-graph engine.")
    sub = parser.add_subparsers(dest="command")
    add_arguments(sub.add_parser("serve", help="start the server and editor (default)"))
    run = sub.add_parser("run", help="execute a workflow headless (API or editor JSON, or a PNG)")
    run.add_argument("workflow")
    run.add_argument("--set", action="append", default=[], metavar="NODE_ID.INPUT=VALUE",
                     help="override an input (VALUE is JSON, or a plain string)")
    run.add_argument("--seed", type=int, default=None, help="seed for dynamic prompts ({a|b} choices)")
    add_arguments(run)
    val = sub.add_parser("validate", help="check a workflow and print every error")
    val.add_argument("workflow")
    add_arguments(val)
    nodes = sub.add_parser("nodes", help="list node types")
    nodes.add_argument("--json", action="store_true", help="print the /object_info JSON")
    add_arguments(nodes)
    return parser


def parse_args(argv: list[str]) -> argparse.Namespace:
    """`serve` is implied when the first argument is not a command (`python main.py --port 8189`)."""
    if not argv or argv[0] not in COMMANDS + ("-h", "--help"):
        argv = ["serve", *argv]
    return build_parser().parse_args(argv)


def _registry(config: RuntimeConfig, *, custom_nodes: bool = True):
    from engine.paths import Paths
    from engine.registry import build_registry

    paths = Paths.from_config(config)
    registry = build_registry(paths, custom_nodes=custom_nodes,
                              disable_all_custom_nodes=config.disable_all_custom_nodes,
                              whitelist=config.whitelist_custom_nodes)
    registry.config = config
    for pack in registry.failed_packs():
        print(f"custom node pack {pack.name}: IMPORT FAILED (see the log)", file=sys.stderr)
    return registry


# -- loading workflows -------------------------------------------------------------------------------
def read_workflow_file(path: str) -> tuple[dict, bool]:
    """(data, is_png_prompt): JSON from a file, or a PNG's `prompt` (preferred) / `workflow` text chunk."""
    if path.lower().endswith(".png"):
        from PIL import Image

        with Image.open(path) as img:
            img.load()
            text = dict(getattr(img, "text", {}) or {})
        for key in ("prompt", "workflow"):
            if key in text:
                if len(text[key]) > MAX_PNG_TEXT:
                    raise WorkflowError(f"{path}: the {key!r} text chunk is larger than 16 MiB")
                return json.loads(text[key]), key == "prompt"
        raise WorkflowError(f"{path}: no 'prompt' or 'workflow' metadata in this PNG")
    with open(path, encoding="utf-8") as f:
        return json.load(f), False


def load_api_prompt(path: str, registry, seed: int | None = None) -> tuple[dict, dict | None]:
    """(API prompt, editor workflow or None) of a file; editor workflows are converted with dynamic
    prompts and filename patterns, and returned too so saved images embed them like the editor's."""
    from engine.workflow import apply_editor_rewrites, editor_to_api, is_editor_workflow

    data, _ = read_workflow_file(path)
    if not is_editor_workflow(data):
        if not isinstance(data, dict):
            raise WorkflowError(f"{path}: not a workflow (expected a JSON object)")
        return data, None
    info = registry.object_info()
    prompt = editor_to_api(data, info, warn=lambda text: print(f"warning: {text}", file=sys.stderr))
    if seed is None:
        seed = random.SystemRandom().randrange(2 ** 32)
        print(f"dynamic prompt seed: {seed} (repeat with --seed {seed})", file=sys.stderr)
    apply_editor_rewrites(prompt, data, info, random.Random(seed))
    return prompt, data


def apply_sets(prompt: dict, sets: list[str]) -> None:
    """`--set NODE_ID.INPUT=VALUE` overrides (VALUE parsed as JSON when it is JSON)."""
    for item in sets:
        target, sep, raw = item.partition("=")
        node_id, dot, name = target.partition(".")
        if not sep or not dot or not node_id or not name:
            raise WorkflowError(f"--set {item!r}: expected NODE_ID.INPUT=VALUE")
        if node_id not in prompt:
            raise WorkflowError(f"--set {item!r}: the workflow has no node {node_id!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        prompt[node_id].setdefault("inputs", {})[name] = value


def format_errors(result) -> list[str]:
    """Human-readable lines for a failed ValidationResult."""
    lines = []
    if result.error and (not result.ok):
        e = result.error
        lines.append(f"error: {e['message']}" + (f": {e['details']}" if e.get("details") else ""))
    for nid, entry in result.node_errors.items():
        for err in entry["errors"]:
            lines.append(f"node {nid} ({entry['class_type']}): {err['type']}: {err['message']}"
                         + (f": {err['details']}" if err.get("details") else ""))
    return lines


# -- commands ----------------------------------------------------------------------------------------
def cmd_nodes(ns, config: RuntimeConfig) -> int:
    registry = _registry(config)
    if ns.json:
        print(json.dumps(registry.object_info(), indent=1))
        return 0
    for name, spec in registry.specs.items():
        print(f"{name:40s} {spec.category:30s} {spec.display_name or name}")
    return 0


def cmd_validate(ns, config: RuntimeConfig) -> int:
    from engine.validate import validate_prompt

    registry = _registry(config)
    try:
        prompt, _ = load_api_prompt(ns.workflow, registry, seed=0)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    result = validate_prompt(registry, prompt)
    lines = format_errors(result)
    for line in lines:
        print(line)
    if lines:
        return 1
    print(f"ok: {len(prompt)} nodes, outputs {', '.join(result.outputs)}")
    return 0


class TextProgress:
    """Prints node starts and a progress bar to stderr while a headless run executes."""

    def __init__(self, prompt: dict, stream=None):
        self.prompt = prompt
        self._stream = stream
        self.open_bar = False

    def __call__(self, event: str, data: dict) -> None:
        if event == "executing" and data.get("node") is not None:
            self._end_bar()
            nid = data["node"]
            node = self.prompt.get(nid) or {}
            print(f"> {nid} {node.get('class_type', '')}", file=self.stream, flush=True)
        elif event == "progress":
            value, total = data["value"], data["max"] or 1
            filled = int(30 * min(value / total, 1))
            print(f"\r  [{'#' * filled}{'.' * (30 - filled)}] {value}/{total}", end="", file=self.stream, flush=True)
            self.open_bar = True
        elif event == "execution_cached" and data["nodes"]:
            print(f"cached: {len(data['nodes'])} nodes", file=self.stream)
        elif event in ("execution_success", "execution_error", "execution_interrupted"):
            self._end_bar()

    @property
    def stream(self):
        return self._stream or sys.stderr

    def _end_bar(self) -> None:
        if self.open_bar:
            print(file=self.stream)
            self.open_bar = False


def cmd_run(ns, config: RuntimeConfig) -> int:
    from engine.cache import make_cache
    from engine.executor import Executor
    from engine.paths import ensure_dirs
    from engine.validate import validate_prompt

    registry = _registry(config)
    try:
        prompt, workflow = load_api_prompt(ns.workflow, registry, seed=ns.seed)
        apply_sets(prompt, ns.set)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    result = validate_prompt(registry, prompt)
    if not result.ok or result.node_errors:
        for line in format_errors(result):
            print(line, file=sys.stderr)
        return 1
    ensure_dirs(registry.paths)
    executor = Executor(registry, cache=make_cache(config.cache_policy), paths=registry.paths, config=config)
    interrupt = threading.Event()
    try:
        extra_data = {"extra_pnginfo": {"workflow": workflow}} if workflow is not None else {}
        run = executor.run("cli", prompt, extra_data=extra_data, outputs=result.outputs, emit=TextProgress(prompt),
                           interrupt=interrupt)
    except KeyboardInterrupt:
        return 130
    for text in run.warnings:
        print(f"warning: {text}", file=sys.stderr)
    if run.status != "success":
        err = run.error or {}
        if run.status == "interrupted":
            print("interrupted", file=sys.stderr)
        else:
            print(f"error in node {err.get('node_id')} ({err.get('node_type')}): {err.get('exception_type')}: "
                  f"{err.get('exception_message', '').rstrip()}", file=sys.stderr)
        return 1
    for nid, ui in run.outputs.items():
        for image in ui.get("images", []) if isinstance(ui, dict) else []:
            if isinstance(image, dict) and "filename" in image:
                area = registry.paths.area_dir(image.get("type", "output"))
                print(os.path.join(area, image.get("subfolder", ""), image["filename"]))
        for text in ui.get("text", []) if isinstance(ui, dict) else []:
            print(f"{nid}: {text}")
    return 0


def cmd_serve(ns, config: RuntimeConfig) -> int:
    from engine.cache import make_cache
    from engine.executor import Executor
    from engine.paths import ensure_dirs

    registry = _registry(config)
    ensure_dirs(registry.paths)
    executor = Executor(registry, cache=make_cache(config.cache_policy), paths=registry.paths, config=config)
    hooks = _wire_diffusion(executor)
    from engine.server import run_server  # aiohttp only when serving

    clear_temp(registry.paths.temp_dir)
    try:
        run_server(config, registry, executor, system_hooks=hooks)
    finally:
        clear_temp(registry.paths.temp_dir)
    return 0


def clear_temp(temp_dir: str) -> None:
    """The temp folder (previews) is deleted at start-up and at exit (nodes.md §3.1)."""
    import shutil

    shutil.rmtree(temp_dir, ignore_errors=True)


def _wire_diffusion(executor):
    """Model unloading and device facts from diffusion/, imported only when serving."""
    import compat.state
    from diffusion import memory

    executor.unload_hooks.append(memory.free_all)
    compat.state.STATE.unload_all_models = memory.free_all
    try:
        import torch

        from engine.server import SystemHooks

        return SystemHooks(devices=lambda: memory.stats()["devices"], pytorch_version=torch.__version__)
    except ImportError:
        return None


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ns = parse_args(sys.argv[1:] if argv is None else argv)
    config = config_from_args(ns)
    handler = {"serve": cmd_serve, "run": cmd_run, "validate": cmd_validate, "nodes": cmd_nodes}[ns.command]
    return handler(ns, config)


if __name__ == "__main__":
    sys.exit(main())
