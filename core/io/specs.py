"""The grammar of ``MODEL`` specs: which source a spec names and which local files it reads.

Nothing here builds a model or imports torch; :mod:`core.io.sources` maps each kind returned by
:func:`spec_kind` to the entry of its ``SOURCES`` registry.

* ``torchvision:NAME[@WEIGHTS]``, ``timm:NAME[@pretrained]``, ``hf:DIR`` - kind = the prefix
* ``path/to/file.py:factory`` - kind ``file``
* ``demo`` - kind ``demo``
* ``model.onnx`` - kind ``onnx`` (imported by :mod:`core.io.onnx.importer`)
* ``model.pstudio`` - kind ``pstudio``; any other saved model file - kind ``pt``
"""
from __future__ import annotations

import os

#: spec prefixes (``prefix:rest``) that name a source kind directly
PREFIXES = ("torchvision", "hf", "timm")
#: file names a saved model usually has (whole pickles, state dicts, the portable form)
MODEL_SUFFIXES = (".pt", ".pth", ".pkl", ".bin", ".ckpt", ".pstudio", ".onnx")
PORTABLE_SUFFIX = ".pstudio"
ONNX_SUFFIX = ".onnx"


def split_factory_spec(spec: str) -> tuple[str, str] | None:
    """``"dir/file.py:make"`` -> ``("dir/file.py", "make")``; None if ``spec`` is not of that form
    (a Windows drive letter such as ``C:`` is not taken for a separator)."""
    path, sep, name = spec.rpartition(":")
    if sep and path.lower().endswith(".py") and name.isidentifier():
        return path, name
    return None


def spec_kind(spec: str) -> str:
    """The ``SOURCES`` key of ``spec``: 'torchvision' | 'hf' | 'timm' | 'file' (file.py:factory) |
    'demo' | 'pstudio' | 'onnx' | 'pt' (any other saved model file)."""
    prefix, sep, _ = spec.partition(":")
    if sep and prefix in PREFIXES:
        return prefix
    if split_factory_spec(spec):
        return "file"
    if spec == "demo":
        return "demo"
    if spec.lower().endswith(ONNX_SUFFIX):
        return "onnx"
    return "pstudio" if spec.lower().endswith(PORTABLE_SUFFIX) else "pt"


def clean_spec(spec: str) -> str:
    """The spec as every entry point takes it: surrounding whitespace stripped (``"evil.pt "`` is
    ``evil.pt``); suffixes are compared without case everywhere (``X.PT`` is a saved file,
    ``NET.PY:make`` a factory), so one spec takes one path through loading and consent."""
    return spec.strip() if isinstance(spec, str) else spec


def spec_body(spec: str) -> str:
    """What follows the ``prefix:`` of a prefixed spec (the spec itself otherwise)."""
    prefix, sep, rest = spec.partition(":")
    return rest if sep and prefix in PREFIXES else spec


def normalize_spec(spec: str) -> str:
    """The spec with file paths made absolute, so that it still works from another folder."""
    spec = clean_spec(spec)
    kind = spec_kind(spec)
    if kind == "file":
        path, name = split_factory_spec(spec)
        return f"{os.path.abspath(path)}:{name}"
    if kind in ("pt", "pstudio", "onnx"):
        return os.path.abspath(spec)
    if kind == "hf" and os.path.isdir(spec[3:]):
        return "hf:" + os.path.abspath(spec[3:])
    return spec


def spec_dir(spec: str) -> str | None:
    """The local directory an ``hf:`` spec reads from (None for every other spec)."""
    if spec_kind(spec) == "hf" and os.path.isdir(spec[3:]):
        return spec[3:]
    return None


def spec_file(spec: str) -> str | None:
    """The file a spec reads from (None for torchvision, timm, hf and demo specs)."""
    kind = spec_kind(spec)
    if kind == "file":
        return split_factory_spec(spec)[0]
    if kind in ("pt", "pstudio", "onnx"):
        return spec
    return None
