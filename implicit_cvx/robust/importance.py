"""Input importance from the sensitivity matrix S (paper Thm 4.3, §4).

S_cj bounds how much output c can move per unit change of input j, so column sums of S rank the
inputs overall (the ranking the sensitivity attack uses) and row c of S ranks them for class c.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .bounds import sensitivity_matrix

__all__ = ["Importance", "input_importance", "model_importance", "plot_importance"]


@dataclass(frozen=True)
class Importance:
    """Input importance from a sensitivity matrix S.

    Attributes
    ----------
    overall : ndarray, shape (p,)
        Σ_c S_cj.
    per_class : ndarray, shape (q, p)
        S itself (row c = class c).

    Examples
    --------
    >>> import numpy as np
    >>> from implicit_cvx import ImplicitModel, robust
    >>> model = ImplicitModel(A=[[0, 0.5], [0.2, 0]], B=[[1, -1], [0.5, 1]],
    ...                       C=[[1, -1], [-1, 1]], D=np.zeros((2, 2)))
    >>> robust.model_importance(model).overall.round(4)
    array([4.3333, 6.    ])
    """

    overall: np.ndarray
    per_class: np.ndarray


def _check_S(S) -> np.ndarray:
    S = np.asarray(S, dtype=float)
    if S.ndim != 2 or not np.all(np.isfinite(S)) or np.any(S < 0):
        raise ValueError(f"S must be a finite nonnegative (q, p) sensitivity matrix, got shape "
                         f"{S.shape}; compute it with robust.sensitivity_matrix(model)")
    return S


def input_importance(S) -> Importance:
    """Overall (column sums) and per-class (rows) input importance of a sensitivity matrix S.

    Parameters
    ----------
    S : array_like, shape (q, p)
        A nonnegative sensitivity matrix (`sensitivity_matrix`).

    Returns
    -------
    Importance
        overall (p,) and per_class (q, p).

    Raises
    ------
    ValueError
        If S is not a finite nonnegative matrix.

    Examples
    --------
    >>> from implicit_cvx import robust
    >>> robust.input_importance([[1.0, 0.0], [2.0, 0.5]]).overall
    array([3. , 0.5])
    """
    S = _check_S(S)
    return Importance(S.sum(axis=0), S.copy())


def model_importance(model) -> Importance:
    """input_importance of the model's verified sensitivity matrix.

    Parameters
    ----------
    model : ImplicitModel
        A model with λ_pf(|A|) < 1.

    Returns
    -------
    Importance
        overall (p,) and per_class (q, p).

    Examples
    --------
    >>> import numpy as np
    >>> from implicit_cvx import ImplicitModel, robust
    >>> model = ImplicitModel(A=[[0, 0.5], [0.2, 0]], B=[[1, -1], [0.5, 1]],
    ...                       C=[[1, -1], [-1, 1]], D=np.zeros((2, 2)))
    >>> robust.model_importance(model).per_class.round(4)
    array([[2.1667, 3.    ],
           [2.1667, 3.    ]])
    """
    return input_importance(sensitivity_matrix(model))


def plot_importance(S, image_shape, path, class_names=None, title: str | None = None) -> None:
    """Draw the overall and per-class importance of S as images into a PNG (matplotlib, Agg).

    Parameters
    ----------
    S : array_like, shape (q, p)
        A nonnegative sensitivity matrix.
    image_shape : tuple of int
        (height, width) of the input image, e.g. (8, 8) for digits, (28, 28) for MNIST.
    path : str or Path
        The PNG to write.
    class_names : sequence of str, optional
        One name per output (default 0..q−1).
    title : str, optional
        The figure's title.

    Raises
    ------
    ValueError
        If image_shape does not have p pixels or class_names does not have q entries.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from implicit_cvx import robust
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     robust.plot_importance([[1.0, 0.0, 2.0, 1.0]], (2, 2), Path(tmp) / "imp.png")
    ...     print((Path(tmp) / "imp.png").exists())
    True
    """
    imp = input_importance(S)
    shape = tuple(int(v) for v in image_shape)
    if int(np.prod(shape)) != imp.overall.size:
        raise ValueError(f"image_shape {shape} has {int(np.prod(shape))} pixels but S has "
                         f"{imp.overall.size} inputs; give the input image's (height, width)")
    q = imp.per_class.shape[0]
    names = [str(c) for c in (range(q) if class_names is None else class_names)]
    if len(names) != q:
        raise ValueError(f"class_names has {len(names)} entries but S has {q} outputs")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("overall (column sums)", imp.overall)] + [
        (f"class {n}", row) for n, row in zip(names, imp.per_class, strict=True)]
    cols = min(len(panels), 6)
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.0 * cols, 2.1 * rows + 0.4), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (label, values) in zip(axes.ravel(), panels, strict=False):
        im = ax.imshow(values.reshape(shape), cmap="viridis")
        ax.set_title(label, fontsize=8)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04).ax.tick_params(labelsize=6)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
