"""Channel atoms: the bookkeeping behind coupled groups.

Every prunable dimension of a parameter or buffer (a *slot*, e.g. ``conv1.weight`` dim 0) owns one
integer *atom* per index. Activations carry *labels*: for a set of their dimensions, which atom each
index came from (-1 where it came from no parameter, e.g. the model input). Whenever two positions
must be removed together (a residual add, a consumer's input columns, a BatchNorm's channel) their
atoms are *joined*; where a labelled position meets an unlabelled one that cannot shrink, the atom is
*blocked*. Connected components of joined atoms are the channels of the coupled groups.

Joins are only recorded during tracing and solved once at the end with a sparse connected-components
pass, which keeps tracing linear in model size.
"""
from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
import torch

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


@dataclass
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
        each class's lowest atom.

        Most joins couple two whole slots index by index (a layer's output with the next one's
        input): those are merged per slot first, each slot's atoms in the classes of the lowest
        slot of its chain, index by index (``merged``). The other joins only touch a few of the
        remaining atoms, so their components are solved on those atoms alone. On an LLM the
        atoms number millions and fresh memory is what costs (page faults): apart from the
        result, only one byte per atom is allocated."""
        n = self.n_atoms
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        lowest = np.ones(n, bool)  # whether an atom is the lowest of its class
        src = dst = z = np.zeros(0, np.int64)
        if self._slot_pairs:
            pairs = np.array(self._slot_pairs, dtype=np.int64)
            starts, root = _components_of(pairs[:, 0], pairs[:, 1], n, sort=True)  # chain's lowest
            size = np.empty(starts.size, np.int64)
            size[np.searchsorted(starts, pairs[:, 0])] = pairs[:, 2]
            size[np.searchsorted(starts, pairs[:, 1])] = pairs[:, 2]
            moved = root != starts
            src, dst, z = starts[moved], root[moved], size[moved]  # src ascending
            self.merged = (src, dst)
            _fill_ranges(lowest, src, z, False)
        nonlow = low = None
        dt = np.int32 if n < 1 << 31 else np.int64  # (the result too: it is read, never summed)
        if self._join_a:
            a = _onto_chains(self._join_a, src, dst, z, dt)
            b = _onto_chains(self._join_b, src, dst, z, dt)
            nodes, low = _compact_components(a, b, n)
            del a, b
            moved = low != nodes
            nonlow, low = nodes[moved], low[moved]
            lowest[nonlow] = False
        # classes numbered by their lowest atoms, in order (written only there: a cumulative sum
        # would need a temporary the size of the result)
        cls = np.empty(n, dt)
        tops = np.flatnonzero(lowest)
        del lowest
        cls[tops] = _iota(tops.size)
        del tops
        if nonlow is not None:
            cls[nonlow] = cls[low]  # low atoms are their classes' lowest: already numbered
        # a merged slot copies the classes of its chain's lowest slot (numbered above)
        if int(z.sum()) > 1 << 20:  # large slots (an LLM): no temporaries of that size
            for s, d, k in zip(src.tolist(), dst.tolist(), z.tolist()):
                cls[s:s + k] = cls[d:d + k]
        elif z.size:
            offs = _offsets(z)
            cls[np.repeat(src, z) + offs] = cls[np.repeat(dst, z) + offs]
        return cls


def _onto_chains(arrays: list, src, dst, z, dt) -> np.ndarray:
    """The atoms of ``arrays``, concatenated as ``dt``, with those of a merged slot moved onto
    its chain's lowest slot. Many large arrays (an LLM) are moved one by one: most lie in one
    slot, so a shift or nothing, without temporaries of the whole."""
    if not src.size:
        return np.concatenate(arrays, dtype=dt)
    if len(arrays) > 64 and sum(x.size for x in arrays) > 1 << 16:
        starts, ends, shift = src.tolist(), (src + z).tolist(), (dst - src).tolist()
        parts = []
        for x in arrays:
            if x.size:
                lo, hi = int(x.min()), int(x.max())
                k = bisect_right(starts, lo) - 1
                if k == bisect_right(starts, hi) - 1:  # all in one gap or one merged slot
                    inside_lo, inside_hi = k >= 0 and lo < ends[k], k >= 0 and hi < ends[k]
                    if inside_lo == inside_hi:
                        parts.append(x + shift[k] if inside_lo else x)
                        continue
            parts.append(_onto_chains([x], src, dst, z, x.dtype))
        return np.concatenate(parts, dtype=dt)
    x = np.concatenate(arrays, dtype=dt)
    k = np.searchsorted(src, x, side="right") - 1
    k[k < 0] = 0
    inside = (x >= src[k]) & (x < src[k] + z[k])
    return np.where(inside, x + (dst - src)[k], x).astype(dt, copy=False)


def _fill_ranges(mask: np.ndarray, starts: np.ndarray, sizes: np.ndarray, value) -> None:
    """mask[s:s + k] = value for every start s and size k (disjoint ranges)."""
    if int(sizes.sum()) > 1 << 20:
        for s, k in zip(starts.tolist(), sizes.tolist()):
            mask[s:s + k] = value
    elif sizes.size:
        mask[np.repeat(starts, sizes) + _offsets(sizes)] = value


def _offsets(sizes: np.ndarray) -> np.ndarray:
    """0..k-1 for each size k, concatenated."""
    return _iota(int(sizes.sum())) - np.repeat(np.cumsum(sizes) - sizes, sizes)


def _compact_components(a: np.ndarray, b: np.ndarray, n: int):
    """(the atoms the edges a[i]-b[i] touch, ascending; the lowest atom of each one's
    component), without a sort: a byte per atom marks the touched ones, and their positions
    are written only where they lie (the rest of that lookup array is never touched)."""
    mark = np.zeros(n, bool)
    mark[a] = True
    mark[b] = True
    nodes = np.flatnonzero(mark)
    del mark
    pos = np.empty(n, np.int32 if nodes.size < 1 << 31 else np.int64)
    pos[nodes] = _iota(nodes.size)
    ia, ib = pos[a], pos[b]
    del pos
    return nodes, nodes[lowest_in_component(ia, ib, nodes.size)]


_IOTA = np.arange(0, dtype=np.int64)


def _iota(n: int) -> np.ndarray:
    """``arange(n)``, read-only, from a cache kept up to 2M entries: a fresh large array costs
    its page faults on every call, more than the arithmetic on it."""
    global _IOTA
    if n > _IOTA.size:
        if n > 1 << 21:
            return np.arange(n, dtype=np.int64)
        _IOTA = np.arange(max(n, 2 * _IOTA.size), dtype=np.int64)
        _IOTA.flags.writeable = False
    return _IOTA[:n]


def _components_of(a: np.ndarray, b: np.ndarray, n: int, sort: bool = False):
    """Components of the graph of edges a[i]-b[i] over atoms 0..n-1: (the atoms the edges touch,
    ascending, or None for all n; the lowest atom of each one's component). When edges are few,
    only the atoms they touch enter the graph (found by a sort)."""
    if sort or a.size * 8 < n:
        nodes, inv = np.unique(np.concatenate([a, b]), return_inverse=True)
        return nodes, nodes[lowest_in_component(inv[:a.size], inv[a.size:], nodes.size)]
    return None, lowest_in_component(a, b, n)


def lowest_in_component(a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    """Per node 0..n-1 of the undirected graph with edges a[i]-b[i]: the lowest node of its
    connected component. Hooking each edge's higher root onto the lower one, then jumping pointers
    until every node points at its root, takes a few whole-array rounds on the graphs a trace
    makes (chains and stars); scipy's traversal, whose fixed cost is larger on small graphs,
    takes over if the rounds do not settle quickly."""
    # (int32 where it fits: on an LLM these arrays are millions long, and fresh memory is slow)
    lab = np.arange(n, dtype=np.int32 if n < 1 << 31 else np.int64)
    for _ in range(8):
        la, lb = lab[a], lab[b]
        lo, hi = np.minimum(la, lb), np.maximum(la, lb)
        diff = lo != hi
        if not diff.any():
            return lab
        np.minimum.at(lab, hi[diff], lo[diff])  # hi are roots: this links whole trees
        nxt = np.empty_like(lab)  # two buffers in turn: no fresh array per jump
        while True:
            np.take(lab, lab, out=nxt, mode="clip")  # (every index is valid: clip is never used)
            if np.array_equal(nxt, lab):
                break
            lab, nxt = nxt, lab
    g = coo_matrix((np.ones(a.size, dtype=np.float64), (a, b)), shape=(n, n))
    comp = connected_components(g.tocsr(), directed=False)[1]
    first = np.full(int(comp.max()) + 1 if comp.size else 0, n, np.int64)
    np.minimum.at(first, comp, _iota(n))
    return first[comp]
