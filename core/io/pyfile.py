"""Import the user's Python file by path and call a function from it (model factories, example
inputs, datasets, loss functions), with consent (:mod:`core.io.trust`). Failures are one-line
LoadErrors naming the file.

A file is imported once per process and content: the module is cached by its resolved path and
the sha256 of its bytes, so ``net.py:build`` and ``net.py:inputs`` share one module (and one class
object, which pickling a model built from it needs); the code executed is the very bytes that were
hashed and consented to."""
from __future__ import annotations

import hashlib
import importlib.util
import os
import sys

from core.errors import LoadError
from core.io.messages import exc_text
from core.io.trust import CodeRef, as_policy

#: (resolved path, sha256) -> module
_MODULES: dict = {}


def _module_name(apath: str, sha: str) -> str:
    """The module's own name when that is free (so a whole model saved from it unpickles later
    from the same folder), else a private unique name."""
    stem = os.path.splitext(os.path.basename(apath))[0]
    existing = sys.modules.get(stem)
    if stem.isidentifier() and (existing is None or getattr(existing, "__prunestudio_key__", None)
                                == (apath, sha)):
        return stem
    tag = hashlib.sha1(f"{apath}|{sha}".encode()).hexdigest()[:10]
    return f"_prunestudio_user_{stem if stem.isidentifier() else 'mod'}_{tag}"


def import_file(path: str, trust=False, kind: str = "Python file", name: str | None = None):
    """The module defined by the Python file ``path``, imported only if ``trust`` (a
    :class:`~core.io.trust.TrustPolicy` or bool) allows its content; ``kind`` and ``name`` (the
    function that will be called) name it in the refusal."""
    if not os.path.exists(path):
        raise LoadError(f"file not found: {path}")
    if os.path.isdir(path):
        raise LoadError(f"{path} is a folder, not a Python file")
    apath = os.path.realpath(path)
    with open(apath, "rb") as f:
        source = f.read()
    sha = hashlib.sha256(source).hexdigest()
    as_policy(trust).require(CodeRef(kind, os.path.abspath(path), sha, name))
    module = _MODULES.get((apath, sha))
    if module is not None:
        return module
    mod_name = _module_name(apath, sha)
    folder = os.path.dirname(apath)
    added = folder not in sys.path
    if added:
        sys.path.insert(0, folder)  # the file may import its neighbours
    try:
        spec = importlib.util.spec_from_file_location(mod_name, apath)
        if spec is None or spec.loader is None:
            raise LoadError(f"{path} cannot be imported as a Python module")
        module = importlib.util.module_from_spec(spec)
        module.__prunestudio_key__ = (apath, sha)
        sys.modules[mod_name] = module
        try:
            exec(compile(source, apath, "exec"), module.__dict__)  # the bytes that were hashed
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
    _MODULES[(apath, sha)] = module
    return module


def get_function(path: str, name: str, what: str, trust=False):
    """The callable ``name`` of the file ``path`` (imported with consent, see :func:`import_file`)."""
    module = import_file(path, trust, what, name)
    fn = getattr(module, name, None)
    if fn is None:
        avail = sorted(k for k, v in vars(module).items() if callable(v) and not k.startswith("_")
                       and getattr(v, "__module__", None) == module.__name__)
        hint = f" (it defines: {', '.join(avail[:8])})" if avail else ""
        raise LoadError(f"{path} has no {what} '{name}'{hint}")
    if not callable(fn):
        raise LoadError(f"{path}:{name} is a {type(fn).__name__}, not a function")
    return fn


def call_factory(path: str, name: str, what: str, trust=False):
    """``name()`` from the file ``path``; ``what`` ("model factory", "inputs function", ...)
    names the function in the errors; ``trust`` must allow the file (see :func:`import_file`)."""
    fn = get_function(path, name, what, trust)
    try:
        return fn()
    except LoadError:
        raise
    except Exception as e:  # noqa: BLE001
        raise LoadError(f"{path}:{name}() raised {exc_text(e)}") from None
