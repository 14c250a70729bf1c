"""Graph pieces: links, ExecutionBlocker, the live prompt (DynamicPrompt), GraphBuilder, cycle search."""
from __future__ import annotations

import itertools
from typing import Any, Iterable


def is_link(value: Any) -> bool:
    """True for an API-format link `["node id", slot]`."""
    t = type(value)
    return ((t is list or t is tuple) and len(value) == 2 and isinstance(value[0], str)
            and type(value[1]) is int)


class ExecutionBlocker:
    """Returned instead of a value: downstream calls that would receive it are skipped (§6)."""

    def __init__(self, message: str | None):
        self.message = message

    def __repr__(self) -> str:
        return f"ExecutionBlocker({self.message!r})"


class DynamicPrompt:
    """The prompt being run plus nodes created by expansion (what `DYNPROMPT` hidden inputs get)."""

    def __init__(self, prompt: dict):
        self.original = prompt
        self.ephemeral: dict[str, dict] = {}
        self.parents: dict[str, str] = {}
        self.display: dict[str, str] = {}

    def get_node(self, node_id: str) -> dict:
        node = self.ephemeral.get(node_id) or self.original.get(node_id)
        if node is None:
            raise KeyError(node_id)
        return node

    def has_node(self, node_id: str) -> bool:
        return node_id in self.original or node_id in self.ephemeral

    def get_original_prompt(self) -> dict:
        return self.original

    def all_node_ids(self) -> set[str]:
        return set(self.original) | set(self.ephemeral)

    def add_ephemeral(self, node_id: str, node: dict, parent_id: str, display_id: str) -> None:
        self.ephemeral[node_id] = node
        self.parents[node_id] = parent_id
        self.display[node_id] = display_id

    def display_id(self, node_id: str) -> str:
        return self.display.get(node_id, node_id)

    def parent_id(self, node_id: str) -> str | None:
        return self.parents.get(node_id)

    def real_id(self, node_id: str) -> str:
        """The original prompt node at the root of an expansion chain."""
        while node_id in self.parents:
            node_id = self.parents[node_id]
        return node_id


class GraphBuilder:
    """Builds an API-format sub-graph for node expansion (ComfyUI's `graph_utils.GraphBuilder`)."""

    _counter = itertools.count()

    def __init__(self, prefix: str | None = None):
        if prefix is None:
            from engine.context import current

            ctx = current()
            prefix = f"{ctx.node_id}.{ctx.call_index}.{ctx.next_graph_index()}." if ctx is not None \
                else f"_{next(GraphBuilder._counter)}."
        self.prefix = prefix
        self.nodes: dict[str, _BuilderNode] = {}
        self._id_counter = itertools.count(1)

    def node(self, class_type: str, id: str | None = None, **inputs) -> "_BuilderNode":
        if id is None:
            id = str(next(self._id_counter))
        full = self.prefix + id
        if full in self.nodes:
            return self.nodes[full]
        n = _BuilderNode(full, class_type, inputs)
        self.nodes[full] = n
        return n

    def lookup_node(self, id: str) -> "_BuilderNode | None":
        return self.nodes.get(self.prefix + id) or self.nodes.get(id)

    def remove_node(self, id: str) -> None:
        self.nodes.pop(self.prefix + id, None) or self.nodes.pop(id, None)

    def replace_node_output(self, id: str, index: int, new_value: Any) -> None:
        target = self.lookup_node(id)
        if target is None:
            return
        for n in self.nodes.values():
            for k, v in list(n.inputs.items()):
                if is_link(v) and v[0] == target.id and v[1] == index:
                    n.set_input(k, new_value)

    def finalize(self) -> dict:
        return {nid: n.serialize() for nid, n in self.nodes.items()}


class _BuilderNode:
    def __init__(self, node_id: str, class_type: str, inputs: dict):
        self.id = node_id
        self.class_type = class_type
        self.inputs: dict[str, Any] = {}
        self.override_display_id: str | None = None
        for k, v in inputs.items():
            self.set_input(k, v)

    def out(self, index: int) -> list:
        return [self.id, index]

    def set_input(self, key: str, value: Any) -> None:
        if value is None:
            self.inputs.pop(key, None)
        else:
            self.inputs[key] = value

    def get_input(self, key: str) -> Any:
        return self.inputs.get(key)

    def set_override_display_id(self, override_display_id: str) -> None:
        self.override_display_id = override_display_id

    def serialize(self) -> dict:
        out = {"class_type": self.class_type, "inputs": dict(self.inputs)}
        if self.override_display_id is not None:
            out["override_display_id"] = self.override_display_id
        return out


def find_cycles(prompt: dict, roots: Iterable[str]) -> dict[str, list[str]]:
    """Iterative DFS over links from `roots`; each node on a cycle → the cycle path ("1","3","1")."""
    on_cycle: dict[str, list[str]] = {}
    state: dict[str, int] = {}  # 1 = on stack, 2 = done
    for root in roots:
        if root in state or root not in prompt:
            continue
        stack: list[tuple[str, Iterable]] = [(root, iter(_link_sources(prompt[root])))]
        path = [root]
        state[root] = 1
        while stack:
            node_id, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                stack.pop()
                path.pop()
                state[node_id] = 2
                continue
            if nxt not in prompt:
                continue
            st = state.get(nxt)
            if st == 1:
                cycle = path[path.index(nxt):] + [nxt]
                for member in cycle[:-1]:
                    on_cycle.setdefault(member, cycle)
            elif st is None:
                state[nxt] = 1
                path.append(nxt)
                stack.append((nxt, iter(_link_sources(prompt[nxt]))))
    return on_cycle


def _link_sources(node: Any) -> list[str]:
    inputs = node.get("inputs") if isinstance(node, dict) else None
    if not isinstance(inputs, dict):
        return []
    return [v[0] for v in inputs.values() if is_link(v)]
