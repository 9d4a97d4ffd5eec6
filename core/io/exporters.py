"""Output forms of a pruned model: the ``EXPORTERS`` registry, keyed by suffix (``.pt``,
``.pstudio``, ``.onnx``) or ``hf-dir`` for the Hugging Face ``save_pretrained`` directory.

The CLI (``-o``: its suffix check, help and messages), the GUI's export dialog (:func:`file_filter`)
and ``gui/model_io.py`` all read this registry, so a new output format is one entry here.
Importing this module does not import torch (the CLI builds ``--help`` from it before torch is
loaded): every entry imports its writer when it writes.
"""
from __future__ import annotations

import os
import sys

from core.errors import PruneStudioError
from core.io import atomic
from core.registry import Registry


class Exporter:
    """One output form. ``write`` returns the max abs difference of its check against torch when
    it makes one (``checked_by`` says in what), else None."""

    suffixes: tuple[str, ...] = ()  # lower-case; the first one is the form's usual name
    directory = False  # the output is a directory, chosen by a path ending in "/" (or existing)
    summary = ""  # a few words for -o's help
    description = ""  # the --help epilog's text (may span lines)
    file_filter = ""  # the Qt file-dialog filter; "" when a file dialog cannot choose it
    needs_plan = ""  # why it cannot be written without a pruning plan ("" when it can)
    checked_by = ""  # what the written output is run in to compare it with torch
    report_key = ""  # the JSON report's field for that difference
    task = "export"  # the GUI's name for the writing task (its error dialog's title)

    @property
    def label(self) -> str:
        return "/".join(self.suffixes)

    def choices(self) -> list[str]:
        """How the "unknown suffix" error names this form."""
        return list(self.suffixes)

    def matches(self, path: str) -> bool:
        return path.lower().endswith(self.suffixes)

    def check_destination(self, path: str, force: bool = False, source=None) -> None:
        """Raise unless ``path`` may be written (run before the work starts)."""
        atomic.check_destination(path, force, source)

    def unsuitable(self, model) -> str | None:
        """Why ``model`` cannot be written in this form (None when it can)."""
        return None

    def write(self, model, path: str, *, inputs=None, force: bool = False, source=None,
              should_stop=None, spec: str | None = None, kept: dict | None = None, plan=None,
              trust: bool = False, meta: dict | None = None) -> float | None:
        raise NotImplementedError

    def notes(self, model, path: str) -> list[str]:
        """Lines the CLI prints after ``saved: PATH`` (how to load it back, caveats)."""
        return []


EXPORTERS: Registry[Exporter] = Registry("export format")


def _exporter(name: str):
    """Class decorator: register one instance of the class under ``name`` (entries hold no state)."""
    def deco(cls):
        EXPORTERS.register(name)(cls())
        return cls
    return deco


