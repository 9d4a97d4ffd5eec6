"""The one place where op semantics and model families join the registries.

Every module below registers op handlers (``core.ops.registry.register_op``), leaf modules
(``register_leaf_module``) or module updaters (``core.prune.apply.register_module_updater``) when
it is imported; :func:`load` imports them, in this order, and nothing else in the engine imports a
module for its side effects. Order matters where a later entry wraps an earlier one (the one-group
GroupNorm rule wraps the generic one; Hugging Face wraps ``addmm``).

A new op family or model family is one new module and one line here. Entries naming a library
are loaded once that library has been imported by the process (a timm model imports timm), so
that loading the engine never pays for importing optional libraries.
"""
from __future__ import annotations

import importlib
import sys

# (module, library that must already be imported, or None)
FAMILIES: tuple[tuple[str, str | None], ...] = (
    ("core.ops.elementwise", None),
    ("core.ops.movement", None),
    ("core.ops.reductions", None),
    ("core.ops.contractions", None),
    ("core.ops.layers", None),
    ("core.ops.extra", None),
    ("core.ops.scatter", None),
    ("core.ops.setitem", None),
    ("core.ops.roi", None),
    ("core.prune.updaters", None),
    ("core.adapters.norms", None),
    ("core.adapters.torch_mha", None),
    ("core.adapters.torchvision_attention", None),
    ("core.adapters.rnn", None),
    ("core.adapters.hf", None),
    ("core.adapters.pyg", None),
    ("core.adapters.timm_attention", "timm"),
    ("core.adapters.timm_vit", "timm"),
    ("core.adapters.timm_hybrid", "timm"),
)

_loaded: set[str] = set()


def load() -> None:
    """Import every family not loaded yet whose library (if any) the process has imported. Cheap
    to call again: the tracer and the pruner call it on every run."""
    for module, library in FAMILIES:
        if module in _loaded or (library is not None and library not in sys.modules):
            continue
        importlib.import_module(module)
        _loaded.add(module)


def load_before(module: str) -> None:
    """Load the families listed before ``module``: a family that wraps an earlier handler calls
    this first, so importing it directly (a test, a user's script) finds what it wraps."""
    names = [m for m, _ in FAMILIES]
    for name, library in FAMILIES[: names.index(module)]:
        if name not in _loaded and (library is None or library in sys.modules):
            importlib.import_module(name)
            _loaded.add(name)


def loaded() -> list[str]:
    """The family modules loaded so far, in registration order."""
    return [m for m, _ in FAMILIES if m in _loaded]
