"""Block-triangular structure of A: strongly connected components in topological order.

State i depends on state j when A[i, j] != 0. The strongly connected components of that graph are
the diagonal blocks of a block-triangular permutation of A (Thm 2.8/2.9): Picard iteration is only
needed inside cyclic components, and acyclic components of one topological level are solved by a
single matrix product. A block activation couples the states of its block, so such a block
(a "group") is one node of the graph: its states always land in the same component.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components


@dataclass(frozen=True, eq=False)
class BlockStructure:
    """Components of A's dependency graph, topologically ordered and grouped by level.

    Built by `block_structure`. Component k depends only on components < k, and a level-l
    component only on levels < l.

    Attributes
    ----------
    components : tuple of ndarray
        components[k]: sorted state indices of component k.
    cyclic : tuple of bool
        cyclic[k]: component k has a cycle (more than one node, or one node — a state or a
        group — that reads itself through A).
    levels : tuple of ndarray
        levels[l]: component ids of level l.
    labels : ndarray, shape (n,)
        labels[i]: component id of state i.
    component_level : ndarray
        component_level[k]: level of component k.

    Examples
    --------
    >>> import numpy as np
    >>> from implicit_cvx import block_structure
    >>> s = block_structure(np.array([[0, 0.5, 0], [0, 0, 0.3], [0, 0.2, 0]]))
    >>> [c.tolist() for c in s.components], s.cyclic
    ([[1, 2], [0]], (True, False))
    """

    components: tuple[np.ndarray, ...]
    cyclic: tuple[bool, ...]
    levels: tuple[np.ndarray, ...]
    labels: np.ndarray = field(repr=False)
    component_level: np.ndarray = field(repr=False)
    _level_states: tuple[np.ndarray, ...] = field(repr=False)

    @property
    def n_states(self) -> int:
        return int(self.labels.shape[0])

    @property
    def n_components(self) -> int:
        return len(self.components)

    @property
    def n_levels(self) -> int:
        return len(self.levels)

    @property
    def n_cyclic(self) -> int:
        return int(sum(self.cyclic))

    @property
    def is_triangular(self) -> bool:
        """No cyclic component: A is strictly triangular after a permutation (feed-forward)."""
        return not any(self.cyclic)

    @property
    def order(self) -> np.ndarray:
        """A permutation of the states that makes A block lower triangular (components in order)."""
        if not self.components:
            return np.zeros(0, dtype=np.intp)
        return np.concatenate(self.components)

    def level_states(self, k: int) -> np.ndarray:
        """All state indices of level k, sorted."""
        if not 0 <= k < self.n_levels:
            raise ValueError(f"level {k} out of range: the structure has {self.n_levels} levels")
        return self._level_states[k]


def _pattern(A) -> sp.csr_matrix:
    """Sparsity pattern of a square A (dense or sparse) as a CSR matrix without stored zeros."""
    if sp.issparse(A):
        P = sp.csr_matrix(A, copy=True)
    else:
        A = np.asarray(A)
        if A.ndim != 2:
            raise ValueError(f"A must be a 2-D matrix, got shape {A.shape}")
        P = sp.csr_matrix(A != 0)
    if P.shape[0] != P.shape[1]:
        raise ValueError(
            f"A must be square (n×n) to define a dependency graph, got shape {P.shape}"
        )
    P.eliminate_zeros()
    return P


def _gather_rows(M: sp.csr_matrix, rows: np.ndarray) -> np.ndarray:
    """Column indices stored in the given rows of a CSR matrix, concatenated (no Python loop)."""
    starts, stops = M.indptr[rows], M.indptr[rows + 1]
    if rows.size == 1:
        return M.indices[starts[0] : stops[0]]
    lengths = stops - starts
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=M.indices.dtype)
    offsets = np.repeat(starts - np.cumsum(lengths) + lengths, lengths)
    return M.indices[offsets + np.arange(total)]


def _component_levels(src: np.ndarray, dst: np.ndarray, n_comp: int) -> np.ndarray:
    """Longest-path level of each node of a DAG with edges src -> dst (src depends on dst).

    Kahn's algorithm one whole level at a time: one vectorized step per level, not per node.
    """
    key = np.unique(src.astype(np.int64) * n_comp + dst)
    src, dst = key // n_comp, key % n_comp
    remaining = np.bincount(src, minlength=n_comp)
    dependants = sp.csr_matrix(
        (np.ones(key.size, dtype=np.int8), (dst, src)), shape=(n_comp, n_comp)
    )
    level = np.full(n_comp, -1, dtype=np.intp)
    frontier = np.flatnonzero(remaining == 0)
    depth = 0
    while frontier.size:
        level[frontier] = depth
        hit = _gather_rows(dependants, frontier)
        np.subtract.at(remaining, hit, 1)
        frontier = np.unique(hit[remaining[hit] == 0])
        depth += 1
    if np.any(level < 0):  # cannot happen for a condensation; guards against a csgraph change
        raise RuntimeError("condensation of the dependency graph is not acyclic")
    return level


def state_nodes(n: int, groups) -> np.ndarray:
    """Node of every state: each group (start, stop) is one node, every other state its own."""
    node = np.arange(n, dtype=np.intp)
    for start, stop in groups or ():
        if not 0 <= start < stop <= n:
            raise ValueError(f"state group ({start}, {stop}) is outside 0..{n}")
        node[start:stop] = start
    _, node = np.unique(node, return_inverse=True)
    return node.astype(np.intp)


def block_structure(A, groups=None) -> BlockStructure:
    """Strongly connected components of A's sparsity graph, topologically sorted (Thm 2.8/2.9).

    Components are ordered by (level, smallest state index); levels come from a longest-path
    layering of the condensation, so a feed-forward network's layers are its levels.

    Parameters
    ----------
    A : array_like or sparse matrix, shape (n, n)
        The state matrix; only its sparsity pattern matters.
    groups : sequence of (start, stop), optional
        Disjoint state ranges each treated as one node (the blocks of block activations).

    Returns
    -------
    BlockStructure
        The components, their cyclicity and levels.

    Examples
    --------
    >>> import numpy as np
    >>> from implicit_cvx import block_structure
    >>> A = np.array([[0, 0.5, 0], [0, 0, 0.3], [0, 0.2, 0]])  # states 1, 2 form a cycle
    >>> s = block_structure(A)
    >>> s.labels.tolist(), [lvl.tolist() for lvl in s.levels]
    ([1, 0, 0], [[0], [1]])
    """
    P = _pattern(A)
    n = P.shape[0]
    if n == 0:
        empty = np.zeros(0, dtype=np.intp)
        return BlockStructure((), (), (), empty, empty, ())
    node = state_nodes(n, groups)
    coo = P.tocoo()
    rows, cols = node[coo.row], node[coo.col]
    n_nodes = int(node.max()) + 1
    graph = P if n_nodes == n else sp.csr_matrix(
        (np.ones(rows.size, dtype=np.int8), (rows, cols)), shape=(n_nodes, n_nodes)
    )
    n_comp, raw_node = connected_components(graph, directed=True, connection="strong")
    raw = raw_node[node]
    cross = raw_node[rows] != raw_node[cols]
    raw_level = _component_levels(raw_node[rows[cross]], raw_node[cols[cross]], n_comp)

    # Relabel components by (level, smallest state); np.unique's first index is the minimum state.
    _, first_state = np.unique(raw, return_index=True)
    new_id = np.empty(n_comp, dtype=np.intp)
    new_id[np.lexsort((first_state, raw_level))] = np.arange(n_comp)
    labels = new_id[raw]
    comp_level = np.empty(n_comp, dtype=np.intp)
    comp_level[new_id] = raw_level

    by_comp = np.argsort(labels, kind="stable")  # states grouped by component, sorted within
    comp_sizes = np.bincount(labels, minlength=n_comp)
    components = tuple(np.split(by_comp, np.cumsum(comp_sizes)[:-1]))

    self_loop = np.zeros(n_comp, dtype=bool)
    self_loop[new_id[raw_node[rows[rows == cols]]]] = True
    comp_nodes = np.bincount(new_id[raw_node], minlength=n_comp)
    cyclic = tuple(bool(c) for c in (comp_nodes > 1) | self_loop)

    n_levels = int(comp_level.max()) + 1
    level_sizes = np.bincount(comp_level, minlength=n_levels)
    level_bounds = np.cumsum(level_sizes)[:-1]
    levels = tuple(np.split(np.arange(n_comp), level_bounds))
    state_level = comp_level[labels]
    by_level = np.argsort(state_level, kind="stable")
    level_states = tuple(
        np.split(by_level, np.cumsum(np.bincount(state_level, minlength=n_levels))[:-1])
    )
    return BlockStructure(components, cyclic, levels, labels, comp_level, level_states)
