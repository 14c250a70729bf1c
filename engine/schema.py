"""Typed node declarations: the `@node` decorator, input/output descriptors and `NodeSpec` (torch-free).

Native nodes and ComfyUI V1 classes both become a `NodeSpec`; the rest of the engine sees only
`NodeSpec.input_types(paths)` — the V1-shaped `INPUT_TYPES` dict — and the flags below.
"""
from __future__ import annotations

import inspect
import sys
import typing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence

if TYPE_CHECKING:  # pragma: no cover - typing only
    from engine.config import RuntimeConfig
    from engine.paths import Paths

MAX_RESOLUTION = 16384

_UNSET: Any = object()


class _Input:
    """One declared input: its wire type and the options serialized into /object_info."""

    type_name: str = ""
    category = "required"

    def __init__(self, options: dict, *, optional: bool = False):
        self.options = {k: v for k, v in options.items() if v is not _UNSET}
        self.category = "optional" if optional else "required"

    def serialize(self, paths: "Paths | None", v3: bool) -> list:
        """The `[TYPE, {options}]` entry of INPUT_TYPES (1-element when V1 and no options)."""
        if self.options or v3:
            return [self.type_name, dict(self.options)]
        return [self.type_name]


def _opts(extra: dict, **named) -> dict:
    """Named options first (in declaration order), then the free-form extras, then the tooltip."""
    tooltip = named.pop("tooltip", _UNSET)
    out = dict(named)
    out.update(extra)
    out["tooltip"] = tooltip
    return out


class Int(_Input):
    """An INT widget."""

    type_name = "INT"

    def __init__(self, default=_UNSET, *, min=_UNSET, max=_UNSET, step=_UNSET, tooltip=_UNSET,
                 control_after_generate=_UNSET, optional=False, **extra):
        super().__init__(_opts(extra, default=default, min=min, max=max, step=step,
                               control_after_generate=control_after_generate, tooltip=tooltip),
                         optional=optional)


class Float(_Input):
    """A FLOAT widget."""

    type_name = "FLOAT"

    def __init__(self, default=_UNSET, *, min=_UNSET, max=_UNSET, step=_UNSET, round=_UNSET,
                 tooltip=_UNSET, optional=False, **extra):
        super().__init__(_opts(extra, default=default, min=min, max=max, step=step, round=round,
                               tooltip=tooltip), optional=optional)


class String(_Input):
    """A STRING widget."""

    type_name = "STRING"

    def __init__(self, default=_UNSET, *, multiline=_UNSET, dynamic_prompts=_UNSET, tooltip=_UNSET,
                 optional=False, **extra):
        super().__init__(_opts(extra, default=default, multiline=multiline,
                               dynamicPrompts=dynamic_prompts, tooltip=tooltip), optional=optional)


class Boolean(_Input):
    """A BOOLEAN toggle."""

    type_name = "BOOLEAN"

    def __init__(self, default=_UNSET, *, label_on=_UNSET, label_off=_UNSET, tooltip=_UNSET,
                 optional=False, **extra):
        super().__init__(_opts(extra, default=default, label_on=label_on, label_off=label_off,
                               tooltip=tooltip), optional=optional)


class Combo(_Input):
    """A dropdown; `options` is a sequence or a callable `(paths) -> list[str]` evaluated per request."""

    type_name = "COMBO"

    def __init__(self, options: Sequence[str] | Callable[["Paths"], list[str]], *, default=_UNSET,
                 tooltip=_UNSET, style: str = "list", optional=False, **extra):
        if style not in ("list", "combo"):
            raise ValueError(f"Combo style must be 'list' or 'combo', not {style!r}")
        super().__init__(_opts(extra, default=default, tooltip=tooltip), optional=optional)
        self.choices = options if callable(options) else list(options)
        self.style = style

    def resolve(self, paths: "Paths | None") -> list:
        """The current option list (computed options need `paths`; without one they are empty)."""
        if callable(self.choices):
            return list(self.choices(paths)) if paths is not None else []
        return list(self.choices)

    def serialize(self, paths, v3):
        choices = self.resolve(paths)
        if self.style == "combo":
            return ["COMBO", {"multiselect": False, "options": choices, **self.options}]
        return [choices, dict(self.options)] if (self.options or v3) else [choices]


class Socket(_Input):
    """A link-only input of a wire type (`"MODEL"`, unions `"A,B"`, any `"*"`)."""

    def __init__(self, type_name: str, *, tooltip=_UNSET, lazy=_UNSET, optional=False, **extra):
        super().__init__(_opts(extra, lazy=lazy, tooltip=tooltip), optional=optional)
        self.type_name = type_name


HIDDEN_KINDS = ("PROMPT", "EXTRA_PNGINFO", "UNIQUE_ID", "DYNPROMPT", "AUTH_TOKEN_COMFY_ORG",
                "API_KEY_COMFY_ORG")


class Hidden(_Input):
    """A hidden input filled by the executor (the prompt, extra png info, the node id, the graph)."""

    category = "hidden"

    def __init__(self, kind: str):
        if kind not in HIDDEN_KINDS:
            raise ValueError(f"unknown hidden input kind {kind!r}; expected one of {HIDDEN_KINDS}")
        self.options = {}
        self.kind = kind
        self.category = "hidden"

    def serialize(self, paths, v3):
        return self.kind


@dataclass(frozen=True)
class Output:
    """One output slot: wire type, optional display name and tooltip, list flag."""

    type: str
    name: str | None = None
    tooltip: str | None = None
    is_list: bool = False


