"""A model's precise twin without a second copy of its weights.

Calibration and the verdict's rounding check run every path of a model once more in a higher precision
(float32 for a half-precision run, float64 for a float32 one). A full copy in that precision holds twice the
run's weights (four times, float32 to float64 counted in bytes of the copy against half weights), which is
what kept a 7B model in bfloat16 off a 24 GB machine. The twin here shares the run model's weight storage:

- the parts outside the decoder layers (embeddings, final norm, head: a few percent of a large model) are
  cast once, so the twin's ``dtype`` and every activation it makes are the precise dtype;
- each decoder layer casts its own weights when it is called and drops the copies when it returns, so at
  most one layer's precise weights exist at a time.

Upcasting is exact (every bfloat16 or float32 value is a float32 or float64 value), so the twin computes the
same function as a full copy cast with ``.to(dtype)``, at the cost of one cast per layer call. Torch only, and
nothing here knows a library: the layers are found in the module tree.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import io
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import torch

ModelT = TypeVar("ModelT", bound=torch.nn.Module)


def streamed_units(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The modules whose weights are cast on each call: the entries of the ModuleList holding the most parameters
    (a model's decoder layers; an MoE layer's experts list holds fewer than the stack it sits in)."""
    best: list[torch.nn.Module] = []
    best_size = 0
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList):
            size = sum(p.numel() for p in module.parameters())
            if size > best_size:
                best, best_size = list(module), size
    return best


def twin(model: ModelT, dtype: torch.dtype) -> ModelT:
    """``model`` computing in ``dtype``, sharing its weights' storage (see the module docstring). With ``dtype``
    the model's own, the twin holds no weight at all of its own: a second configuration of the same model."""
    memo: dict[int, Any] = {id(t): _alias(t) for t in _tensors(model)}
    duplicate = copy.deepcopy(model, memo)
    units = streamed_units(duplicate)
    streamed = {id(t) for unit in units for t in _tensors(unit)}
    for module in duplicate.modules():
        _cast_own(module, dtype, skip=streamed)
    workspace = Workspace(dtype, max((_castable_numel(unit, dtype) for unit in units), default=0))
    for unit in units:
        if _needs_cast(unit, dtype):
            # Into the instance's own dict: a wrapper module may pass attribute writes on to the module it wraps
            # (TransformerLens's bridge blocks do), and a patched inner forward would call the wrapper again.
            object.__setattr__(unit, "forward", functools.partial(_precise_call, unit.forward, unit, workspace))
    return duplicate


class Workspace:
    """One layer's weights in the precise dtype, written by each layer in turn: casting into memory already
    mapped is several times faster than allocating a fresh copy per call (page faults dominate a fresh one)."""

    def __init__(self, dtype: torch.dtype, numel: int):
        self.dtype, self.numel = dtype, numel
        self.buffers: dict[torch.device, torch.Tensor] = {}  # allocated on first use, per device
        self.busy = False  # a layer computing inside another (a shared block) casts into fresh memory instead

    def cast(self, data: torch.Tensor, offset: int) -> torch.Tensor:
        """``data`` in the precise dtype, written at ``offset`` of the buffer on its device."""
        if data.device not in self.buffers:
            with torch.inference_mode(False):  # a normal tensor: written inside and outside inference mode alike
                self.buffers[data.device] = torch.empty(self.numel, dtype=self.dtype, device=data.device)
        piece = self.buffers[data.device][offset:offset + data.numel()].view(data.shape)
        return piece.copy_(data)


def weight_bytes(model: torch.nn.Module, dtype: torch.dtype) -> tuple[int, int]:
    """(bytes the twin holds of its own in ``dtype``, bytes of the largest layer cast at a time): what a precise
    twin adds to the run's memory."""
    units = streamed_units(model)
    streamed = {id(t) for unit in units for t in _tensors(unit)}
    size = torch.empty((), dtype=dtype).element_size()
    own = sum(t.numel() for t in model.parameters() if id(t) not in streamed and t.dtype != dtype)
    largest = max((sum(p.numel() for p in unit.parameters()) for unit in units), default=0)
    return own * size, largest * size


def _tensors(module: torch.nn.Module) -> Iterator[torch.Tensor]:
    yield from module.parameters()
    yield from (b for b in module.buffers() if b is not None)


def _alias(tensor: torch.Tensor) -> torch.Tensor:
    """A new tensor object over the same storage: the twin may rebind it (cast) without touching the model's."""
    if isinstance(tensor, torch.nn.Parameter):
        return torch.nn.Parameter(tensor.data, requires_grad=tensor.requires_grad)
    return tensor.detach()


def _castable(tensor: torch.Tensor | None, dtype: torch.dtype) -> bool:
    return tensor is not None and tensor.is_floating_point() and tensor.dtype != dtype


def _cast_own(module: torch.nn.Module, dtype: torch.dtype, skip: set[int]) -> None:
    """Cast ``module``'s own parameters and buffers (not its children's) to ``dtype`` in place of the aliases."""
    for parameter in module._parameters.values():
        if parameter is not None and id(parameter) not in skip and _castable(parameter, dtype):
            parameter.data = parameter.data.to(dtype)  # rebinds the twin's alias only (tied ones once: same object)
    for name, buffer in module._buffers.items():
        if buffer is not None and id(buffer) not in skip and _castable(buffer, dtype):
            module._buffers[name] = buffer.to(dtype)


def _needs_cast(unit: torch.nn.Module, dtype: torch.dtype) -> bool:
    return any(_castable(t, dtype) for t in _tensors(unit))


def _castable_numel(unit: torch.nn.Module, dtype: torch.dtype) -> int:
    return sum(p.numel() for p in unit.parameters() if _castable(p, dtype))


def _precise_call(forward: Any, unit: torch.nn.Module, workspace: Workspace, *args: Any, **kwargs: Any) -> Any:
    with _cast(unit, workspace):
        return forward(*args, **kwargs)


@contextmanager
def _cast(unit: torch.nn.Module, workspace: Workspace) -> Iterator[None]:
    """``unit``'s weights and buffers in the workspace's dtype for the duration; its own (shared) storage
    afterwards, also when the call raised."""
    dtype, shared = workspace.dtype, not workspace.busy
    parameters = [(p, p.data) for p in unit.parameters() if _castable(p, dtype)]
    buffers = [(m, name, b) for m in unit.modules() for name, b in m._buffers.items()
               if b is not None and _castable(b, dtype)]
    workspace.busy = True
    try:
        offset = 0
        for parameter, data in parameters:
            parameter.data = workspace.cast(data, offset) if shared else data.to(dtype)
            offset += data.numel()
        for module, name, buffer in buffers:
            module._buffers[name] = buffer.to(dtype)
        yield
    finally:
        workspace.busy = not shared
        for parameter, data in parameters:
            parameter.data = data
        for module, name, buffer in buffers:
            module._buffers[name] = buffer


def cast_copy(module: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """A deep copy of a model in ``dtype``, quietly: TransformerLens models print on every dtype change. For the
    TransformerLens backends' calibration twins."""
    with contextlib.redirect_stdout(io.StringIO()):
        return copy.deepcopy(module).to(dtype)
