"""Import the user's Python file by path and call a function from it (model factories, example
inputs, datasets, loss functions). Failures are one-line LoadErrors naming the file."""
from __future__ import annotations

import hashlib
import importlib.util
import os
import sys

from core.errors import LoadError
from core.io.messages import exc_text


def import_file(path: str):
    """The module defined by the Python file ``path`` (imported once per process and path)."""
    if not os.path.exists(path):
        raise LoadError(f"file not found: {path}")
    apath = os.path.abspath(path)
    stem = os.path.splitext(os.path.basename(apath))[0]
    # Register the module under its own name when that is free, so a whole model saved from it
    # can be unpickled later from the same folder; otherwise under a private unique name.
    mod_name = stem
    existing = sys.modules.get(stem)
    if not stem.isidentifier() or (existing is not None and
                                   os.path.abspath(getattr(existing, "__file__", "") or "") != apath):
        mod_name = f"_prunestudio_user_{stem if stem.isidentifier() else 'mod'}_" \
                   f"{hashlib.sha1(apath.encode()).hexdigest()[:10]}"
    folder = os.path.dirname(apath)
    added = folder not in sys.path
    if added:
        sys.path.insert(0, folder)  # the file may import its neighbours
    try:
        spec = importlib.util.spec_from_file_location(mod_name, apath)
        if spec is None or spec.loader is None:
            raise LoadError(f"{path} cannot be imported as a Python module")
        module = importlib.util.module_from_spec(spec)
        sys.modules[mod_name] = module
        try:
            spec.loader.exec_module(module)
        except SyntaxError as e:
            sys.modules.pop(mod_name, None)
            raise LoadError(f"{path} has a syntax error at line {e.lineno}: {e.msg}") from None
        except Exception as e:  # noqa: BLE001
            sys.modules.pop(mod_name, None)
            raise LoadError(f"importing {path} failed: {exc_text(e)}") from None
    finally:
        if added:
            try:
                sys.path.remove(folder)
            except ValueError:
                pass
    return module


def call_factory(path: str, name: str, what: str):
    """``name()`` from the file ``path``; ``what`` ("model factory", "inputs function", ...)
    names the function in the errors."""
    module = import_file(path)
    fn = getattr(module, name, None)
    if fn is None:
        avail = sorted(k for k, v in vars(module).items() if callable(v) and not k.startswith("_")
                       and getattr(v, "__module__", None) == module.__name__)
        hint = f" (it defines: {', '.join(avail[:8])})" if avail else ""
        raise LoadError(f"{path} has no {what} '{name}'{hint}")
    if not callable(fn):
        raise LoadError(f"{path}:{name} is a {type(fn).__name__}, not a function")
    try:
        return fn()
    except LoadError:
        raise
    except Exception as e:  # noqa: BLE001
        raise LoadError(f"{path}:{name}() raised {exc_text(e)}") from None
