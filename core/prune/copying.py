"""A faster ``copy.deepcopy`` for module trees.

``copy.deepcopy`` of a module goes through ``__reduce_ex__`` (slot names, ``copyreg``) for every
module and every hook ``OrderedDict``: on small models (MobileNet, EfficientNet) that generic
machinery costs more than slicing the tensors. :func:`copy_model` does what deepcopy's
``_reconstruct`` does for plain modules and plain containers, directly, and hands everything else
(tensors, parameters, sets, user objects) to ``copy.deepcopy`` with the same memo, so the result
is the same object graph deepcopy would build: shared objects stay shared, ``memo`` entries (e.g.
already sliced tensors) are used in place of the originals.
"""
from __future__ import annotations

import copy
import copyreg
from collections import OrderedDict

from torch import nn

_ATOMIC = frozenset({type(None), int, float, bool, complex, str, bytes, type, range,
                     type(Ellipsis), type(NotImplemented)})
_plain_cache: dict[type, bool] = {}


def _plain_module(cls: type) -> bool:
    """A module class that deepcopy reconstructs as ``cls.__new__`` + ``__setstate__(state)``
    with ``state = __getstate__()``: no custom copy/reduce hooks, no slots, no new-args."""
    ok = _plain_cache.get(cls)
    if ok is None:
        ok = (cls not in copyreg.dispatch_table and not hasattr(cls, "__deepcopy__")
              and cls.__reduce_ex__ is object.__reduce_ex__ and cls.__reduce__ is object.__reduce__
              and not hasattr(cls, "__getnewargs_ex__") and not hasattr(cls, "__getnewargs__")
              and not any("__slots__" in c.__dict__ for c in cls.__mro__))
        _plain_cache[cls] = ok
    return ok


def copy_model(obj, memo: dict | None = None):
    """``copy.deepcopy(obj, memo)``, faster for module trees (see the module's docstring)."""
    if memo is None:
        memo = {}
    return _copy(obj, memo)


def _copy(x, memo):
    cls = type(x)
    if cls in _ATOMIC:
        return x
    y = memo.get(id(x), memo)
    if y is not memo:
        return y
    if cls is dict or (cls is OrderedDict and not x.__dict__):
        # a module's state: mostly str keys and atomic values, copied without a call each
        y = memo[id(x)] = cls()
        for k, v in x.items():
            tv = type(v)
            if tv in _ATOMIC:
                pass
            elif (tv is OrderedDict or tv is dict) and not v and (tv is dict or not v.__dict__):
                c = memo.get(id(v), memo)  # an empty hook table: a dozen per module
                v = memo.setdefault(id(v), tv()) if c is memo else c
            else:
                v = _copy(v, memo)
            y[k if type(k) in _ATOMIC else _copy(k, memo)] = v
    elif cls is tuple:  # deepcopy's rule: the same tuple when no element needed a copy
        items = [v if type(v) in _ATOMIC else _copy(v, memo) for v in x]
        if all(a is b for a, b in zip(items, x)):
            return x
        y = memo.get(id(x), memo)  # a cycle through the tuple may have copied it meanwhile
        if y is memo:
            y = memo[id(x)] = tuple(items)
    elif cls is set and all(type(v) in _ATOMIC for v in x):
        y = memo[id(x)] = set(x)
        _keep_alive(x, memo)
    elif isinstance(x, nn.Module) and _plain_module(cls):
        y = memo[id(x)] = cls.__new__(cls)
        _keep_alive(x, memo)
        if cls.__getstate__ is _MODULE_GETSTATE and cls.__setstate__ is _MODULE_SETSTATE and \
                _STATE_KEYS.issubset(x.__dict__):
            # what getstate/setstate would do: Module's only copies __dict__, and only fills in
            # hook tables an old pickle lacked - which this module has
            y.__dict__.update(_copy_state(x.__dict__, memo))
            return y
        state = x.__getstate__()
        if state:
            # a fresh dict (Module.__getstate__ copies __dict__): kept alive as deepcopy does,
            # or the next module's state could get its id and be taken for it in the memo
            _keep_alive(state, memo)
            state = _copy(state, memo)
            if hasattr(y, "__setstate__"):
                y.__setstate__(state)
            else:
                y.__dict__.update(state)
        return y
    else:
        return copy.deepcopy(x, memo)
    return y


_MODULE_GETSTATE = nn.Module.__getstate__
_MODULE_SETSTATE = nn.Module.__setstate__
# the attributes Module.__setstate__ adds when a state lacks them
_STATE_KEYS = frozenset({"_forward_pre_hooks", "_forward_hooks", "_backward_hooks",
                         "_backward_pre_hooks", "_state_dict_hooks", "_state_dict_pre_hooks",
                         "_load_state_dict_pre_hooks", "_load_state_dict_post_hooks",
                         "_non_persistent_buffers_set", "_is_full_backward_hook",
                         "_forward_hooks_with_kwargs", "_forward_hooks_always_called",
                         "_forward_pre_hooks_with_kwargs"})


def _copy_state(d: dict, memo) -> dict:
    """A copy of a module's ``__dict__`` as ``_copy`` of a fresh copy of it would make (the fresh
    dict itself is never referenced, so it needs no memo entry)."""
    y = {}
    for k, v in d.items():
        tv = type(v)
        if tv in _ATOMIC:
            pass
        elif tv is tuple and all(type(e) in _ATOMIC for e in v):
            pass  # deepcopy keeps such a tuple (kernel_size, stride, ...) as it is
        elif (tv is OrderedDict or tv is dict) and not v and (tv is dict or not v.__dict__):
            c = memo.get(id(v), memo)  # an empty hook table: a dozen per module
            v = memo.setdefault(id(v), tv()) if c is memo else c
        else:
            v = _copy(v, memo)
        y[k] = v
    return y


def _keep_alive(x, memo):
    # as deepcopy does: the originals live as long as the memo, so their ids are never reused
    try:
        memo[id(memo)].append(x)
    except KeyError:
        memo[id(memo)] = [x]
