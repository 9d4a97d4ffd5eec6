"""Channel atoms: the bookkeeping behind coupled groups.

Every prunable dimension of a parameter or buffer (a *slot*, e.g. ``conv1.weight`` dim 0) owns one
integer *atom* per index. Activations carry *labels*: for a set of their dimensions, which atom each
index came from (-1 where it came from no parameter, e.g. the model input). Whenever two positions
must be removed together (a residual add, a consumer's input columns, a BatchNorm's channel) their
atoms are *joined*; where a labelled position meets an unlabelled one that cannot shrink, the atom is
*blocked*. Connected components of joined atoms are the channels of the coupled groups.

Joins are only recorded during tracing and solved once at the end (``core.ops.components``), which
keeps tracing linear in model size.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from core.ops.components import atom_classes

NO_ATOM = -1  # position carries no prunable channel (model input, constant, unknown op output)


@dataclass(slots=True)  # hundreds are made per trace: slots make that and each read cheaper
class Slot:
    """One prunable dimension of one parameter or buffer."""

    index: int
    tensor_name: str  # qualified name in the model, e.g. "layer1.0.conv1.weight"
    module_name: str  # owning module ("" for the root module)
    attr: str  # attribute name on the owning module
    dim: int
    size: int
    start: int  # first atom id
    role: str  # "out" (a layer's output channels), "in" (input channels), "pass" (per-channel params)
    is_buffer: bool = False
    virtual: bool = False  # a module attribute sized by channels (e.g. LayerNorm without affine)
    # one read-only array per slot, made once: handlers ask for it on every call that touches it
    # (the table hands out views of one read-only range: cheaper than an arange each)
    atoms: np.ndarray = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        if self.atoms is None:
            a = np.arange(self.start, self.start + self.size, dtype=np.int64)
            a.flags.writeable = False
            self.atoms = a


@dataclass(slots=True)  # made for most calls of a trace
class Labeling:
    """Atom ids for a set of dimensions of one activation tensor.

    ``dims`` are the tensor's dimensions that carry channels; ``atoms`` has shape
    ``[shape[d] for d in dims]``. A labeling over several dims means a reshape split a channel
    dimension apart (``joint`` says which op did it); it must be merged back into one dimension by
    data-movement ops before any layer may consume it.
    """

    dims: tuple[int, ...]
    atoms: np.ndarray
    joint: str | None = None

    def __post_init__(self):
        if len(self.dims) > 1 and self.joint is None:
            self.joint = "reshape"


@dataclass
class AtomTable:
    slots: list[Slot] = field(default_factory=list)
    n_atoms: int = 0
    _slot_by_key: dict = field(default_factory=dict)
    _join_a: list = field(default_factory=list)
    _join_b: list = field(default_factory=list)
    blocked: list = field(default_factory=list)  # (atoms ndarray, reason)
    approx: list = field(default_factory=list)  # (atoms ndarray, reason)
    producers: list = field(default_factory=list)  # atoms a layer outputs through a derived weight
    # atoms whose channel count Python code may bake into sizes: read through x.shape / x.size(d),
    # or given as an explicit size to a reshape. Only their groups need a shape probe.
    shape_sensitive: list = field(default_factory=list)
    # id -> the atoms array of every slot: all >= 0, so joins of two of them (most joins: labels
    # pass through ops as the same array objects) skip the checks. The slots keep them alive.
    _slot_arrays: dict = field(default_factory=dict)
    _slot_pairs: list = field(default_factory=list)  # joins of two whole slots, index by index
    # set by components(): (starts of slots merged onto another, starts of those) - a merged
    # slot's atoms are in the classes of its chain's lowest slot, index by index
    merged: tuple = (np.zeros(0, np.int64), np.zeros(0, np.int64))
    _block: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # see _new_atoms
    _block_start: int = 0

    def _new_atoms(self, size: int) -> np.ndarray:
        """Atoms n_atoms .. n_atoms + size - 1: a view of a read-only range made 64K atoms at a
        time (a slot is made for every parameter dimension a trace meets)."""
        start = self.n_atoms
        off = start - self._block_start
        if off + size > self._block.size:
            block = np.arange(start, start + max(size, 1 << 16), dtype=np.int64)
            block.flags.writeable = False
            self._block, self._block_start, off = block, start, 0
        return self._block[off:off + size]

    def slot(self, tensor: torch.Tensor, dim: int, names: dict, role: str) -> Slot:
        """The slot of ``tensor`` along ``dim``, created on first use."""
        key = (id(tensor), dim)
        s = self._slot_by_key.get(key)
        if s is None:
            qual, is_buffer = names[id(tensor)]
            mod, _, attr = qual.rpartition(".")
            size = int(tensor.shape[dim])
            s = Slot(len(self.slots), qual, mod, attr, dim, size, self.n_atoms, role, is_buffer,
                     False, self._new_atoms(size))
            self.n_atoms += s.size
            self.slots.append(s)
            self._slot_by_key[key] = s
            self._slot_arrays[id(s.atoms)] = s.atoms
        elif role == "out" and s.role != "out":
            s.role = "out"
        return s

    def virtual_slot(self, module_name: str, attr: str, size: int) -> Slot:
        """A slot for a channel-sized module attribute that has no tensor of its own."""
        key = ("virtual", module_name, attr)
        s = self._slot_by_key.get(key)
        if s is None:
            s = Slot(len(self.slots), f"{module_name}.<{attr}>", module_name, attr, 0, size,
                     self.n_atoms, "pass", virtual=True, atoms=self._new_atoms(size))
            self.n_atoms += size
            self.slots.append(s)
            self._slot_by_key[key] = s
            self._slot_arrays[id(s.atoms)] = s.atoms
        return s

    def join(self, a: np.ndarray, b: np.ndarray, reason: str) -> None:
        """Couple positions a[i] and b[i]; where exactly one side has an atom, block it."""
        known = self._slot_arrays
        if id(a) in known and id(b) in known and a.size == b.size:
            if a.size:
                self._slot_pairs.append((int(a[0]), int(b[0]), a.size))
            return
        a = np.asarray(a, dtype=np.int64).ravel()
        b = np.asarray(b, dtype=np.int64).ravel()
        if a.size and a.size == b.size and a.min() >= 0 and b.min() >= 0:
            self._join_a.append(a)  # the common case (layer to layer): nothing to sort out
            self._join_b.append(b)
            return
        both = (a >= 0) & (b >= 0)
        if both.any():
            self._join_a.append(a[both])
            self._join_b.append(b[both])
        lone = (a >= 0) != (b >= 0)
        if lone.any():
            self.block(np.where(a >= 0, a, b)[lone], reason)

    def join_all(self, atoms: np.ndarray) -> None:
        """Couple every atom in ``atoms`` with every other (whole-group removal)."""
        atoms = np.asarray(atoms, dtype=np.int64).ravel()
        atoms = atoms[atoms >= 0]
        if atoms.size > 1:
            self._join_a.append(np.full(atoms.size - 1, atoms[0]))
            self._join_b.append(atoms[1:])

    def join_rows(self, rows: np.ndarray) -> None:
        """``join_all`` of every row of a 2-D array at once (grouped convs, norm groups): one edge
        array instead of one Python call per group."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.ndim != 2 or rows.shape[1] < 2:
            if rows.ndim == 2:
                return
            return self.join_all(rows)
        if (rows < 0).any():  # rows with unlabelled positions: join their labelled atoms only
            for row in rows:
                self.join_all(row)
            return
        self._join_a.append(np.repeat(rows[:, 0], rows.shape[1] - 1))
        self._join_b.append(rows[:, 1:].ravel())

    def has_atoms(self, atoms: np.ndarray) -> bool:
        """Whether any position of ``atoms`` carries an atom."""
        return id(atoms) in self._slot_arrays or bool((atoms >= 0).any())

    def has_all_atoms(self, atoms: np.ndarray) -> bool:
        """Whether every position of ``atoms`` carries an atom."""
        return id(atoms) in self._slot_arrays or not (atoms < 0).any()

    def block(self, atoms: np.ndarray, reason: str) -> None:
        atoms = np.asarray(atoms, dtype=np.int64).ravel()
        atoms = atoms[atoms >= 0]
        if atoms.size:
            self.blocked.append((np.unique(atoms), reason))

    def mark_approx(self, atoms: np.ndarray, reason: str) -> None:
        atoms = np.asarray(atoms, dtype=np.int64).ravel()
        atoms = atoms[atoms >= 0]
        if atoms.size:
            self.approx.append((np.unique(atoms), reason))

    def components(self) -> np.ndarray:
        """Class id of every atom (connected components of the join graph), numbered in order of
        each class's lowest atom; sets ``merged`` (see ``core.ops.components``)."""
        cls, self.merged = atom_classes(self.n_atoms, self._slot_pairs, self._join_a, self._join_b)
        return cls
