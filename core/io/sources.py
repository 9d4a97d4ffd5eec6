"""Load the user's model from a command-line style spec: the ``SOURCES`` registry, one entry per
kind of spec (:func:`core.io.specs.spec_kind`), used both for real loading (:func:`load_model`)
and for building the architecture on the meta device (:func:`build_meta_model`).

``MODEL`` specs:

* ``torchvision:NAME`` - a torchvision architecture with random weights; ``torchvision:NAME@WEIGHTS``
  (e.g. ``@DEFAULT`` or ``@IMAGENET1K_V1``) uses torchvision's pretrained weights *only if they are
  already in the torch hub cache* - nothing is ever downloaded.
* ``path/to/file.py:factory`` - import the file by path and call ``factory()`` (needs consent).
* ``hf:path/to/dir`` - a local Hugging Face model directory (``config.json`` + weights, as written by
  ``save_pretrained``): the class named in ``config.architectures`` is built with its pretrained
  weights from the directory, local files only (never downloaded; ``HF_HUB_OFFLINE`` is honoured
  trivially). A directory written by PruneStudio from a non-uniformly pruned model is rebuilt with
  :func:`core.adapters.hf.load_pruned`. A hub id (``hf:org/name``) is accepted only when it is already in the
  local Hugging Face cache. Custom modelling code (``auto_map``) needs consent.
* ``timm:NAME`` - a timm architecture with random weights; ``timm:NAME@pretrained`` uses timm's
  pretrained weights only when they are already in the local Hugging Face / torch hub cache.
* ``demo`` - the built-in demo network (:mod:`core.models.demo`).
* ``model.pt`` / ``model.pth`` - a saved whole model. Loading is SAFE BY DEFAULT
  (``torch.load(weights_only=True)``); a pickled module contains code and needs ``trust=True``.
  A file holding only a state dict needs an architecture: ``load_model("torchvision:resnet18",
  weights="sd.pt")``.
* ``model.onnx`` - an ONNX graph, imported into plain torch layers and calls
  (:mod:`core.io.onnx.importer`); an ONNX file is data: nothing in it runs as code. Its example input
  comes from the graph's input shapes (:meth:`Source.input_shape`; dynamic dims need
  ``--input-shape``).
* ``model.pstudio`` - PruneStudio's portable form (see :mod:`core.io.portable_format`); the spec it
  records is loaded as recorded (a missing file is an error, never looked for elsewhere) and needs
  consent like any other.

``trust`` is a :class:`core.io.trust.TrustPolicy` (or a bool: True trusts everything, the CLI's
``--trust``): no code from a file runs unless it allows that file's content
(:class:`~core.io.trust.UntrustedCodeError` otherwise). :func:`what_would_run` lists, without
running anything, the code a spec would run, so that callers can ask first.

Every failure raises :class:`~core.errors.LoadError` with one line naming the file and the problem.
A new kind of spec is one :class:`Source` entry here (and its syntax in :mod:`core.io.specs`).
"""
from __future__ import annotations

import os

import torch
from torch import nn

from core.errors import LoadError
from core.io import source_zoo
from core.io.hf import source as source_hf
from core.io.portable_format import apply_portable, is_portable, original_spec, read_portable
from core.io.pyfile import call_factory
from core.io.specs import clean_spec, spec_body, spec_kind, split_factory_spec
from core.io.torchfile import as_state_dict, check_readable, load_weights, pickled_code, read_torch_file
from core.io.trust import CodeRef, as_policy, code_ref
from core.registry import Registry


class Source:
    """One kind of model spec. Entries implement :meth:`build`; :meth:`load` adds the ``--weights``
    file; :meth:`build_meta` makes the architecture with every tensor on the meta device."""

    #: its tensors come from local files, whose size tells the memory it needs (see disk_bytes)
    from_disk = False

    def build(self, spec: str, trust, weights: str | None) -> nn.Module:
        """The model; ``weights`` is only passed to refuse a conflict with the source's own
        pretrained weights - :meth:`load` loads it afterwards."""
        raise NotImplementedError

    def load(self, spec: str, trust=False, weights: str | None = None) -> nn.Module:
        model = self.build(spec, trust, weights)
        if weights is not None:
            load_weights(model, weights, what=spec)
        return model.eval()

    def build_meta(self, spec: str, trust=False) -> nn.Module:
        """By default the architecture is constructed under ``torch.device('meta')``: no memory
        is allocated and no weights are read."""
        with torch.device("meta"):
            return self.build(spec, trust, None)

    def disk_bytes(self, spec: str) -> int | None:
        """Bytes of the files its tensors come from (only for ``from_disk`` sources)."""
        return None

    def code(self, spec: str) -> list[CodeRef]:
        """The code loading ``spec`` would run (read without running anything); none by default."""
        return []

    def input_shape(self, spec: str) -> str | None:
        """The example input shape(s) the model itself declares (``"1,3,224,224"``, several
        joined by ``;``), or None when only the user can say."""
        return None

    def default_input(self, spec: str) -> tuple[str, str] | None:
        """(shape, dtype) to use when the user names no input: a suggestion, unlike
        :meth:`input_shape`, which any other shape would not run with."""
        return None


