"""A pruned Hugging Face model as a ``save_pretrained`` directory, written atomically and checked
by reloading it: with ``from_pretrained`` when ``config.prunestudio`` says the pruning was uniform
(the config describes the model), else with :func:`core.adapters.hf.load_pruned`."""
from __future__ import annotations

import os
import sys

from core.errors import PruneStudioError
from core.io.atomic import OutputExistsError, atomic_write_dir, refuse_special
from core.io.hf.source import hf_class_and_config, hf_quiet
from core.io.torchfile import cpu_copy, tensor_shapes


def is_hf_model(model) -> bool:
    """A transformers ``PreTrainedModel`` (transformers is not imported for the question)."""
    tf = sys.modules.get("transformers")
    return tf is not None and isinstance(model, tf.PreTrainedModel)


def _is_inside(a: str, b: str) -> bool:
    """``a`` is ``b`` or lies inside it."""
    a, b = os.path.realpath(a), os.path.realpath(b)
    return a == b or a.startswith(b.rstrip(os.sep) + os.sep)


def check_hf_destination(path: str, force: bool = False, source=None) -> None:
    """Raise unless the directory ``path`` may be written: its parent exists; it is not, nor lies
    in, the input model's directory; it does not exist, or is empty, or (with ``force``) holds a
    previous Hugging Face export (``config.json``) - any other folder is never replaced."""
    if not path:
        raise PruneStudioError("no output directory given")
    path = path.rstrip("/" + os.sep) or path
    sources = [source] if isinstance(source, str) else list(source or [])
    for s in sources:
        if s and (_is_inside(path, s) or _is_inside(s, path)):
            raise PruneStudioError(f"refusing to write over the input model {s}; choose another "
                                   f"output directory")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise PruneStudioError(f"output folder {parent} does not exist")
    if os.path.islink(path) or os.path.lexists(path) and not os.path.isdir(path):
        refuse_special(path)  # a link, FIFO or device is never replaced
        raise PruneStudioError(f"output {path} is a file, not a directory")
    if os.path.isdir(path) and os.listdir(path):
        if not force:
            raise OutputExistsError(f"{path} already exists and is not empty; pass --force "
                                    f"(force=True) to overwrite it")
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise PruneStudioError(f"{path} is not empty and is not a Hugging Face model directory "
                                   f"(no config.json): refusing to replace it even with --force")


def _one_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"


def save_hf_dir(model, path: str, force: bool = False, source=None, should_stop=None) -> None:
    """Save a (pruned) Hugging Face model as a directory with ``save_pretrained``, atomically: it is
    written into a temporary sibling directory, reloaded and compared (parameter shapes), then
    ``os.replace``\\ d into place. A failure or a cancel leaves no directory behind; an existing
    non-empty ``path`` is replaced only with ``force`` (and only when it is itself a Hugging Face
    model directory)."""
    if not is_hf_model(model):
        raise PruneStudioError(f"a directory output is for Hugging Face models (save_pretrained); "
                               f"this is a {type(model).__name__}: use .pt, .pstudio or .onnx")
    path = path.rstrip("/" + os.sep) or path
    want = tensor_shapes(model.state_dict())

    def write(tmp):
        try:
            with hf_quiet():
                cpu_copy(model).save_pretrained(tmp)
        except Exception as e:  # noqa: BLE001
            raise PruneStudioError(f"save_pretrained failed: {_one_line(e)}") from None

    def check(tmp):
        try:
            back = load_hf_dir(tmp, type(model))
        except Exception as e:  # noqa: BLE001
            raise PruneStudioError(f"the saved directory does not load back ({_one_line(e)})") from None
        got = tensor_shapes(back.state_dict())
        if {k: v for k, v in got.items() if k in want} != {k: v for k, v in want.items() if k in got}:
            raise PruneStudioError("the saved directory does not load back with the pruned shapes")

    atomic_write_dir(path, write, check, lambda: check_hf_destination(path, force, source),
                     should_stop=should_stop)


def load_hf_dir(path: str, model_cls=None):
    """Load a Hugging Face model directory written by :func:`save_hf_dir`: ``from_pretrained`` when
    the pruning was uniform (the config describes the model), :func:`core.adapters.hf.load_pruned`
    otherwise. ``model_cls`` defaults to the class named in ``config.architectures``."""
    from core.adapters.hf import load_pruned
    if model_cls is None:
        model_cls = hf_class_and_config(path, False)[0]
    with hf_quiet():
        return load_pruned(model_cls, path, local_files_only=True).eval()
