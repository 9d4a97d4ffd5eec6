"""The atom-level connected components (core.ops.atoms) against a plain union-find reference."""
import numpy as np
import pytest
import torch

from core.ops import components
from core.ops.atoms import AtomTable
from core.ops.components import lowest_in_component


def _reference_lowest(a, b, n):
    parent = list(range(n))

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for x, y in zip(a.tolist(), b.tolist()):
        rx, ry = find(x), find(y)
        if rx != ry:
            parent[max(rx, ry)] = min(rx, ry)
    return np.array([find(x) for x in range(n)])


@pytest.mark.parametrize("seed", range(6))
def test_lowest_in_component_matches_union_find(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 400))
    m = int(rng.integers(0, 2 * n))
    a, b = rng.integers(0, n, m), rng.integers(0, n, m)
    np.testing.assert_array_equal(lowest_in_component(a, b, n), _reference_lowest(a, b, n))


def test_long_chains_in_any_edge_order():
    # paths in awkward orders: a path through nodes in bit-reversed order needs more hooking
    # rounds than the fast path allows, so scipy's traversal must give the same answer
    n = 4096
    path = np.array([int(format(i, "012b")[::-1], 2) for i in range(n)])
    np.testing.assert_array_equal(lowest_in_component(path[:-1], path[1:], n), np.zeros(n))
    order = np.arange(n - 1)[::-1]
    a, b = order + 1, order
    np.testing.assert_array_equal(lowest_in_component(a, b, n), np.zeros(n, np.int64))
    rng = np.random.default_rng(0)
    perm = rng.permutation(n)
    a, b = perm[:-1], perm[1:]
    np.testing.assert_array_equal(lowest_in_component(a, b, n), np.zeros(n, np.int64))


@pytest.mark.parametrize("large", [False, True], ids=["whole-atom arrays", "large-model path"])
@pytest.mark.parametrize("seed", range(4))
def test_atom_table_components_match_reference(seed, large, monkeypatch):
    """Slot-pair joins, atom joins with unlabelled positions and whole-group joins at once:
    classes numbered by their lowest atom, as the reference union-find gives them - by both
    solvers (the one for millions of atoms is forced here on a small table)."""
    if large:
        monkeypatch.setattr(components, "LARGE", 0)
    rng = np.random.default_rng(seed)
    t = AtomTable()
    names, tensors = {}, []
    for i in range(30):
        x = torch.zeros(int(rng.integers(1, 9)) * 4)
        names[id(x)] = (f"m{i}.weight", False)
        tensors.append(x)
    slots = [t.slot(x, 0, names, "pass") for x in tensors]
    ea, eb = [], []
    for _ in range(25):
        s1, s2 = rng.choice(len(slots), 2)
        if slots[s1].size == slots[s2].size:
            t.join(slots[s1].atoms, slots[s2].atoms, "pair")  # a whole-slot join
            ea += slots[s1].atoms.tolist()
            eb += slots[s2].atoms.tolist()
    for _ in range(10):  # parts of two slots (each within one slot, merged onto another or not)
        s1, s2 = (slots[i] for i in rng.choice(len(slots), 2))
        k = int(rng.integers(1, min(s1.size, s2.size) + 1))
        t.join(s1.atoms[s1.size - k:], s2.atoms[:k], "parts")
        ea += s1.atoms[s1.size - k:].tolist()
        eb += s2.atoms[:k].tolist()
    for _ in range(10):
        x, y = rng.integers(0, t.n_atoms, 5), rng.integers(0, t.n_atoms, 5)
        y[0] = -1  # an unlabelled position: blocked, not joined
        t.join(x, y, "atoms")
        ea += x[1:].tolist()
        eb += y[1:].tolist()
    rows = rng.integers(0, t.n_atoms, (3, 4))
    t.join_rows(rows)
    for r in rows:
        ea += [int(r[0])] * 3
        eb += r[1:].tolist()
    low = _reference_lowest(np.array(ea, dtype=np.int64), np.array(eb, dtype=np.int64), t.n_atoms)
    _, expected = np.unique(low, return_inverse=True)  # classes in order of their lowest atom
    np.testing.assert_array_equal(t.components(), expected)
