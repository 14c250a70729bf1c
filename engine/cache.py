"""Output cache: structural input signatures (execution.md §8.3) and the four cache policies (§8.4)."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from engine.graph import is_link


class Unhashable(Exception):
    """A value without a stable hashable form: the node's key never matches anything."""


def canonical(value: Any) -> str:
    """Deterministic text form of a constant (`to_hashable`); raises Unhashable for objects and NaN."""
    if value is None or isinstance(value, (bool, int, str, bytes)):
        return repr(value)
    if isinstance(value, float):
        if value != value:
            raise Unhashable("NaN")
        return repr(value)
    if isinstance(value, dict):
        return "{" + ",".join(sorted(f"{canonical(k)}:{canonical(v)}" for k, v in value.items())) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(canonical(v) for v in value) + "]"
    raise Unhashable(type(value).__name__)


_LINK = object()   # marks a link in a key tuple (equal only to itself)


def _constant(value: Any) -> Any:
    """A constant as a hashable key part: scalars as they are, containers as canonical text."""
    t = type(value)
    if t is int or t is str or t is bool or value is None:
        return value
    if t is float:
        if value != value:
            raise Unhashable("NaN")
        return value
    return (_LINK, canonical(value))   # tagged, so the text of a container never equals a plain string


class KeyInterner:
    """Gives each distinct node signature a small int; signatures refer to their sources by that int.

    Ids are never reused, so pruning the table can only cause a cache miss, never a wrong hit.
    """

    def __init__(self):
        self.ids: dict[tuple, int] = {}
        self.next_id = 1

    def intern(self, signature: tuple) -> int:
        key = self.ids.get(signature)
        if key is None:
            key = self.ids[signature] = self.next_id
            self.next_id += 1
        return key

    def prune(self, keep: set) -> None:
        """Forget signatures whose ids are neither in use nor cached."""
        self.ids = {sig: key for sig, key in self.ids.items() if key in keep}


def compute_keys(nodes: Callable[[str], dict | None], ids: Iterable[str], *, class_info: Callable[[str], tuple[bool]],
                 fingerprints: dict[str, str | None], memo: dict[str, int | None], interner: KeyInterner,
                 tag: str = "") -> None:
    """Fill `memo[id]` with each node's structural key (None = never cacheable).

    signature(n) = (class, fingerprint, tag, id if NOT_IDEMPOTENT/UNIQUE_ID, sorted inputs with links
    replaced by the source's key and slot); node ids never matter otherwise, so equal sub-graphs share
    results. Iterative, so very deep graphs are fine; nodes on a cycle get None.
    """
    with_id: dict[Any, bool] = {}
    for root in ids:
        if root in memo:
            continue
        stack = [(root, False)]
        visiting: set[str] = set()   # started and not finished: meeting one again means a cycle
        while stack:
            nid, ready = stack.pop()
            if nid in memo or (not ready and nid in visiting):
                continue
            node = nodes(nid)
            if node is None:
                memo[nid] = None
                continue
            inputs = node.get("inputs") or {}
            if not ready:
                visiting.add(nid)
                stack.append((nid, True))
                for v in inputs.values():
                    if is_link(v) and v[0] not in memo:
                        stack.append((v[0], False))
                continue
            class_type = node.get("class_type")
            flag = with_id.get(class_type)
            if flag is None:
                flag = with_id[class_type] = class_info(class_type)[0]
            memo[nid] = _key_of(nid, class_type, inputs, flag, fingerprints, memo, tag, interner)


def _key_of(nid, class_type, inputs, with_id, fingerprints, memo, tag, interner) -> int | None:
    fp = fingerprints.get(nid, False)
    if fp is None:
        return None
    parts: list = [class_type, fp, tag, nid if with_id else None]
    try:
        for name in sorted(inputs):
            v = inputs[name]
            if is_link(v):
                src = memo.get(v[0])
                if src is None:
                    return None
                parts += (name, (_LINK, src, v[1]))
            else:
                parts += (name, _constant(v))
    except Unhashable:
        return None
    return interner.intern(tuple(parts))


@dataclass
class CacheEntry:
    """A node's merged UI (or None) and its output lists (one list per output slot)."""

    ui: dict | None
    outputs: list[list]
    parent: tuple[str, str] | None = None   # (node id, class) of the expanding parent, ephemeral nodes
    generation: int = 0
    size: int = 0


