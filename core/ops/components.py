"""Connected components of the atom join graph: the channels of the coupled groups.

Most joins couple two whole slots index by index (a layer's output with the next one's input):
those are merged per slot first, each slot's atoms in the classes of the lowest slot of its chain,
index by index (``merged``). The other joins touch a few of the remaining atoms. Classes are
numbered in order of their lowest atom.

Two ways to the same numbering: up to ``LARGE`` atoms, whole-atom arrays (a representative per
atom) are cheapest; above it (an LLM: millions of atoms) fresh memory is what costs (page faults),
so apart from the result only a byte per atom is allocated, and the other joins are solved on the
atoms they touch alone.
"""
from __future__ import annotations

from bisect import bisect_right

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

LARGE = 1 << 22  # atoms


def atom_classes(n: int, slot_pairs: list, join_a: list, join_b: list):
    """(class of every atom, (starts of the slots merged onto another, starts of those)).
    ``slot_pairs``: (first atom of one slot, of the other, size) per whole-slot join;
    ``join_a[i][k]`` is joined with ``join_b[i][k]``."""
    src = dst = z = np.zeros(0, np.int64)
    if n == 0:
        return np.zeros(0, dtype=np.int64), (src, dst)
    if slot_pairs:
        pairs = np.array(slot_pairs, dtype=np.int64)
        starts, root = components_of(pairs[:, 0], pairs[:, 1], n, sort=True)  # chain's lowest
        size = np.empty(starts.size, np.int64)
        size[np.searchsorted(starts, pairs[:, 0])] = pairs[:, 2]
        size[np.searchsorted(starts, pairs[:, 1])] = pairs[:, 2]
        moved = root != starts
        src, dst, z = starts[moved], root[moved], size[moved]  # src ascending
    dt = np.int32 if n < 1 << 31 else np.int64  # (the result too: it is read, never summed)
    solve = _classes if n <= LARGE else _classes_large
    return solve(n, src, dst, z, join_a, join_b, dt), (src, dst)


def _classes(n, src, dst, z, join_a, join_b, dt) -> np.ndarray:
    rep = np.arange(n, dtype=np.int64)  # the lowest atom known in each atom's class (an index)
    if z.size:
        offs = offsets(z)
        rep[np.repeat(src, z) + offs] = np.repeat(dst, z) + offs
    if join_a:
        nodes, low = components_of(rep[np.concatenate(join_a)], rep[np.concatenate(join_b)], n)
        if nodes is None:  # every atom took part
            rep = low[rep]
        else:
            lowest = np.arange(n, dtype=np.int64)
            lowest[nodes] = low
            rep = lowest[rep]
    # rep[x] is now the lowest atom of x's class (rep[x] <= x, and every class's lowest atom
    # is its own rep): numbering the roots in order numbers the classes by their lowest atom
    roots = np.flatnonzero(rep == iota(n))
    number = np.empty(n, dt)  # (a cumulative sum of a bool mask is several times slower)
    number[roots] = iota(roots.size)
    return number[rep]


def _classes_large(n, src, dst, z, join_a, join_b, dt) -> np.ndarray:
    lowest = np.ones(n, bool)  # whether an atom is the lowest of its class
    fill_ranges(lowest, src, z, False)
    nonlow = low = None
    if join_a:
        a = onto_chains(join_a, src, dst, z)  # (indices: int64, as numpy wants them)
        b = onto_chains(join_b, src, dst, z)
        nodes, low = compact_components(a, b, n)
        del a, b
        moved = low != nodes
        nonlow, low = nodes[moved], low[moved]
        lowest[nonlow] = False
    # classes numbered by their lowest atoms, in order (written only there: a cumulative sum
    # would need a temporary the size of the result)
    cls = np.empty(n, dt)
    tops = np.flatnonzero(lowest)
    del lowest
    cls[tops] = iota(tops.size)
    del tops
    if nonlow is not None:
        cls[nonlow] = cls[low]  # low atoms are their classes' lowest: already numbered
    # a merged slot copies the classes of its chain's lowest slot (numbered above); one slice
    # at a time: no temporaries of that size
    for s, d, k in zip(src.tolist(), dst.tolist(), z.tolist()):
        cls[s:s + k] = cls[d:d + k]
    return cls


def onto_chains(arrays: list, src, dst, z) -> np.ndarray:
    """The atoms of ``arrays``, concatenated, with those of a merged slot moved onto
    its chain's lowest slot. An array within one slot (most of an LLM's) is shifted or kept as a
    whole; the others are moved together, atom by atom."""
    if not src.size:
        return np.concatenate(arrays, dtype=np.int64)
    starts, ends, shift = src.tolist(), (src + z).tolist(), (dst - src).tolist()
    parts, mixed = [], []
    for x in arrays:
        if x.size:
            lo, hi = int(x.min()), int(x.max())
            k = bisect_right(starts, lo) - 1
            if k == bisect_right(starts, hi) - 1:  # all in one gap or one merged slot
                inside_lo, inside_hi = k >= 0 and lo < ends[k], k >= 0 and hi < ends[k]
                if inside_lo == inside_hi:
                    parts.append(x + shift[k] if inside_lo else x)
                    continue
        mixed.append(len(parts))
        parts.append(x)
    if mixed:
        x = np.concatenate([parts[i] for i in mixed])
        k = np.searchsorted(src, x, side="right") - 1
        k[k < 0] = 0
        moved = np.where((x >= src[k]) & (x < src[k] + z[k]), x + (dst - src)[k], x)
        for i, piece in zip(mixed, np.split(moved, np.cumsum([parts[i].size for i in mixed])[:-1])):
            parts[i] = piece
    return np.concatenate(parts, dtype=np.int64)


def fill_ranges(mask: np.ndarray, starts: np.ndarray, sizes: np.ndarray, value) -> None:
    """mask[s:s + k] = value for every start s and size k (disjoint ranges)."""
    for s, k in zip(starts.tolist(), sizes.tolist()):
        mask[s:s + k] = value


def offsets(sizes: np.ndarray) -> np.ndarray:
    """0..k-1 for each size k, concatenated."""
    return iota(int(sizes.sum())) - np.repeat(np.cumsum(sizes) - sizes, sizes)


def compact_components(a: np.ndarray, b: np.ndarray, n: int):
    """(the atoms the edges a[i]-b[i] touch, ascending; the lowest atom of each one's
    component), without a sort: a byte per atom marks the touched ones, and their positions
    are written only where they lie (the rest of that lookup array is never touched)."""
    mark = np.zeros(n, bool)
    mark[a] = True
    mark[b] = True
    nodes = np.flatnonzero(mark)
    del mark
    pos = np.empty(n, np.int32 if nodes.size < 1 << 31 else np.int64)
    pos[nodes] = iota(nodes.size)
    ia, ib = pos[a], pos[b]
    del pos
    return nodes, nodes[lowest_in_component(ia, ib, nodes.size)]


_IOTA = np.arange(0, dtype=np.int64)


def iota(n: int) -> np.ndarray:
    """``arange(n)``, read-only, from a cache kept up to 2M entries: a fresh large array costs
    its page faults on every call, more than the arithmetic on it."""
    global _IOTA
    if n > _IOTA.size:
        if n > 1 << 21:
            return np.arange(n, dtype=np.int64)
        _IOTA = np.arange(max(n, 2 * _IOTA.size), dtype=np.int64)
        _IOTA.flags.writeable = False
    return _IOTA[:n]


def components_of(a: np.ndarray, b: np.ndarray, n: int, sort: bool = False):
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
    np.minimum.at(first, comp, iota(n))
    return first[comp]
