"""Safetensors checkpoints read and written one tensor at a time.

Reading goes through :func:`open_shard` (``safe_open``: the file is memory-mapped and a tensor is
materialised only when asked for). Writing uses :func:`write_shard`, which lays out the header
from shapes and dtypes known in advance and then writes each tensor's bytes as it is produced, so
a shard is never held in memory (``safetensors.torch.save_file`` needs every tensor of the file at
once). The format: an 8-byte little-endian header length, a JSON header
``{name: {dtype, shape, data_offsets}, "__metadata__": {...}}`` padded with spaces to 8 bytes, then
the tensors' bytes back to back.
"""
from __future__ import annotations

import json
import os
import struct

import torch

from core.errors import LoadError, PruneStudioError
from core.io.atomic import stop_check

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"

#: safetensors dtype names -> torch dtypes (the ones a checkpoint realistically holds)
DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
          "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
          "U8": torch.uint8, "BOOL": torch.bool}
_NAMES = {v: k for k, v in DTYPES.items()}


def shard_layout(d: str) -> tuple[dict[str, list[str]], dict]:
    """``({shard file: [tensor names in file order]}, index metadata)`` of the safetensors
    weights of directory ``d``: the shards named by ``model.safetensors.index.json``, or the single
    ``model.safetensors``. Anything else (``pytorch_model.bin``) cannot be streamed."""
    idx = os.path.join(d, INDEX)
    if os.path.isfile(idx):
        try:
            with open(idx, encoding="utf-8") as f:
                index = json.load(f)
            weight_map = index["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise LoadError(f"{idx}: not a safetensors index ({type(e).__name__}: {e})") from None
        shards: dict[str, list[str]] = {}
        for key, fname in weight_map.items():
            if os.path.basename(fname) != fname or not fname.endswith(".safetensors"):
                raise LoadError(f"{idx}: shard '{fname}' is not a .safetensors file of that folder")
            shards.setdefault(fname, []).append(key)
        for fname in shards:
            if not os.path.isfile(os.path.join(d, fname)):
                raise LoadError(f"{idx} names the shard {fname}, which is missing")
        # each shard's own order (the order its bytes lie in: sequential reads)
        for fname in shards:
            with open_shard(os.path.join(d, fname)) as h:
                order = {k: i for i, k in enumerate(h.keys())}
            missing = [k for k in shards[fname] if k not in order]
            if missing:
                raise LoadError(f"{idx} puts {missing[0]} in {fname}, which does not hold it")
            shards[fname].sort(key=order.__getitem__)
        return shards, dict(index.get("metadata") or {})
    single = os.path.join(d, SINGLE)
    if os.path.isfile(single):
        with open_shard(single) as h:
            return {SINGLE: list(h.keys())}, {}
    raise LoadError(f"{d}: streaming reads safetensors weights ({SINGLE}, or {INDEX} with its "
                    f"shards); this directory has neither")


def open_shard(path: str):
    """The memory-mapped shard (a context manager); tensors load one by one with ``get_tensor``."""
    from safetensors import safe_open
    try:
        return safe_open(path, framework="pt")
    except Exception as e:  # noqa: BLE001 - a truncated or foreign file
        raise LoadError(f"{path}: not a readable safetensors file ({type(e).__name__}: {e})") from None


def read_tensor(path: str, key: str):
    """One tensor of the shard at ``path``, through a handle of its own. ``safe_open`` maps the
    file and its tensors are views of the mapping: pages read through a handle that stays open
    count in the process's memory until it closes, so a whole shard read through one handle ends
    up resident. With a handle per tensor, the pages go with the tensor."""
    with open_shard(path) as h:
        return h.get_tensor(key)


def tensor_info(handle, key: str) -> tuple[str, list[int]]:
    """(safetensors dtype name, shape) of ``key`` without reading its data."""
    sl = handle.get_slice(key)
    return sl.get_dtype(), list(sl.get_shape())


def nbytes(dtype: str, shape) -> int:
    if dtype not in DTYPES:
        raise PruneStudioError(f"tensor dtype {dtype} is not supported by the streaming writer")
    n = torch.tensor([], dtype=DTYPES[dtype]).element_size()
    for s in shape:
        n *= int(s)
    return n


def write_shard(path: str, entries: list[tuple[str, str, list[int]]], produce, metadata=None,
                should_stop=None) -> int:
    """Write a safetensors file at ``path`` whose tensors are ``entries`` ``(name, dtype, shape)``
    in that order; ``produce(name)`` returns each tensor when its turn comes (one at a time).
    Returns the data bytes written. A tensor that does not match its entry raises."""
    header, off = {}, 0
    for name, dtype, shape in entries:
        n = nbytes(dtype, shape)
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [off, off + n]}
        off += n
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for name, dtype, shape in entries:
            stop_check(should_stop)
            t = produce(name)
            if _NAMES.get(t.dtype) != dtype or list(t.shape) != list(shape):
                raise PruneStudioError(f"{name}: produced {t.dtype} {list(t.shape)}, the header "
                                       f"says {dtype} {list(shape)}")
            raw = t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
            f.write(memoryview(raw))
            del t, raw
        f.flush()
        os.fsync(f.fileno())
    return off