def _or_list(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


@_exporter(".pt")
class WholeModel(Exporter):
    suffixes = (".pt", ".pth")
    summary = "whole model"
    description = "whole pickled model (load with torch.load(..., weights_only=False))"
    file_filter = "PyTorch whole model (*.pt)"

    def write(self, model, path, *, force=False, source=None, should_stop=None, **_):
        from core.io.torchfile import save_whole
        save_whole(model, path, force=force, source=source, should_stop=should_stop)

    def notes(self, model, path):
        """Whole-model pickles name their classes' modules; warn when one is a user file that
        will only import with its folder on the Python path."""
        core_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        files = set()
        for m in model.modules():
            mod = sys.modules.get(type(m).__module__)
            f = getattr(mod, "__file__", None)
            if not f:
                continue
            folder = os.path.dirname(os.path.abspath(f))
            on_path = any(os.path.abspath(p or os.getcwd()) == folder for p in sys.path)
            private = type(m).__module__.startswith("_prunestudio_user_")
            if private or not on_path and "site-packages" not in folder and not f.startswith(core_dir):
                files.add(f)
        if not files:
            return []
        return [f"note: {path} pickles classes defined in {', '.join(sorted(files))}; loading it "
                f"needs that folder on PYTHONPATH, as the working folder or next to the file (or "
                f"save the portable .pstudio form)"]


@_exporter(".pstudio")
class Portable(Exporter):
    suffixes = (".pstudio",)
    summary = "portable"
    description = ("portable form: original model spec + kept indices + pruned weights, no pickled "
                   "code\n(load with core.io.portable.load_portable or use it as MODEL)")
    file_filter = "Portable PruneStudio (*.pstudio)"
    needs_plan = "the portable form stores a pruning plan"

    def write(self, model, path, *, force=False, source=None, should_stop=None, spec=None,
              kept=None, plan=None, trust=False, meta=None, **_):
        if spec is None or kept is None:
            raise PruneStudioError(f"{self.needs_plan}: prune first")
        from core.io.portable import save_portable
        save_portable(path, spec, kept, model.state_dict(), force=force, source=source, plan=plan,
                      trust=trust, meta=meta, should_stop=should_stop)


@_exporter(".onnx")
class Onnx(Exporter):
    suffixes = (".onnx",)
    summary = "verified in onnxruntime"
    description = ("ONNX (named inputs/outputs, dynamic batch), checked in onnxruntime against "
                   "torch;\nfrom an .onnx MODEL also against the original file with the removed "
                   "channels zeroed")
    file_filter = "ONNX (*.onnx)"
    checked_by = "onnxruntime"
    report_key = "onnx_max_abs_diff"
    task = "ONNX export"

    def write(self, model, path, *, inputs=None, force=False, source=None, should_stop=None,
              spec=None, kept=None, **_):
        from core.io.onnx.export import export_onnx
        oracle = None
        if spec is not None and kept is not None and spec.lower().endswith(".onnx"):
            # an imported ONNX model: also compare with the original file, channels zeroed
            from core.io.onnx.oracle import onnx_oracle

            def oracle(tmp):
                return onnx_oracle(spec, tmp, kept, inputs)
        return export_onnx(model, inputs, path, force=force, source=source, should_stop=should_stop,
                           oracle=oracle)


@_exporter("hf-dir")
class HuggingFaceDir(Exporter):
    directory = True
    summary = "Hugging Face save_pretrained directory"
    description = ("(a path ending in / or an existing directory; Hugging Face models) "
                   "save_pretrained\ndirectory; reload with from_pretrained (uniform pruning) or "
                   "core.adapters.hf.load_pruned,\nor use it as MODEL: hf:DIR")

    @property
    def label(self):
        return "DIR/"

    def choices(self):
        return ["a directory DIR/ (Hugging Face models)"]

    def matches(self, path):
        return path.endswith(("/", os.sep)) or os.path.isdir(path)

    def check_destination(self, path, force=False, source=None):
        from core.io.hf.directory import check_hf_destination
        check_hf_destination(path, force, source)

    def unsuitable(self, model):
        from core.io.hf.directory import is_hf_model
        if is_hf_model(model):
            return None
        others = [e.suffixes[0] for _, e in EXPORTERS.items() if not e.directory]
        return (f"a directory output is for Hugging Face models (save_pretrained); this model is a "
                f"{type(model).__name__}: use {_or_list(others)}")

    def write(self, model, path, *, force=False, source=None, should_stop=None, **_):
        from core.io.hf.directory import save_hf_dir
        save_hf_dir(model, path, force=force, source=source, should_stop=should_stop)

    def notes(self, model, path):
        name = type(model).__name__
        uniform = (getattr(model.config, "prunestudio", None) or {}).get("uniform", True)
        how = (f"{name}.from_pretrained('{path}')" if uniform else
               f"core.adapters.hf.load_pruned({name}, '{path}') (non-uniform pruning: the config "
               f"cannot describe it)")
        return [f"reload: {how}, or use hf:{path} as MODEL"]


# ----------------------------------------------------------------------------- queries

def exporter_for(path: str) -> Exporter | None:
    """The form ``path`` asks for (a directory form wins: ``out.pt/`` is a directory), or None."""
    entries = sorted((e for _, e in EXPORTERS.items()), key=lambda e: not e.directory)
    return next((e for e in entries if path and e.matches(path)), None)


def suffix_choices() -> str:
    """``.pt, .pth, .pstudio, .onnx or a directory DIR/ (Hugging Face models)``."""
    return _or_list([c for _, e in EXPORTERS.items() for c in e.choices()])


def file_filter() -> str:
    """The Qt file-dialog filter of every form a file dialog can choose, ``;;``-separated."""
    return ";;".join(e.file_filter for _, e in EXPORTERS.items() if e.file_filter)


def output_help() -> str:
    """The help of ``-o``."""
    return "pruned model: " + _or_list([f"{e.label} ({e.summary})" for _, e in EXPORTERS.items()])


def epilog() -> str:
    """The ``--help`` block listing the output forms, one aligned paragraph each."""
    lines = ["output (-o) by suffix:"]
    for _, e in EXPORTERS.items():
        label = e.label if e.directory else " / ".join(e.suffixes)
        first, *rest = e.description.split("\n")
        lines.append(f"  {label:<12} {first}")
        lines += [f"{'':15}{r}" for r in rest]
    return "\n".join(lines)
