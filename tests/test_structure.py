"""Block structure of A: components, topological order, levels (Thm 2.8/2.9)."""

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from implicit_cvx.structure import block_structure


def _layered(sizes, rng, skip=False):
    """Feed-forward A over shuffled states: layer k depends densely on layer k-1 (and k-2)."""
    n = sum(sizes)
    perm = rng.permutation(n)
    bounds = np.cumsum([0, *sizes])
    layer = [perm[bounds[k] : bounds[k + 1]] for k in range(len(sizes))]
    A = np.zeros((n, n))
    for k in range(1, len(sizes)):
        A[np.ix_(layer[k], layer[k - 1])] = rng.uniform(0.1, 1.0, (sizes[k], sizes[k - 1]))
        if skip and k >= 2:
            A[np.ix_(layer[k], layer[k - 2])] = rng.normal(size=(sizes[k], sizes[k - 2]))
    return A, layer


@pytest.mark.parametrize("skip", [False, True])
def test_feed_forward_levels_are_layers(skip):
    A, layer = _layered([3, 4, 2, 5], np.random.default_rng(0), skip=skip)
    s = block_structure(A)
    assert s.is_triangular and s.n_cyclic == 0
    assert s.n_components == A.shape[0] and all(c.size == 1 for c in s.components)
    assert s.n_levels == 4
    for k, states in enumerate(layer):
        np.testing.assert_array_equal(s.level_states(k), np.sort(states))
    # the component order makes A strictly lower triangular
    P = A[np.ix_(s.order, s.order)]
    assert np.all(np.triu(P) == 0)


def test_cyclic_block_inside():
    # 0 -> input; {1, 2, 3} a cycle depending on 0; 4 a self-loop depending on the cycle; 5 on 4.
    A = np.zeros((6, 6))
    A[1, 0] = A[2, 1] = A[3, 2] = A[1, 3] = 0.5
    A[4, 2] = A[4, 4] = 0.3
    A[5, 4] = 1.0
    s = block_structure(sp.csr_matrix(A))
    comps = [c.tolist() for c in s.components]
    assert comps == [[0], [1, 2, 3], [4], [5]]
    assert s.cyclic == (False, True, True, False)
    assert [lv.tolist() for lv in s.levels] == [[0], [1], [2], [3]]
    assert not s.is_triangular and s.n_cyclic == 2
    np.testing.assert_array_equal(s.labels, [0, 1, 1, 1, 2, 3])


def test_stored_zeros_dense_sparse_agree_and_bad_input():
    A = np.array([[0.0, 2.0], [0.0, 0.0]])
    S = sp.csr_matrix(([2.0, 0.0], ([0, 1], [1, 0])), shape=(2, 2))
    assert S.nnz == 2  # an explicitly stored zero is not an edge
    for M in (A, S):
        s = block_structure(M)
        assert s.is_triangular and [c.tolist() for c in s.components] == [[1], [0]]
    empty = block_structure(np.zeros((0, 0)))
    assert empty.n_components == 0 and empty.is_triangular
    with pytest.raises(ValueError, match="square"):
        block_structure(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="level 5"):
        block_structure(A).level_states(5)


@st.composite
def _sparse_patterns(draw):
    n = draw(st.integers(1, 12))
    density = draw(st.sampled_from([0.05, 0.15, 0.3]))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    return (rng.random((n, n)) < density) * rng.normal(size=(n, n))


@settings(deadline=None, derandomize=True, max_examples=60)
@given(_sparse_patterns())
def test_topological_property_brute_force(A):
    n = A.shape[0]
    edge = A != 0
    reach = edge | np.eye(n, dtype=bool)  # transitive closure (Floyd–Warshall, boolean)
    for k in range(n):
        reach |= reach[:, [k]] & reach[[k], :]
    s = block_structure(sp.csr_matrix(A) if n % 2 else A)

    assert np.array_equal(np.sort(s.order), np.arange(n))
    same = s.labels[:, None] == s.labels[None, :]
    assert np.array_equal(same, reach & reach.T)  # components = mutual reachability
    for k, comp in enumerate(s.components):
        assert np.all(np.diff(comp) > 0) and np.all(s.labels[comp] == k)
        sub = edge[np.ix_(comp, comp)]
        assert s.cyclic[k] == (comp.size > 1 or bool(sub[0, 0]))

    # every dependency points to an earlier component on an earlier level; levels are longest paths
    rows, cols = np.nonzero(edge)
    cross = s.labels[rows] != s.labels[cols]
    assert np.all(s.labels[rows[cross]] > s.labels[cols[cross]])
    lvl = s.component_level
    for k in range(s.n_components):
        deps = np.unique(s.labels[cols[cross & (s.labels[rows] == k)]])
        assert lvl[k] == (0 if deps.size == 0 else 1 + lvl[deps].max())
    for level, comps in enumerate(s.levels):
        assert np.all(lvl[comps] == level)
        want = np.sort(np.concatenate([s.components[c] for c in comps]))
        np.testing.assert_array_equal(s.level_states(level), want)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 25), density=st.floats(0.0, 0.3))
def test_groups_are_kept_whole_and_the_order_is_topological(seed, n, density):
    """Random A and random disjoint groups: each group inside one component; every dependency
    points to an earlier component or inside; cyclic iff the component has a cycle of nodes
    (checked against reachability by matrix powers on the contracted graph)."""
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(n, n)) * (rng.random((n, n)) < density)
    cuts = np.sort(rng.choice(np.arange(1, n), size=min(n - 1, rng.integers(0, 4)), replace=False))
    ranges = list(zip(np.r_[0, cuts], np.r_[cuts, n], strict=True))
    groups = [r for r in ranges if r[1] - r[0] > 1 and rng.random() < 0.6]
    s = block_structure(sp.csr_matrix(A) if seed % 2 else A, groups=groups)
    for a, b in groups:
        assert len(set(s.labels[a:b].tolist())) == 1
    rows, cols = np.nonzero(A)
    assert np.all(s.labels[cols] <= s.labels[rows])
    node = np.arange(n)
    for a, b in groups:
        node[a:b] = a
    _, node = np.unique(node, return_inverse=True)
    L = node.max() + 1
    G = np.zeros((L, L), dtype=bool)
    G[node[rows], node[cols]] = True
    reach = G.copy()
    for _ in range(L):
        reach |= (reach.astype(int) @ G.astype(int)) > 0
    for k, comp in enumerate(s.components):
        nodes = np.unique(node[comp])
        assert s.cyclic[k] == bool(nodes.size > 1 or reach[nodes[0], nodes[0]])
