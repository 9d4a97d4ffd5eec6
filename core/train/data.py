"""Datasets for evaluation, sensitivity, sparse learning and fine-tuning.

``DATA`` specs (:func:`load_data`):

* ``digits`` - scikit-learn's bundled handwritten digits (1,797 real 8x8 images, 10 classes, works
  offline); ``digits@16`` upsamples to 16x16, ``digits@16x3`` also repeats to 3 channels.
* ``path/to/folder`` - an image folder, one sub-folder per class (torchvision ``ImageFolder``);
  images are resized to ``image_size`` (default 32) and normalised to [-1, 1].
* ``path/to/file.py:factory`` - ``factory()`` returns a torch ``Dataset`` or ``DataLoader`` (any
  task), or a pair ``(train, val)`` / a dict ``{"train": ..., "val": ...}`` of either.

A single dataset is split into train/validation deterministically (``val_fraction``, ``seed``).
Every failure raises :class:`~core.errors.LoadError` naming the folder, file or value at fault.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from core.errors import LoadError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


@dataclass
class Data:
    """Train and validation sets, with the loader settings used to iterate them."""

    name: str
    train_set: object  # Dataset (or a user DataLoader when the factory returned one)
    val_set: object | None
    batch_size: int = 64
    workers: int = 0
    num_classes: int | None = None
    sample_shape: tuple | None = None  # one input sample, e.g. (1, 8, 8)
    notes: list[str] = field(default_factory=list)

    def _loader(self, ds, shuffle: bool, seed: int = 0, sampler=None) -> DataLoader:
        if isinstance(ds, DataLoader):
            return ds
        gen = torch.Generator()
        gen.manual_seed(int(seed))
        return DataLoader(ds, batch_size=self.batch_size, shuffle=shuffle and sampler is None,
                          sampler=sampler, num_workers=self.workers, generator=gen,
                          drop_last=False, persistent_workers=False)

    def train_loader(self, epoch: int = 0, seed: int = 0, sampler=None) -> DataLoader:
        """Shuffled with a generator seeded by (seed, epoch): an epoch's order is reproducible."""
        return self._loader(self.train_set, True, seed * 100_003 + epoch, sampler)

    def val_loader(self) -> DataLoader | None:
        if self.val_set is None:
            return None
        return self._loader(self.val_set, False)

    def example_input(self, n: int = 1) -> torch.Tensor:
        """A batch of ``n`` real inputs (for tracing and pruning)."""
        loader = self.val_loader() or self.train_loader()
        x = split_batch(next(iter(loader)))[0]
        if isinstance(x, torch.Tensor):
            return x[:n].clone()
        return x

    @property
    def input_shape(self) -> str:
        """Example input shape as the CLI writes it, e.g. '1,1,8,8'."""
        if self.sample_shape is None:
            x = self.example_input(1)
            self.sample_shape = tuple(x.shape[1:])
        return ",".join(str(d) for d in (1, *self.sample_shape))


def split_batch(batch):
    """(inputs, target) from a batch: (x, y) / [x, y, ...] / {"input"|"x": .., "target"|"y": ..} / x."""
    if isinstance(batch, (tuple, list)):
        if len(batch) == 1:
            return batch[0], None
        return batch[0], batch[1]
    if isinstance(batch, dict):
        x = next((batch[k] for k in ("input", "inputs", "x", "image", "images") if k in batch), None)
        y = next((batch[k] for k in ("target", "targets", "y", "label", "labels") if k in batch), None)
        if x is None:
            raise LoadError(f"a data batch is a dict with keys {sorted(batch)[:6]}; name the input "
                            f"'input' or 'x' and the target 'target' or 'y'")
        return x, y
    return batch, None


# ----------------------------------------------------------------------------- built-in digits

