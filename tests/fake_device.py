"""A pretend second device for CPU tests: :class:`FakeDevice` runs everything on the CPU but tracks
which tensors "live on the device" and fails, as CUDA would, on any operation that mixes them with
CPU tensors. So a tensor created on the wrong device (a timestep, a token, noise, a reward's
weights) fails in CI although no GPU is there.

Tensors put on the device (``.to(DEV)``, factories with ``device=DEV``, module parameters through
:meth:`FakeDevice.place`) carry a tag; the tag propagates to every result of an operation with a
tagged input; ``.device`` of a tagged tensor reads ``DEV`` (``privateuseone``, a device type no library special-cases; ``meta`` would be, e.g. by peft) so
library code that asks a tensor or a module for its device gets the pretend one. What fails:

- an operation with tagged inputs and an untagged input of ≥ 1 dimension (CUDA allows 0-d CPU
  scalars, and CPU index tensors into device tensors; so does this mode);
- a factory with ``device=DEV`` and a CPU ``generator`` (CUDA refuses a CPU generator);
- ``.numpy()`` of a tagged tensor.
"""
from __future__ import annotations

import contextlib

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

DEV = torch.device("privateuseone")
_TAG = "_cda_on_fake_device"
_DEVICE_GET = torch._C.TensorBase.device
_DATA = torch._C.TensorBase.data
_GRAD = torch._C.TensorBase.grad
_INDEX = {torch._C.TensorBase.__getitem__, torch._C.TensorBase.__setitem__, torch.index_select, torch.take,
          torch.gather}


class DeviceMixError(RuntimeError):
    pass


class _DeviceModule:
    """What ``torch.utils.checkpoint`` asks of a device's module (``torch.<type>``): RNG state, device context."""

    device = staticmethod(lambda _id: contextlib.nullcontext())
    get_rng_state = staticmethod(lambda *a: torch.get_rng_state())
    set_rng_state = staticmethod(lambda state, *a: None)
    is_available = staticmethod(lambda: True)
    device_count = staticmethod(lambda: 1)
    current_device = staticmethod(lambda: 0)


if not hasattr(torch, DEV.type):
    torch._register_device_module(DEV.type, _DeviceModule)


def on_device(t) -> bool:
    return isinstance(t, torch.Tensor) and getattr(t, _TAG, False)


def _tag(out):
    for t in tree_flatten(out)[0]:
        if isinstance(t, torch.Tensor):
            setattr(t, _TAG, True)
    return out


def _is_dev(d) -> bool:
    return d is not None and torch.device(d) == DEV if isinstance(d, (str, torch.device)) else False


def _name(func) -> str:
    return getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or repr(func)


class FakeDevice(TorchFunctionMode):
    """``with FakeDevice() as fd: fd.place(pipe.unet) ...``: see the module docstring."""

    def __enter__(self):
        # no autocast on the pretend device (checkpoint.py asks before recomputing a segment)
        self._amp = torch.amp.is_autocast_available
        torch.amp.is_autocast_available = lambda t: False if t == DEV.type else self._amp(t)
        return super().__enter__()

    def __exit__(self, *exc):
        torch.amp.is_autocast_available = self._amp
        return super().__exit__(*exc)

    def place(self, *modules):
        for m in modules:
            for t in list(m.parameters()) + list(m.buffers()):
                _tag(t)
        return modules[0] if len(modules) == 1 else modules

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        owner = getattr(func, "__self__", None)
        if owner is _DEVICE_GET:  # tensor.device
            return DEV if on_device(args[0]) else func(*args, **kwargs)
        if owner is _GRAD and getattr(func, "__name__", "") == "__get__":
            g = func(*args, **kwargs)
            return _tag(g) if g is not None and on_device(args[0]) else g
        if owner is _DATA and getattr(func, "__name__", "") == "__set__":
            out = func(*args, **kwargs)
            if on_device(args[1]):
                _tag(args[0])
            return out
        name = _name(func)
        if name.endswith("_has_compatible_shallow_copy_type"):  # nn.Module.to's check: no computation
            return func(*args, **kwargs)
        if name.endswith("numpy") and on_device(args[0]):
            raise DeviceMixError("numpy() of a tensor on the device (call .cpu() first)")
        # where the result should live
        target = kwargs.get("device")
        if name.endswith(".to") or name == "to":
            target = kwargs.get("device", next((a for a in args[1:] if isinstance(a, (str, torch.device))), None))
        if name.endswith(".cpu") or (target is not None and not _is_dev(target)):
            out = func(*args, **kwargs)
            if args and isinstance(out, torch.Tensor) and out is args[0] and on_device(args[0]):
                out = out.clone()  # a real copy: the CPU tensor must not share the device tag
            if isinstance(out, torch.Tensor) and getattr(out, _TAG, False):
                delattr(out, _TAG)
            return out
        if _is_dev(target):
            gen = kwargs.get("generator")
            if gen is not None and gen.device.type == "cpu":
                raise DeviceMixError(f"{name}: a CPU generator for a tensor on the device")
            if name.endswith(".to") or name == "to":
                cpu = torch.device("cpu")
                a = [cpu if isinstance(x, (str, torch.device)) and _is_dev(x) else x for x in args[1:]]
                kw = {k: (cpu if k == "device" else v) for k, v in kwargs.items()}
                out = func(args[0], *a, **kw)
                if out is args[0] and not on_device(args[0]):
                    out = out.clone()
                return _tag(out)
            kw = dict(kwargs, device="cpu")
            return _tag(func(*args, **kw))
        tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        tagged = [t for t in tensors if on_device(t)]
        if tagged:
            check = tensors[:1] if func in _INDEX else tensors
            bad = [t for t in check if not on_device(t) and t.dim() > 0]
            if bad:
                raise DeviceMixError(f"{name}: device tensors mixed with a CPU tensor of shape {tuple(bad[0].shape)}")
            return _tag(func(*args, **kwargs))
        return func(*args, **kwargs)
