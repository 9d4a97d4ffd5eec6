"""Training checkpoints: ``checkpoint_dir/checkpoint.pt`` written atomically after every epoch
(model, optimizer, scheduler, scaler, epoch, history, RNG) and read back to resume."""
from __future__ import annotations

import os

import torch

from core.errors import LoadError

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_FORMAT = "prunestudio.checkpoint"


def save_checkpoint(path: str, state: dict) -> None:
    """Written through :func:`core.io.atomic.atomic_write` (a temporary file in the same folder,
    then moved into place; removed on a signal, swept if the process was killed)."""
    from core.io.atomic import atomic_write
    from core.io.tempfiles import torch_save
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write(path, lambda tmp: torch_save(state, tmp), force=True)


def load_checkpoint(path: str) -> dict:
    if not os.path.exists(path):
        raise LoadError(f"no checkpoint to resume from: {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise LoadError(f"checkpoint {path} cannot be read: {type(e).__name__}: "
                        f"{' '.join(str(e).split())[:200]}") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise LoadError(f"{path} is not a PruneStudio training checkpoint")
    return state


def check_shapes(model, sd, path):
    """A checkpoint must come from the same (pruned) architecture as the model it resumes."""
    own = model.state_dict()
    bad = [k for k in own if k not in sd or tuple(sd[k].shape) != tuple(own[k].shape)]
    if bad or len(sd) != len(own):
        raise LoadError(f"checkpoint {path} was saved from a different architecture "
                        f"(first mismatch: {bad[0] if bad else 'extra keys'}); resume with the same "
                        f"model and pruning settings")
