"""Save and load the portable form (``.pstudio``; the format is described in
:mod:`core.io.portable_format`).

Loading rebuilds the original architecture from ``model_spec`` through the model sources, slices
it with ``core.prune.apply.apply_kept`` and loads the pruned state dict strictly. Saving is atomic
and, by default, rebuilds the model from the temporary file before moving it into place.
"""
from __future__ import annotations

from torch import nn

from core.errors import PruneStudioError
from core.io.atomic import atomic_write
from core.io.portable_format import PORTABLE_FORMAT, PORTABLE_SUFFIX, PORTABLE_VERSION, portable_payload, read_portable
from core.io.sources import SOURCES
from core.io.tempfiles import torch_save
from core.io.torchfile import tensor_shapes

__all__ = [
    "PORTABLE_FORMAT",
    "PORTABLE_SUFFIX",
    "PORTABLE_VERSION",
    "load_portable",
    "read_portable",
    "save_portable",
]


def load_portable(path: str, trust: bool = False) -> nn.Module:
    """Rebuild the pruned model: original architecture from the spec, ``apply_kept``, weights."""
    return SOURCES.get("pstudio").rebuild(path, trust)


def save_portable(path: str, model_spec: str, kept: dict, state_dict: dict, force: bool = False,
                  source=None, plan=None, meta: dict | None = None, trust: bool = False,
                  rebuild_check: bool = True, should_stop=None) -> None:
    """Write the portable form. ``rebuild_check`` rebuilds the model from the temporary file
    before it is moved into place (needs ``trust`` for pickled specs)."""
    payload = portable_payload(model_spec, kept, state_dict, plan, meta)
    want = tensor_shapes(payload["state_dict"])

    def write(tmp):
        torch_save(payload, tmp)

    def check(tmp):
        if rebuild_check:
            m = load_portable(tmp, trust=trust)
            if tensor_shapes(m.state_dict()) != want:
                raise PruneStudioError("the portable file does not rebuild the pruned model")
        else:
            read_portable(tmp)

    atomic_write(path, write, check, force, source, should_stop=should_stop)
