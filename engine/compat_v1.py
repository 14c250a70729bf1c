"""ComfyUI V1 node classes (INPUT_TYPES / RETURN_TYPES / FUNCTION) → NodeSpec, unchanged."""
from __future__ import annotations

from engine.schema import NodeSpec, Output, _UNSET


def spec_from_class(class_type: str, cls: type, *, display_name: str | None = None,
                    python_module: str = "custom_nodes") -> NodeSpec:
    """Describe a V1 class; raises TypeError when a required attribute is missing."""
    for attr in ("INPUT_TYPES", "RETURN_TYPES", "FUNCTION"):
        if not hasattr(cls, attr):
            raise TypeError(f"{class_type}: V1 node class {cls.__name__} has no {attr}")
    return_types = tuple(cls.RETURN_TYPES)
    names = tuple(getattr(cls, "RETURN_NAMES", None) or return_types)
    is_list = tuple(getattr(cls, "OUTPUT_IS_LIST", None) or (False,) * len(return_types))
    tooltips = getattr(cls, "OUTPUT_TOOLTIPS", None)
    outputs = tuple(
        Output(t, name=names[i] if i < len(names) else None,
               tooltip=tooltips[i] if tooltips and i < len(tooltips) else None,
               is_list=bool(is_list[i]) if i < len(is_list) else False)
        for i, t in enumerate(return_types))
    return NodeSpec(
        class_type=class_type, category=getattr(cls, "CATEGORY", "sd"), outputs=outputs,
        display_name=display_name, description=getattr(cls, "DESCRIPTION", "") or "",
        python_module=python_module, output_node=getattr(cls, "OUTPUT_NODE", False) is True,
        input_is_list=bool(getattr(cls, "INPUT_IS_LIST", False)),
        not_idempotent=bool(getattr(cls, "NOT_IDEMPOTENT", False)),
        deprecated=bool(getattr(cls, "DEPRECATED", False)),
        experimental=bool(getattr(cls, "EXPERIMENTAL", False)),
        is_changed=getattr(cls, "IS_CHANGED", None), validate_inputs=getattr(cls, "VALIDATE_INPUTS", None),
        v1_class=cls, api_node=getattr(cls, "API_NODE", _UNSET),
        output_tooltips_defined=tooltips is not None,
        extra={"output_tooltips": list(tooltips)} if tooltips is not None else {})