def digits_dataset(size: int = 8, channels: int = 1) -> TensorDataset:
    """All 1,797 digits as float tensors (channels, size, size) in [0, 1], labels 0..9."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:  # pragma: no cover
        raise LoadError("the built-in 'digits' dataset needs scikit-learn (pip install scikit-learn)")
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    if size != 8:
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    if channels != 1:
        x = x.repeat(1, channels, 1, 1)
    return TensorDataset(x, torch.tensor(d.target, dtype=torch.long))


def _parse_digits(spec: str) -> tuple[int, int]:
    size, channels = 8, 1
    if "@" in spec:
        opt = spec.split("@", 1)[1]
        try:
            if "x" in opt:
                a, b = opt.split("x", 1)
                size, channels = int(a), int(b)
            else:
                size = int(opt)
        except ValueError:
            raise LoadError(f"data '{spec}': write digits@SIZE or digits@SIZExCHANNELS, e.g. digits@16x3") from None
        if not (4 <= size <= 512) or channels not in (1, 3):
            raise LoadError(f"data '{spec}': size must be 4..512 and channels 1 or 3")
    return size, channels


def split_dataset(ds: Dataset, val_fraction: float, seed: int = 0) -> tuple[Dataset, Dataset | None]:
    """Deterministic random split (a permutation seeded by ``seed``)."""
    if not (0.0 <= val_fraction < 1.0):
        raise LoadError(f"validation fraction must be in [0, 1), got {val_fraction}")
    n = len(ds)
    n_val = int(round(n * val_fraction))
    if val_fraction > 0 and (n_val == 0 or n_val == n):
        raise LoadError(f"cannot split {n} samples with validation fraction {val_fraction}")
    if n_val == 0:
        return ds, None
    perm = np.random.default_rng(seed).permutation(n)
    return Subset(ds, perm[n_val:].tolist()), Subset(ds, sorted(perm[:n_val].tolist()))


# ----------------------------------------------------------------------------- loading

def load_data(spec: str, batch_size: int = 64, workers: int = 0, val_fraction: float = 0.2,
              seed: int = 0, image_size: int = 32, trust=False) -> Data:
    """The data named by ``spec``; a ``file.py:factory`` runs only if ``trust`` (a
    :class:`core.io.trust.TrustPolicy` or bool) allows that file."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise LoadError(f"batch size must be a positive integer, got {batch_size}")
    if not isinstance(workers, int) or workers < 0:
        raise LoadError(f"workers must be 0 or more, got {workers}")
    if not (0.0 <= val_fraction < 1.0):
        raise LoadError(f"validation fraction must be in [0, 1), got {val_fraction}")
    spec = str(spec).strip()
    if spec == "digits" or spec.startswith("digits@"):
        size, ch = _parse_digits(spec)
        ds = digits_dataset(size, ch)
        tr, va = split_dataset(ds, val_fraction, seed)
        return Data(spec, tr, va, batch_size, workers, 10, (ch, size, size))
    from core.io.specs import split_factory_spec
    fs = split_factory_spec(spec)
    if fs:
        return _from_factory(spec, fs[0], fs[1], batch_size, workers, val_fraction, seed, trust)
    if spec.endswith(".py"):
        raise LoadError(f"{spec} is a Python file: name the function that returns the dataset, "
                        f"e.g. {spec}:make_dataset")
    if os.path.isdir(spec):
        return _from_folder(spec, batch_size, workers, val_fraction, seed, image_size)
    if os.path.exists(spec):
        raise LoadError(f"data '{spec}' is a file; give an image folder (one sub-folder per class), "
                        f"'digits' or file.py:factory")
    raise LoadError(f"data '{spec}' not found: give 'digits', an image folder or file.py:factory")


def _from_folder(path, batch_size, workers, val_fraction, seed, image_size) -> Data:
    from torchvision import datasets, transforms
    classes = sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise LoadError(f"image folder {path} has no class sub-folders (expected {path}/CLASS/image.png)")
    empty = [c for c in classes if not any(f.lower().endswith(IMAGE_SUFFIXES)
                                           for _, _, fs in os.walk(os.path.join(path, c)) for f in fs)]
    if empty:
        raise LoadError(f"image folder {path}: class folder(s) {', '.join(empty[:5])} hold no images "
                        f"({', '.join(IMAGE_SUFFIXES[:5])}, ...)")
    if not isinstance(image_size, int) or image_size < 1:
        raise LoadError(f"image size must be a positive integer, got {image_size}")
    tf = transforms.Compose([transforms.Resize((image_size, image_size)), transforms.ToTensor(),
                             transforms.Normalize([0.5, 0.5, 0.5], [0.5, 0.5, 0.5])])
    try:
        ds = datasets.ImageFolder(path, transform=tf, loader=_rgb_loader)
    except (OSError, RuntimeError, FileNotFoundError) as e:
        raise LoadError(f"image folder {path}: {type(e).__name__}: {' '.join(str(e).split())[:200]}") from None
    tr, va = split_dataset(ds, val_fraction, seed)
    return Data(path, tr, va, batch_size, workers, len(ds.classes), (3, image_size, image_size))


def _rgb_loader(p):
    from PIL import Image
    try:
        with open(p, "rb") as f:
            return Image.open(f).convert("RGB")
    except Exception as e:  # noqa: BLE001
        raise LoadError(f"image {p} cannot be read: {type(e).__name__}: {e}") from None


def _from_factory(spec, path, name, batch_size, workers, val_fraction, seed, trust) -> Data:
    from core.io.pyfile import call_factory
    obj = call_factory(path, name, "dataset factory", trust)

    def check(o, what):
        if isinstance(o, (Dataset, DataLoader)):
            if isinstance(o, Dataset) and not hasattr(o, "__len__"):
                raise LoadError(f"{spec}: the {what} has no length; return a map-style Dataset or a "
                                f"DataLoader")
            return o
        raise LoadError(f"{spec} returned {type(o).__name__} for the {what}; expected a torch "
                        f"Dataset or DataLoader (or a (train, val) pair of them)")

    notes = []
    if isinstance(obj, dict):
        if "train" not in obj:
            raise LoadError(f"{spec} returned a dict without a 'train' entry (keys: {sorted(obj)[:5]})")
        tr, va = check(obj["train"], "train set"), obj.get("val", obj.get("validation"))
        va = check(va, "validation set") if va is not None else None
    elif isinstance(obj, (tuple, list)):
        if len(obj) != 2:
            raise LoadError(f"{spec} returned {len(obj)} items; expected (train, val)")
        tr, va = check(obj[0], "train set"), check(obj[1], "validation set")
    else:
        obj = check(obj, "dataset")
        if isinstance(obj, DataLoader):
            tr, va = obj, obj
            notes.append("the factory returned one DataLoader: it is used for training and validation")
        else:
            tr, va = split_dataset(obj, val_fraction, seed)
    num_classes = None
    base = tr.dataset if isinstance(tr, DataLoader) else tr
    classes = getattr(base, "classes", None)
    if classes is not None:
        num_classes = len(classes)
    if len(base) == 0:
        raise LoadError(f"{spec}: the train set is empty")
    return Data(spec, tr, va, batch_size, workers, num_classes, None, notes)