@dataclass
class NodeOutput:
    """A native node's full result: outputs, UI data for the editor/history, an expansion graph."""

    result: tuple | None = None
    ui: dict | None = None
    expand: dict | None = None


class NodeContext(Protocol):
    """What the executor injects into a node's `ctx` parameter."""

    node_id: str
    prompt_id: str
    paths: "Paths"
    config: "RuntimeConfig"

    def progress(self, value: int, total: int, preview: tuple | None = None) -> None:
        """Report progress (+ optional ("JPEG"|"PNG", image, max_size) preview); checks interrupt."""

    def check_interrupt(self) -> None:
        """Raise engine.errors.Interrupted when the user interrupted."""

    def warn(self, text: str) -> None:
        """Add a warning to the prompt's execution messages."""


def files_in(folder: str) -> Callable[["Paths"], list[str]]:
    """Combo options = the current file listing of a model folder (recomputed per request)."""

    def list_files(paths: "Paths") -> list[str]:
        return paths.list_files(folder)

    list_files.__qualname__ = f"files_in({folder!r})"
    return list_files


@dataclass(frozen=True)
class NodeSpec:
    """Everything the engine knows about one node type, native or V1."""

    class_type: str
    category: str
    outputs: tuple[Output, ...]
    display_name: str | None = None
    description: str = ""
    python_module: str = "nodes"
    output_node: bool = False
    input_is_list: bool = False
    not_idempotent: bool = False
    deprecated: bool = False
    experimental: bool = False
    v3: bool = False
    # Native nodes: the declared inputs and the function (called with keyword inputs).
    inputs: tuple[tuple[str, _Input], ...] = ()
    function: Callable | None = None
    wants_ctx: bool = False
    accepts_extra: bool = False
    is_changed: Callable | None = None
    validate_inputs: Callable | None = None
    check_lazy_status: Callable | None = None
    # V1 classes: the class itself (INPUT_TYPES / FUNCTION / IS_CHANGED ... read from it).
    v1_class: type | None = None
    api_node: Any = _UNSET
    output_tooltips_defined: bool = False
    extra: dict = field(default_factory=dict)

    def input_types(self, paths: "Paths | None" = None) -> dict:
        """The V1-shaped INPUT_TYPES dict (combos resolved now; V1 classes return theirs verbatim)."""
        if self.v1_class is not None:
            return self.v1_class.INPUT_TYPES()
        out: dict[str, dict] = {}
        for name, inp in self.inputs:
            out.setdefault(inp.category, {})[name] = inp.serialize(paths, self.v3)
        if "required" not in out:
            out = {"required": {}, **out}
        return {k: out[k] for k in ("required", "optional", "hidden") if k in out}

    @property
    def output_types(self) -> tuple[str, ...]:
        return tuple(o.type for o in self.outputs)


def node(class_type: str, *, category: str, outputs: Sequence[Output] = (), display_name: str | None = None,
         description: str = "", output_node: bool = False, python_module: str = "nodes", v3: bool = False,
         not_idempotent: bool = False, input_is_list: bool = False, is_changed: Callable | None = None,
         validate_inputs: Callable | None = None, check_lazy_status: Callable | None = None,
         deprecated: bool = False, experimental: bool = False):
    """Declare a native node: inputs come from the function's `Annotated[T, <input>]` parameters."""

    def decorate(fn: Callable) -> Callable:
        # String annotations (`from __future__ import annotations`) may name things imported in the
        # defining scope (a function body), so evaluate them with that scope's locals too.
        localns = dict(sys._getframe(1).f_locals)
        inputs: list[tuple[str, _Input]] = []
        wants_ctx = accepts_extra = False
        for pname, param in inspect.signature(fn).parameters.items():
            if param.kind is inspect.Parameter.VAR_KEYWORD:
                accepts_extra = True
                continue
            if pname == "ctx":
                wants_ctx = True
                continue
            inp = _input_of(fn, pname, param.annotation, localns)
            if inp is None:
                raise TypeError(f"{class_type}: parameter {pname!r} of {fn.__qualname__} needs an "
                                f"Annotated[T, Int(...)|Float(...)|...|Socket(...)|Hidden(...)] annotation")
            inputs.append((pname, inp))
        outs = tuple(outputs)
        fn.spec = NodeSpec(
            class_type=class_type, category=category, outputs=outs, display_name=display_name,
            description=description, python_module=python_module, output_node=output_node,
            input_is_list=input_is_list, not_idempotent=not_idempotent, deprecated=deprecated,
            experimental=experimental, v3=v3, inputs=tuple(inputs), function=fn, wants_ctx=wants_ctx,
            accepts_extra=accepts_extra, is_changed=is_changed, validate_inputs=validate_inputs,
            check_lazy_status=check_lazy_status,
            output_tooltips_defined=any(o.tooltip is not None for o in outs))
        return fn

    return decorate


def _input_of(fn: Callable, pname: str, annotation: Any, localns: dict) -> _Input | None:
    """Find the input descriptor in `Annotated[...]` (string annotations are evaluated first)."""
    if isinstance(annotation, str):
        try:
            annotation = eval(annotation, getattr(fn, "__globals__", {}), localns)  # noqa: S307 - own source
        except Exception as exc:  # a clear message instead of a NameError deep in a module import
            raise TypeError(f"cannot evaluate the annotation of {pname!r} in {fn.__qualname__}: {exc}")
    if typing.get_origin(annotation) is typing.Annotated:
        for meta in annotation.__metadata__:
            if isinstance(meta, _Input):
                return meta
    return None
