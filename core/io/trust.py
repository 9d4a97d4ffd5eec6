"""The trust model: nothing from a file the user opened runs as code before the user consented.

Code can enter through a pickle (``torch.load(weights_only=False)``), a Python file named by a
spec (a model factory on the command line, recorded in a ``.pstudio`` or a ``.psproj``, or in the
GUI's recent files), Hugging Face custom code (``auto_map``: ``trust_remote_code``), an
``--inputs`` function, a dataset factory or a loss function. Each of those places builds a
:class:`CodeRef` (what would run: its kind, absolute path and the sha256 of its bytes) and calls
:meth:`TrustPolicy.require` before running anything; without consent it raises
:class:`UntrustedCodeError` (a one-line :class:`~core.errors.LoadError` naming the file and
``--trust``) and nothing ran.

A :class:`TrustPolicy` is the consent: ``TrustPolicy(trust_all=True)`` is the command line's
``--trust``; ``TrustPolicy(hashes={sha256, ...})`` is what the GUI's dialog granted (exact file
contents). ``trust=True/False`` is accepted wherever a policy is (see :func:`as_policy`). A file
never grants trust to itself: projects and portable files store no ``trust`` field that counts.
:func:`core.io.sources.what_would_run` lists the refs a model spec would need, so that the CLI
and the GUI can ask before loading.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from core.errors import LoadError
from core.io.specs import split_factory_spec

SHORT_HASH = 12  # hex digits of the sha256 shown to the user


def file_sha256(path: str) -> str:
    """The sha256 of the file's bytes (a directory: of its ``*.py`` files and ``config.json``)."""
    h = hashlib.sha256()
    if os.path.isdir(path):
        for name in sorted(os.listdir(path)):
            if name.endswith(".py") or name == "config.json":
                h.update(name.encode() + b"\0")
                with open(os.path.join(path, name), "rb") as f:
                    h.update(hashlib.sha256(f.read()).digest())
        return h.hexdigest()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class CodeRef:
    """One piece of code that would run: ``kind`` ("model factory", "inputs function", "dataset
    factory", "loss function", "pickled code", "custom modelling code"), the absolute ``path`` of
    the file (a directory for Hugging Face custom code), the sha256 of its content, the function
    called (``name``) and what the pickle references (``detail``)."""
    kind: str
    path: str
    sha256: str
    name: str | None = None
    detail: str | None = None

    @property
    def short(self) -> str:
        return self.sha256[:SHORT_HASH]

    def describe(self) -> str:
        """One line naming exactly what would run."""
        where = f"{self.path}:{self.name}" if self.name else self.path
        extra = f", {self.detail}" if self.detail else ""
        return f"{self.kind} {where} (sha256 {self.short}{extra})"


def code_ref(kind: str, path: str, name: str | None = None, detail: str | None = None,
             sha256: str | None = None) -> CodeRef:
    """The :class:`CodeRef` of ``path`` as it is on disk now (LoadError when it is missing)."""
    apath = os.path.abspath(path)
    if not os.path.exists(apath):
        raise LoadError(f"file not found: {path}")
    return CodeRef(kind, apath, sha256 or file_sha256(apath), name, detail)


def function_ref(spec: str, kind: str) -> CodeRef | None:
    """The ref of a ``file.py:function`` spec (None when ``spec`` is not of that form)."""
    parts = split_factory_spec(spec or "")
    return code_ref(kind, parts[0], parts[1]) if parts else None


class UntrustedCodeError(LoadError):
    """Code would have run without consent; nothing ran. ``ref`` says what it was."""

    def __init__(self, ref: CodeRef, message: str | None = None):
        self.ref = ref
        super().__init__(message or f"{ref.describe()} would run Python code from a file; it was not "
                                    f"run: pass --trust (trust=True) if you trust its source")


class TrustPolicy:
    """Consent to run code: everything (``trust_all``, the CLI's ``--trust``) or exactly the files
    whose content hashes are in ``hashes`` (what the GUI's dialog granted). Immutable."""

    def __init__(self, trust_all: bool = False, hashes=()):
        self.trust_all = bool(trust_all)
        self.hashes = frozenset(hashes)

    def allows(self, ref: CodeRef) -> bool:
        return self.trust_all or ref.sha256 in self.hashes

    def require(self, ref: CodeRef, message: str | None = None) -> None:
        """Return if ``ref`` may run; else raise :class:`UntrustedCodeError`."""
        if not self.allows(ref):
            raise UntrustedCodeError(ref, message)

    def with_refs(self, refs) -> "TrustPolicy":
        """A policy that also allows ``refs``."""
        return TrustPolicy(self.trust_all, self.hashes | {r.sha256 for r in refs})

    def __bool__(self) -> bool:  # "was any consent given" (for callers that only pass it on)
        return self.trust_all or bool(self.hashes)

    def __repr__(self) -> str:
        what = "all" if self.trust_all else ", ".join(sorted(h[:SHORT_HASH] for h in self.hashes))
        return f"TrustPolicy({what or 'nothing'})"


def as_policy(trust) -> TrustPolicy:
    """``True`` -> trust everything, ``False``/``None`` -> nothing, a policy -> itself."""
    if isinstance(trust, TrustPolicy):
        return trust
    return TrustPolicy(trust_all=bool(trust))
