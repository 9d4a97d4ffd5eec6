"""Will the model fit in memory? Its size is known *before* it is built - from a meta-device
construction or from the size of the files its weights come from - so a model too large for this
machine is refused with an offer to analyse its structure on the meta device instead."""
from __future__ import annotations

import os

from torch import nn

from core.errors import LoadError
from core.io.sources import SOURCES, build_meta_model
from core.io.specs import spec_kind

MEMORY_ENV = "PRUNESTUDIO_AVAILABLE_MEMORY"  # bytes; overrides /proc/meminfo (tests, containers)
#: analysing and pruning holds the original, a pruned copy, the verification copy and activations
MEMORY_FACTOR = 3.0


class TooLargeError(LoadError):
    """The model's parameters do not fit in the memory available; analyse it on the meta device."""


def available_memory() -> int | None:
    """Bytes of memory available now (``MemAvailable`` in /proc/meminfo, or the env override)."""
    env = os.environ.get(MEMORY_ENV)
    if env:
        try:
            return int(float(env))
        except ValueError:
            raise LoadError(f"{MEMORY_ENV}='{env}' is not a number of bytes") from None
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def tensor_bytes(model: nn.Module) -> int:
    """Bytes of every parameter and buffer (works on meta tensors: nothing is allocated)."""
    seen, total = set(), 0
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) in seen:
            continue
        seen.add(id(t))
        total += t.numel() * t.element_size()
    return total


def estimate_bytes(spec: str, weights: str | None = None, trust=False) -> int | None:
    """Parameter and buffer bytes of the model named by ``spec``, known *before* building it:
    from the files a saved or Hugging Face model is read from, from the ``weights`` file, or from
    a meta-device construction (a factory runs only as ``trust`` allows). None when it cannot be
    told cheaply."""
    spec = (spec or "").strip()
    try:
        source = SOURCES.get(spec_kind(spec))
        if source.from_disk:
            return source.disk_bytes(spec)
        if weights and os.path.isfile(weights):
            return os.path.getsize(weights)
        return tensor_bytes(build_meta_model(spec, trust=trust))
    except Exception:  # noqa: BLE001 - the real load will report what is wrong
        return None


def _gb(n: float) -> str:
    return f"{n / 2**30:.2f} GB" if n >= 2**30 else f"{n / 2**20:.1f} MB"


def check_memory(spec: str, weights: str | None = None, input_hint: str = "",
                 trust=False) -> int | None:
    """Raise :class:`TooLargeError` if the model named by ``spec`` would not fit in memory; the
    message offers the meta-device analysis instead. Returns the estimated bytes. ``trust``: the
    consent the load has (a factory's meta construction runs its code)."""
    need = estimate_bytes(spec, weights, trust)
    avail = available_memory()
    if need is None or avail is None:
        return need
    if need * MEMORY_FACTOR > avail:
        shape = f" {input_hint}" if input_hint else " --input-shape ..."
        raise TooLargeError(
            f"{spec} is too large for this machine's memory: its parameters take about {_gb(need)} "
            f"and analysing and pruning it needs about {_gb(need * MEMORY_FACTOR)}, but only "
            f"{_gb(avail)} is available; analyse its structure on the meta device instead "
            f"(no weights are loaded): python main.py graph {spec}{shape} --meta")
    return need