class OutputCache:
    """Base: a dict of entries; subclasses decide what survives a new prompt."""

    kind = "base"

    def __init__(self):
        self.entries: dict[int, CacheEntry] = {}
        self.generation = 0
        self.interner = KeyInterner()

    def start_prompt(self, keys: set[int], parents: set[tuple[str, str]]) -> None:
        """A new prompt with these keys begins: drop entries per policy, forget unused signatures."""
        self.generation += 1
        self._on_prompt(keys, parents)
        self.interner.prune(keys | set(self.entries))

    def _on_prompt(self, keys: set[int], parents: set[tuple[str, str]]) -> None:
        """Policy hook: what survives a new prompt (everything, by default)."""

    def get(self, key: int | None) -> CacheEntry | None:
        if key is None:
            return None
        entry = self.entries.get(key)
        if entry is not None:
            entry.generation = self.generation
        return entry

    def set(self, key: int | None, entry: CacheEntry) -> None:
        if key is None:
            return
        entry.generation = self.generation
        self.entries[key] = entry

    def after_node(self) -> None:
        """Hook run after every executed node (memory-budget eviction)."""

    def clear(self) -> None:
        self.entries.clear()

    def __len__(self) -> int:
        return len(self.entries)


class ClassicCache(OutputCache):
    """Keep only entries the current prompt uses (plus ephemeral ones of parents still present)."""

    kind = "classic"

    def _on_prompt(self, keys, parents):
        self.entries = {k: e for k, e in self.entries.items()
                        if k in keys or (e.parent is not None and e.parent in parents)}


class LRUCache(OutputCache):
    """Keep entries of the most recent prompts; evict the least recently used beyond `max_size`."""

    kind = "lru"

    def __init__(self, max_size: int):
        super().__init__()
        self.max_size = max_size

    def _on_prompt(self, keys, parents):
        for k in keys:
            if k in self.entries:
                self.entries[k].generation = self.generation
        self._evict()

    def set(self, key, entry):
        super().set(key, entry)
        self._evict()

    def _evict(self) -> None:
        if len(self.entries) <= self.max_size:
            return
        for k in sorted(self.entries, key=lambda k: self.entries[k].generation):
            if len(self.entries) <= self.max_size or self.entries[k].generation >= self.generation:
                break
            del self.entries[k]


class RamCache(OutputCache):
    """Keep everything; when free RAM drops below `min_free_gb`, evict by age × size (§8.4)."""

    kind = "ram"

    def __init__(self, min_free_gb: float, free_ram: Callable[[], float] | None = None):
        super().__init__()
        self.min_free = min_free_gb * 1024 ** 3
        self.free_ram = free_ram or available_ram_bytes

    def set(self, key, entry):
        if key is not None:
            entry.size = estimate_size(entry.outputs)
        super().set(key, entry)

    def after_node(self) -> None:
        if self.free_ram() >= self.min_free:
            return
        scored = sorted(self.entries, key=lambda k: -(1.3 ** (self.generation - self.entries[k].generation))
                        * max(self.entries[k].size, 1))
        for k in scored:
            if self.free_ram() > self.min_free * 1.1:
                break
            del self.entries[k]


class NoCache(OutputCache):
    """Cache nothing: every node runs every time."""

    kind = "none"

    def set(self, key, entry):
        return None


def make_cache(policy: Any = "classic") -> OutputCache:
    """"classic" | ("lru", n) | ("ram", gb) | "none" → a cache (`--cache-lru 0` = classic)."""
    if isinstance(policy, (list, tuple)):
        kind, arg = policy[0], (policy[1] if len(policy) > 1 else None)
    else:
        kind, arg = policy, None
    if kind == "classic" or (kind == "lru" and not arg):
        return ClassicCache()
    if kind == "lru":
        return LRUCache(int(arg))
    if kind == "ram":
        return RamCache(float(arg if arg is not None else 4.0))
    if kind == "none":
        return NoCache()
    raise ValueError(f"unknown cache policy {policy!r}")


def available_ram_bytes() -> float:
    """MemAvailable from /proc/meminfo (inf where unknown, so nothing is evicted)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    return float("inf")


def estimate_size(value: Any, _depth: int = 0) -> int:
    """Rough bytes held by an output value (tensors by duck typing; CPU tensors count half)."""
    if _depth > 6:
        return 0
    nbytes = getattr(value, "nbytes", None)
    if isinstance(nbytes, int) and hasattr(value, "shape"):
        device = str(getattr(value, "device", "cpu"))
        return nbytes // 2 if device == "cpu" else nbytes
    if isinstance(value, dict):
        return sum(estimate_size(v, _depth + 1) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(estimate_size(v, _depth + 1) for v in value)
    return sys.getsizeof(value) if isinstance(value, (str, bytes)) else 64
