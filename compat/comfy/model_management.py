"""`comfy.model_management`: interrupt flag, devices and cache freeing, over Kiln's engine."""
from __future__ import annotations

from compat.state import STATE
from engine.context import current, interrupt_requested, request_interrupt
from engine.errors import Interrupted

InterruptProcessingException = Interrupted


def interrupt_current_processing(value: bool = True) -> None:
    request_interrupt(value)


def processing_interrupted() -> bool:
    return interrupt_requested()


def throw_exception_if_processing_interrupted() -> None:
    """Raise InterruptProcessingException (clearing the flag) when the user interrupted."""
    ctx = current()
    if ctx is not None:
        ctx.check_interrupt()
    elif interrupt_requested():
        request_interrupt(False)
        raise InterruptProcessingException("Processing interrupted")


def get_torch_device():
    import torch

    if STATE.torch_device is not None:
        return STATE.torch_device()
    cpu = bool(STATE.registry and getattr(getattr(STATE.registry, "config", None), "cpu", False))
    return torch.device("cuda") if torch.cuda.is_available() and not cpu else torch.device("cpu")


def intermediate_device():
    import torch

    return torch.device("cpu")


def soft_empty_cache(force: bool = False) -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def unload_all_models() -> None:
    if STATE.unload_all_models is not None:
        STATE.unload_all_models()