SOURCES: Registry[Source] = Registry("model source")


def _source(name: str):
    """Class decorator: register one instance of the class under ``name`` (entries hold no state)."""
    def deco(cls):
        SOURCES.register(name)(cls())
        return cls
    return deco


@_source("demo")
class DemoSource(Source):
    def build(self, spec, trust, weights):
        from core.models.demo import demo_model
        return demo_model()


@_source("torchvision")
class TorchvisionSource(Source):
    def build(self, spec, trust, weights):
        return source_zoo.load_torchvision(spec_body(spec), weights is not None)

    def build_meta(self, spec, trust=False):
        with torch.device("meta"):  # @WEIGHTS is not read: the structure only
            return source_zoo.load_torchvision(spec_body(spec).partition("@")[0], False)


@_source("timm")
class TimmSource(Source):
    def build(self, spec, trust, weights):
        return source_zoo.load_timm(spec_body(spec), weights is not None)

    def build_meta(self, spec, trust=False):
        with torch.device("meta"):
            return source_zoo.load_timm(spec_body(spec).partition("@")[0], False)


@_source("hf")
class HuggingFaceSource(Source):
    from_disk = True

    def build(self, spec, trust, weights):
        return source_hf.load_hf(spec_body(spec), trust=trust, have_weights=weights is not None)

    def build_meta(self, spec, trust=False):
        return source_hf.build_hf_meta(spec_body(spec), trust)

    def disk_bytes(self, spec):
        return source_hf.hf_weight_bytes(spec_body(spec))

    def code(self, spec):
        ref = source_hf.custom_code_ref(spec_body(spec))
        return [ref] if ref is not None else []

    def default_input(self, spec):
        return source_hf.default_input(spec_body(spec))


@_source("onnx")
class OnnxSource(Source):
    """``model.onnx``: imported (:mod:`core.io.onnx.importer`), never executed."""
    from_disk = True

    def build(self, spec, trust, weights):
        if weights is not None:
            raise LoadError(f"{spec}: --weights does not apply to an ONNX model (its weights are "
                            f"in the file)")
        from core.io.onnx.importer import import_onnx
        return import_onnx(spec)

    def build_meta(self, spec, trust=False):
        return self.build(spec, trust, None)  # build_meta_model swaps in meta tensors

    def disk_bytes(self, spec):
        return os.path.getsize(spec) if os.path.isfile(spec) else None

    def input_shape(self, spec):
        from core.io.onnx.importer import declared_input_shape
        return declared_input_shape(spec)


@_source("file")
class FactorySource(Source):
    """``path/to/file.py:factory``."""

    def build(self, spec, trust, weights):
        path, name = split_factory_spec(spec)
        model = call_factory(path, name, "model factory", trust)
        if not isinstance(model, nn.Module):
            raise LoadError(f"{path}:{name}() returned {type(model).__name__}, not a torch.nn.Module")
        return model

    def code(self, spec):
        path, name = split_factory_spec(spec)
        return [code_ref("model factory", path, name)] if os.path.isfile(path) else []


@_source("pt")
class SavedFileSource(Source):
    """A saved model file: what it holds decides how it loads (a portable dict is rebuilt whatever
    the file's suffix)."""
    from_disk = True

    def build(self, spec, trust, weights):
        path = spec
        if path.lower().endswith(".py"):
            raise LoadError(f"{path} is a Python file: name the function that builds the model, "
                            f"e.g. {path}:make_model")
        check_readable(path)
        obj = read_torch_file(path, trust=trust)
        if is_portable(obj):
            return SOURCES.get("pstudio").rebuild(path, trust)
        if isinstance(obj, nn.Module):
            return obj
        if isinstance(obj, dict) and isinstance(obj.get("model"), nn.Module):
            return obj["model"]
        if isinstance(obj, torch.jit.ScriptModule):
            raise LoadError(f"{path} is a TorchScript module; PruneStudio needs the eager model")
        sd = as_state_dict(obj)
        if sd is not None:
            raise LoadError(f"{path} holds only weights (a state dict of {len(sd)} tensors), not a "
                            f"model: give the architecture as MODEL (torchvision:NAME or "
                            f"file.py:factory) and this file with --weights")
        raise LoadError(f"{path} holds a {type(obj).__name__}, not a torch.nn.Module or a state dict")

    def build_meta(self, spec, trust=False):
        # a saved file is read (memory-mapped by torch); build_meta_model swaps in meta tensors
        return self.load(spec, trust)

    def disk_bytes(self, spec):
        return os.path.getsize(spec) if os.path.isfile(spec) else None

    def code(self, spec):
        """The pickle's own code (the globals ``torch.load(weights_only=True)`` refuses), or, for
        a portable file, the code of the spec it records."""
        if not os.path.isfile(spec) or os.path.getsize(spec) == 0:
            return []
        ref = pickled_code(spec)
        if ref is not None:
            return [ref]
        try:
            d = read_torch_file(spec, trust=False, mmap=True)
        except LoadError:
            return []  # unreadable: the load says why
        if is_portable(d) and isinstance(d.get("model_spec"), str):
            return what_would_run(d["model_spec"])
        return []


