"""Which module is running: per-instance call wrappers in place of global module hooks.

The tracer needs to know, for every torch call, the innermost module running it (its scope), and
to notice leaf modules start and end. Global forward hooks (``register_module_forward_hook``) say
so, but while any global hook exists torch runs every module call of the whole process through
its slow hook path, which cost about 5% of a small model's analysis. A wrapper set as the module
instance's ``_call_impl`` (what ``Module.__call__`` calls) runs at the same point as a global hook
would - before the module's own hooks and forward, after them on the way out - at a fraction of
the cost. Whenever the two could differ, the caller falls back to global hooks: a module with
forward hooks of its own (global hooks run before a module's own pre-hooks but also before its own
forward hooks; a wrapper is around both), global forward hooks someone else registered, a module
that already has its own ``_call_impl``, or a TorchScript module.
"""
from __future__ import annotations

import torch
import torch.nn.modules.module as torch_module


def _global_hooks() -> bool:
    return bool(getattr(torch_module, "_global_forward_hooks", True) or
                getattr(torch_module, "_global_forward_pre_hooks", True))


_PLAIN: dict[type, bool] = {}  # class -> calls go through Module._call_impl (no TorchScript)


def wrap_module_calls(modules, pre, post, direct=None):
    """Install ``pre(mod, args)`` / ``post(mod, args, out)`` (``out`` None when forward raised)
    around every call of each module in ``modules``, as global forward hooks would see them.
    ``direct(mod)``: None, or ``run(mod, args, kwargs)`` that does the module's work in place of
    its forward (returning ``NotImplemented`` when it does not). Returns a function that removes
    them, or None (nothing installed: use global hooks)."""
    modules = list(modules)
    if _global_hooks():
        return None
    for m in modules:
        d = m.__dict__
        plain = _PLAIN.get(type(m))
        if plain is None:
            plain = _PLAIN[type(m)] = not issubclass(type(m), torch.jit.ScriptModule) and \
                type(m)._call_impl is torch.nn.Module._call_impl
        if not plain or d.get("_forward_pre_hooks") or d.get("_forward_hooks") or "_call_impl" in d:
            return None
    done = []

    def remove():
        for m in done:
            m.__dict__.pop("_call_impl", None)

    try:
        for m in modules:
            m.__dict__["_call_impl"] = _wrapper(m, torch.nn.Module._call_impl.__get__(m), pre, post,
                                                direct(m) if direct is not None else None)
            done.append(m)
    except Exception:
        remove()
        raise
    return remove


def _wrapper(mod, call, pre, post, fast=None):
    if fast is not None:
        def run_fast(*args, **kwargs):
            pre(mod, args)
            out = None
            try:
                out = fast(mod, args, kwargs)
                if out is NotImplemented:
                    out = call(*args, **kwargs)
            finally:
                post(mod, args, out)
            return out
        return run_fast

    def run(*args, **kwargs):
        pre(mod, args)
        out = None
        try:
            out = call(*args, **kwargs)
        finally:
            post(mod, args, out)
        return out
    return run