@_source("pstudio")
class PortableSource(SavedFileSource):
    """``model.pstudio``: the original model is loaded from the spec it records (through this
    registry), then sliced to the kept indices and given the pruned weights."""

    rebuilding: set = set()  # files being rebuilt now: one naming itself (or a loop) is refused

    def rebuild(self, path: str, trust=False) -> nn.Module:
        d = read_portable(path)
        spec = original_spec(d, path)
        key = os.path.realpath(path)
        if key in self.rebuilding:
            raise LoadError(f"{path} names itself (or a file that names it) as its original model; "
                            f"a .pstudio must name the original architecture")
        self.rebuilding.add(key)
        try:
            model = load_model(spec, trust=trust)
        except LoadError as e:
            raise type(e)(*_rewrap(e, f"{path}: cannot rebuild the original model '{spec}': {e}")) \
                from None
        finally:
            self.rebuilding.discard(key)
        return apply_portable(model, d, path, spec)


def _rewrap(e: LoadError, message: str) -> tuple:
    """Constructor arguments re-raising ``e``'s type with a longer message (a refusal keeps its ref)."""
    ref = getattr(e, "ref", None)
    return (ref, message) if ref is not None else (message,)


# ----------------------------------------------------------------------------- public API

def _checked(spec) -> str:
    if not isinstance(spec, str) or not spec.strip():
        raise LoadError("no model given: use torchvision:NAME, hf:DIR, timm:NAME, "
                        "path/to/file.py:factory or a saved model file")
    return clean_spec(spec)


def what_would_run(spec: str) -> list[CodeRef]:
    """The code loading ``spec`` would run, each as a :class:`~core.io.trust.CodeRef` (kind, path,
    sha256), found without running anything: a factory file, a pickle's code, a portable file's
    recorded spec, Hugging Face custom code. Empty when nothing would run (or the spec is
    unreadable: loading it then says why)."""
    spec = _checked(spec)
    refs = SOURCES.get(spec_kind(spec)).code(spec)
    return list(dict.fromkeys(refs))


def declared_input_shape(spec: str) -> str | None:
    """The example input shape the model named by ``spec`` declares (an ONNX graph's inputs), or
    None; raises :class:`~core.errors.LoadError` when it declares dynamic dims."""
    spec = _checked(spec)
    return SOURCES.get(spec_kind(spec)).input_shape(spec)


def default_input(spec: str) -> tuple[str, str] | None:
    """(shape, dtype) ``spec``'s model takes when the user names none (see
    :meth:`Source.default_input`), or None."""
    spec = _checked(spec)
    return SOURCES.get(spec_kind(spec)).default_input(spec)


def load_model(spec: str, trust=False, weights: str | None = None, seed: int = 0) -> nn.Module:
    """Build or load the model named by ``spec`` (see the module docstring), in eval mode.

    ``weights``: a local state-dict file loaded (strictly) into the architecture.
    ``trust``: the consent to run code (:class:`~core.io.trust.TrustPolicy`, or True for all).
    ``seed``: random weights (``torchvision:NAME``, ``timm:NAME``, factories) are drawn from it, so
    the same spec and seed give the same model; the caller's random state is left as it was.
    """
    spec = _checked(spec)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return SOURCES.get(spec_kind(spec)).load(spec, trust=as_policy(trust), weights=weights)


def build_meta_model(spec: str, trust=False) -> nn.Module:
    """The architecture named by ``spec`` with every tensor on the meta device (no memory used):
    zoo, factory and demo specs are constructed under ``torch.device('meta')``, a Hugging Face
    model from its config; a saved file is memory-mapped and its tensors replaced by meta tensors."""
    spec = _checked(spec)
    model = SOURCES.get(spec_kind(spec)).build_meta(spec, as_policy(trust))
    from core.analysis.probe import meta_copy
    if any(t.device.type != "meta" for t in list(model.parameters()) + list(model.buffers())):
        model = meta_copy(model)  # a factory that allocated explicitly on the CPU, a saved file
    return model.eval()
