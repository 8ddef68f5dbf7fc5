"""Standard networks as implicit models, and composition of implicit models (paper §3).

Conventions everyone relies on:
- Weights follow PyTorch: a dense layer W_l has shape (out, in) and maps x ↦ W_l x + b_l.
- State ordering: hidden layers x_1, …, x_L give the state x = (x_L, …, x_1), last hidden layer
  first, so A is strictly block upper triangular with W_{L−1}, …, W_1 on the superdiagonal,
  B = (0; …; 0; W_0), C = (W_L, 0, …, 0), D = 0, b_x = (b_{L−1}; …; b_0), b_y = b_L.
- Convolutions act on inputs flattened channel-major (C, H, W), as `torch.flatten` does.
- `cascade(m1, m2)` orders states (x_2, x_1); `stack_parallel(m1, m2)` orders them (x_1, x_2).
- Outputs are linear (logits for a classifier); matrices stay sparse when any input is sparse.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .activations import ActivationMap
from .model import ImplicitModel
from .numerics import check_matrix, check_vector
from .transform import InputTransform

_SKLEARN_ACTIVATIONS = {
    "relu": "relu",
    "tanh": "tanh",
    "logistic": "sigmoid",
    "identity": "identity",
}
_INPUT_SIDE_METADATA = ("preprocessing", "input")
_OUTPUT_SIDE_METADATA = ("classes", "output_link", "task")


# ---- block assembly -----------------------------------------------------------------------------
def _any_sparse(*mats) -> bool:
    return any(sp.issparse(M) for M in mats)


def _assemble(grid, row_sizes, col_sizes, sparse: bool):
    """A block matrix from a grid of blocks (None = zero block of the given sizes)."""
    if sparse:
        blocks = [
            [
                sp.csr_matrix((r, c)) if blk is None else sp.csr_matrix(blk)
                for blk, c in zip(row, col_sizes, strict=True)
            ]
            for row, r in zip(grid, row_sizes, strict=True)
        ]
        return sp.bmat(blocks, format="csr")
    blocks = [
        [
            np.zeros((r, c)) if blk is None else np.asarray(blk, dtype=float)
            for blk, c in zip(row, col_sizes, strict=True)
        ]
        for row, r in zip(grid, row_sizes, strict=True)
    ]
    return np.block(blocks)


def _matvec(M, v) -> np.ndarray:
    return np.asarray(M @ v, dtype=float).ravel()


def _compose_metadata(input_model: ImplicitModel, output_model: ImplicitModel | None) -> dict:
    """Input preprocessing from the model that sees the inputs, class labels from the one that
    produces the outputs."""
    meta = {k: input_model.metadata[k] for k in _INPUT_SIDE_METADATA if k in input_model.metadata}
    if output_model is not None:
        meta.update(
            {
                k: output_model.metadata[k]
                for k in _OUTPUT_SIDE_METADATA
                if k in output_model.metadata
            }
        )
    return meta


# ---- convolutions -------------------------------------------------------------------------------
def _pair(name: str, value, minimum: int) -> tuple[int, int]:
    pair = (value, value) if np.isscalar(value) else tuple(value)
    if len(pair) != 2 or any(int(v) != v or v < minimum for v in pair):
        raise ValueError(f"{name} must be an integer ≥ {minimum} or a pair of them, got {value!r}")
    return int(pair[0]), int(pair[1])


def conv2d_matrix(weight, input_shape, stride=1, padding=0) -> tuple[sp.csr_matrix, tuple]:
    """The sparse (Toeplitz) matrix of a 2-D cross-correlation (torch.nn.Conv2d without bias).

    Inputs and outputs are flattened channel-major (C, H, W), with zero padding and stride.

    Parameters
    ----------
    weight : array_like, shape (out_c, in_c, kh, kw)
        The kernels.
    input_shape : tuple of int
        (in_c, H, W) of the input map.
    stride : int or (int, int), default=1
        Step of the windows.
    padding : int or (int, int), default=0
        Zero padding on each side.

    Returns
    -------
    matrix : scipy.sparse.csr_matrix, shape (out_c·Ho·Wo, in_c·H·W)
        The linear map.
    output_shape : tuple of int
        (out_c, Ho, Wo).

    Raises
    ------
    ValueError
        If the weight is not 4-D or finite, or does not fit the input shape.

    Examples
    --------
    >>> import numpy as np
    >>> from implicit_cvx import conv2d_matrix
    >>> M, shape = conv2d_matrix(np.ones((1, 1, 2, 2)), (1, 3, 3))
    >>> M.shape, shape
    ((4, 9), (1, 2, 2))
    >>> M.toarray()[0]
    array([1., 1., 0., 1., 1., 0., 0., 0., 0.])
    """
    weight = np.asarray(weight, dtype=float)
    if weight.ndim != 4:
        raise ValueError(f"conv weight must be 4-D (out_c, in_c, kh, kw), got shape {weight.shape}")
    if not np.all(np.isfinite(weight)):
        raise ValueError(f"conv weight (shape {weight.shape}) contains NaN or inf")
    out_c, in_c, kh, kw = weight.shape
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3 or shape[0] != in_c:
        raise ValueError(
            f"conv input_shape must be (C, H, W) with C = {in_c} input channels of the weight, "
            f"got {tuple(input_shape)}"
        )
    _, H, W = shape
    sh, sw = _pair("stride", stride, 1)
    ph, pw = _pair("padding", padding, 0)
    Ho, Wo = (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1
    if Ho < 1 or Wo < 1:
        raise ValueError(
            f"conv kernel {kh}×{kw} does not fit input {H}×{W} with padding {(ph, pw)}; "
            "use a smaller kernel or more padding"
        )
    o, i, j, c, a, b = np.ix_(*(np.arange(s) for s in (out_c, Ho, Wo, in_c, kh, kw)))
    r, s = i * sh - ph + a, j * sw - pw + b
    rows = (o * Ho + i) * Wo + j
    cols = (c * H + r) * W + s
    vals = weight[o, c, a, b]
    rows, cols, vals, r, s = np.broadcast_arrays(rows, cols, vals, r, s)
    keep = (r >= 0) & (r < H) & (s >= 0) & (s < W) & (vals != 0)
    M = sp.csr_matrix((vals[keep], (rows[keep], cols[keep])), shape=(out_c * Ho * Wo, in_c * H * W))
    return M, (out_c, Ho, Wo)


@dataclass(frozen=True, eq=False)
class Conv2d:
    """A convolution layer for `from_layers` (torch.nn.Conv2d semantics, channel-major inputs).

    `input_shape` (C, H, W) may be left None when the previous layer is a Conv2d; it is then
    inferred. `bias` is per output channel. A dict {"kind": "conv2d", ...} with these fields works too.
    """

    weight: np.ndarray
    bias: np.ndarray | None = None
    stride: int | tuple = 1
    padding: int | tuple = 0
    input_shape: tuple | None = None

    def linear_map(self, input_shape=None) -> tuple[sp.csr_matrix, np.ndarray, tuple]:
        """(matrix, bias vector repeated over positions, output shape (C, H, W))."""
        shape = self.input_shape if self.input_shape is not None else input_shape
        if shape is None:
            raise ValueError("Conv2d needs input_shape (C, H, W) unless it follows another Conv2d")
        M, out_shape = conv2d_matrix(self.weight, shape, self.stride, self.padding)
        bias = check_vector("conv bias", self.bias, out_shape[0])
        return M, np.repeat(bias, out_shape[1] * out_shape[2]), out_shape


def _as_layer(index: int, layer):
    """A Conv2d, a CSR matrix or a dense 2-D array for one entry of `from_layers`."""
    if isinstance(layer, dict):
        spec = dict(layer)
        if spec.pop("kind", None) != "conv2d":
            raise ValueError(
                f"layer {index}: a dict layer needs kind='conv2d', got {layer.get('kind')!r}"
            )
        try:
            return Conv2d(**spec)
        except TypeError as exc:
            raise ValueError(f"layer {index}: bad conv2d fields ({exc})") from None
    if isinstance(layer, Conv2d):
        return layer
    return check_matrix(f"layer {index}: weight", layer)


def _linear_map(index: int, layer, bias, prev_shape):
    """(matrix, bias vector, conv output shape or None) of layer `index`."""
    layer = _as_layer(index, layer)
    if isinstance(layer, Conv2d):
        if bias is not None and layer.bias is not None:
            raise ValueError(f"layer {index}: conv bias given both in the layer and in `biases`")
        if bias is not None:
            layer = Conv2d(layer.weight, bias, layer.stride, layer.padding, layer.input_shape)
        try:
            return layer.linear_map(prev_shape)
        except ValueError as exc:
            raise ValueError(f"layer {index}: {exc}") from None
    return layer, check_vector(f"bias of layer {index}", bias, layer.shape[0]), None


# ---- feed-forward networks ----------------------------------------------------------------------
def from_layers(weights, biases=None, activation="relu", output_activation=None) -> ImplicitModel:
    """The implicit form of a feed-forward network (paper §3, state x = (x_L, …, x_1)).

    A is strictly block triangular, so the model is well-posed for any weights (Thm 2.8/2.9) and
    solved exactly by one sweep.

    Parameters
    ----------
    weights : sequence
        W_0, …, W_L as (out, in) matrices (PyTorch convention), scipy.sparse matrices, or
        `Conv2d` layers / {"kind": "conv2d", ...} dicts. At least two, unless
        output_activation is given.
    biases : sequence, optional
        None or one entry per layer (None = zero).
    activation : str, dict, activation or list, default="relu"
        One spec, or a list with one spec per hidden layer.
    output_activation : str, dict or activation, optional
        None for linear outputs; else the last layer also becomes a state block and
        C = (I, 0, …, 0).

    Returns
    -------
    ImplicitModel
        The equivalent implicit model.

    Raises
    ------
    ValueError
        If the layer sizes do not chain, the biases do not match, or there is no hidden layer.

    Examples
    --------
    >>> import numpy as np
    >>> from implicit_cvx import from_layers
    >>> W0, W1 = np.array([[1.0, -1.0], [0.5, 0.5]]), np.array([[1.0, 2.0]])
    >>> model = from_layers([W0, W1], biases=[[0.0, 0.1], [0.5]])
    >>> model.predict([[1.0, 0.0]]), np.maximum(W0 @ [1.0, 0.0] + [0.0, 0.1], 0) @ W1.T + 0.5
    (array([[2.7]]), array([2.7]))
    """
    layers = list(weights)
    biases = [None] * len(layers) if biases is None else list(biases)
    if len(biases) != len(layers):
        raise ValueError(f"got {len(biases)} biases for {len(layers)} weight matrices")
    maps, shape, dim = [], None, None
    for index, (layer, bias) in enumerate(zip(layers, biases, strict=True)):
        M, b, shape = _linear_map(index, layer, bias, shape)
        if dim is not None and M.shape[1] != dim:
            raise ValueError(
                f"layer {index} has shape {M.shape} and expects {M.shape[1]} inputs, but layer "
                f"{index - 1} has {dim} outputs"
            )
        dim = M.shape[0]
        maps.append((M, b))
    n_hidden = len(maps) - 1
    if isinstance(activation, (list, tuple)):
        if len(activation) != n_hidden:
            raise ValueError(
                f"got {len(activation)} activations for {n_hidden} hidden layers; give one per "
                "hidden layer or a single one"
            )
        specs = list(activation)
    else:
        specs = [activation] * n_hidden
    state_maps = maps[:n_hidden]
    if output_activation is not None:
        state_maps, specs = maps, [*specs, output_activation]
    if not state_maps:
        raise ValueError(
            "from_layers needs at least two layers (one hidden layer) or an output_activation; "
            "a single linear map has no state"
        )
    sizes = [M.shape[0] for M, _ in state_maps][::-1]  # block order: x_K first
    K, p = len(state_maps), maps[0][0].shape[1]
    sparse = _any_sparse(*(M for M, _ in maps))
    A_grid = [[None] * K for _ in range(K)]
    for k in range(1, K):  # layer k feeds on layer k−1: block (K−1−k, K−k), the superdiagonal
        A_grid[K - 1 - k][K - k] = state_maps[k][0]
    B_grid = [[None] for _ in range(K)]
    B_grid[K - 1][0] = state_maps[0][0]
    if output_activation is None:
        C_first, b_y = maps[-1]
    else:
        C_first, b_y = (sp.identity if sparse else np.eye)(sizes[0]), None
    q = C_first.shape[0]
    return ImplicitModel(
        A=_assemble(A_grid, sizes, sizes, sparse),
        B=_assemble(B_grid, sizes, [p], sparse),
        C=_assemble([[C_first] + [None] * (K - 1)], [q], sizes, sparse),
        D=_assemble([[None]], [q], [p], sparse),
        b_x=np.concatenate([b for _, b in state_maps][::-1]),
        b_y=b_y,
        activation=ActivationMap.concat(
            [ActivationMap.build(spec, size) for spec, size in zip(specs[::-1], sizes, strict=True)]
        ),
    )


def from_conv2d(weight, input_shape, bias=None, stride=1, padding=0, activation="relu"):
    """One activated convolution u ↦ φ(conv(u) + b) as an implicit model.

    Its output is the flattened (C, H, W) feature map; compose it with others by `cascade`.

    Parameters
    ----------
    weight : array_like, shape (out_c, in_c, kh, kw)
        The kernels.
    input_shape : tuple of int
        (in_c, H, W) of the input map (inputs flattened channel-major).
    bias : array_like, shape (out_c,), optional
        One bias per output channel.
    stride : int or (int, int), default=1
        Step of the windows.
    padding : int or (int, int), default=0
        Zero padding on each side.
    activation : str, dict or activation, default="relu"
        φ.

    Returns
    -------
    ImplicitModel
        A model with out_c·Ho·Wo states and outputs.

    Examples
    --------
    >>> import numpy as np
    >>> from implicit_cvx import from_conv2d
    >>> conv = from_conv2d(np.ones((1, 1, 2, 2)), (1, 3, 3))
    >>> conv.predict(np.arange(9.0)[None] - 4)
    array([[0., 0., 4., 8.]])
    """
    layer = Conv2d(weight, bias, stride, padding, input_shape)
    return from_layers([layer], activation=activation, output_activation=activation)


def from_sklearn(estimator) -> ImplicitModel:
    """A fitted scikit-learn MLPClassifier / MLPRegressor as an implicit model with linear outputs.

    Also a fitted Pipeline of scalers (StandardScaler, MinMaxScaler, MaxAbsScaler; any number, in
    order) ending in one: the scalers are folded into B, D, b_x, b_y, so the model takes the
    Pipeline's raw inputs (metadata "input" records them).

    Outputs are the pre-activation logits: softmax(logits) is predict_proba for multiclass; a
    binary classifier has ONE logit and predicts classes_[1] where logit > 0 (metadata
    "output_link" is the estimator's out_activation_; "classes" its classes_).

    Parameters
    ----------
    estimator : MLPClassifier, MLPRegressor or Pipeline
        The fitted estimator.

    Returns
    -------
    ImplicitModel
        The equivalent (feed-forward) implicit model.

    Raises
    ------
    ValueError
        If the estimator is not fitted or not supported (naming it).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.neural_network import MLPClassifier
    >>> from implicit_cvx import from_sklearn
    >>> X, y = load_iris(return_X_y=True)
    >>> mlp = MLPClassifier(hidden_layer_sizes=(8,), max_iter=2000, random_state=0).fit(X, y)
    >>> model = from_sklearn(mlp)
    >>> model.n_states, model.n_outputs
    (8, 3)
    >>> bool(np.array_equal(model.predict(X).argmax(axis=1), mlp.predict(X)))
    True
    """
    from sklearn.pipeline import Pipeline

    if not isinstance(estimator, Pipeline):
        return _from_mlp(estimator, type(estimator).__name__)
    *steps, (name, final) = estimator.steps
    transform = InputTransform.identity()
    for step_name, step in steps:
        if step is not None and step != "passthrough":
            transform = transform.then(InputTransform.from_sklearn(step, step_name))
    model = _from_mlp(final, f"the Pipeline's final step '{name}' ({type(final).__name__})")
    first = next((s for _, s in steps if s is not None and s != "passthrough"), None)
    seen = (first.data_min_, first.data_max_) if type(first).__name__ == "MinMaxScaler" else None
    model = transform.fold(model, train_range=seen)
    model.metadata["source"] = "sklearn.pipeline.Pipeline: " + " → ".join(
        type(s).__name__ for _, s in estimator.steps if s is not None and s != "passthrough"
    )
    return model


def _from_mlp(estimator, what: str) -> ImplicitModel:
    from sklearn.neural_network import MLPClassifier, MLPRegressor

    if not isinstance(estimator, (MLPClassifier, MLPRegressor)):
        raise ValueError(
            f"from_sklearn converts MLPClassifier and MLPRegressor (alone or at the end of a "
            f"Pipeline of StandardScaler / MinMaxScaler / MaxAbsScaler), got {what}"
        )
    if not hasattr(estimator, "coefs_"):
        raise ValueError(f"{what} is not fitted; call fit(X, y) before converting")
    if estimator.activation not in _SKLEARN_ACTIVATIONS:
        raise ValueError(
            f"{what} activation {estimator.activation!r} has no CONE "
            f"counterpart; supported: {', '.join(_SKLEARN_ACTIVATIONS)}"
        )
    model = from_layers(
        [W.T for W in estimator.coefs_],
        list(estimator.intercepts_),
        activation=_SKLEARN_ACTIVATIONS[estimator.activation],
    )
    classifier = isinstance(estimator, MLPClassifier)
    model.metadata.update(
        task="classification" if classifier else "regression",
        output_link=estimator.out_activation_,
        source=f"sklearn.neural_network.{type(estimator).__name__}",
    )
    if classifier:
        model.metadata["classes"] = np.asarray(estimator.classes_).tolist()
    return model


def residual_block(W1, W2, b1=None, b2=None, activation="relu") -> ImplicitModel:
    """y = φ(u + W2 φ(W1 u + b1) + b2) as an implicit model.

    State x = (x_out, x_in): A = [[0, W2], [0, 0]], B = [I; W1], C = [I, 0], D = 0,
    b_x = (b2; b1).

    Parameters
    ----------
    W1 : array_like, shape (h, p)
        Weights of the inner layer.
    W2 : array_like, shape (p, h)
        Weights back to the input size.
    b1 : array_like, shape (h,), optional
        Inner bias (default zero).
    b2 : array_like, shape (p,), optional
        Outer bias (default zero).
    activation : str, dict or activation, default="relu"
        φ.

    Returns
    -------
    ImplicitModel
        The block, with p outputs.

    Raises
    ------
    ValueError
        If the shapes do not fit together.

    Examples
    --------
    >>> import numpy as np
    >>> from implicit_cvx import residual_block
    >>> block = residual_block(np.eye(2), 0.5 * np.eye(2))
    >>> block.predict([[1.0, -2.0]])
    array([[1.5, 0. ]])
    """
    W1, W2 = check_matrix("W1", W1), check_matrix("W2", W2)
    h, p = W1.shape
    if W2.shape != (p, h):
        raise ValueError(
            f"W2 has shape {W2.shape}; with W1 of shape {W1.shape} it must be {(p, h)}"
        )
    sparse = _any_sparse(W1, W2)
    eye = (sp.identity if sparse else np.eye)(p)
    sizes = [p, h]
    return ImplicitModel(
        A=_assemble([[None, W2], [None, None]], sizes, sizes, sparse),
        B=_assemble([[eye], [W1]], sizes, [p], sparse),
        C=_assemble([[eye, None]], [p], sizes, sparse),
        D=_assemble([[None]], [p], [p], sparse),
        b_x=np.concatenate([check_vector("b2", b2, p), check_vector("b1", b1, h)]),
        activation=activation,
    )


# ---- composition --------------------------------------------------------------------------------
def _weights(m: ImplicitModel):
    return m.A, m.B, m.C, m.D


def cascade(m1: ImplicitModel, m2: ImplicitModel) -> ImplicitModel:
    """m2 after m1 (u → m1 → m2) as one implicit model.

    State (x_2, x_1): A = [[A2, B2 C1], [0, A1]], B = [B2 D1; B1], C = [C2, D2 C1], D = D2 D1,
    b_x = (b_x2 + B2 b_y1; b_x1), b_y = D2 b_y1 + b_y2 (paper §3). Block triangular: well-posed
    iff both parts are (Thm 2.8/2.9).

    Parameters
    ----------
    m1 : ImplicitModel
        The first model.
    m2 : ImplicitModel
        The second; its inputs are m1's outputs.

    Returns
    -------
    ImplicitModel
        The composition.

    Raises
    ------
    ValueError
        If m2's input size differs from m1's output size.

    Examples
    --------
    >>> import numpy as np
    >>> from implicit_cvx import cascade, from_layers
    >>> m1 = from_layers([np.array([[1.0, -1.0], [0.5, 0.5]]), np.eye(2)])
    >>> m2 = from_layers([np.eye(2), np.array([[1.0, 2.0]])])
    >>> cascade(m1, m2).predict([[1.0, 0.0]]), m2.predict(m1.predict([[1.0, 0.0]]))
    (array([[2.]]), array([[2.]]))
    """
    if m2.n_inputs != m1.n_outputs:
        raise ValueError(
            f"cascade: the second model takes {m2.n_inputs} inputs but the first gives "
            f"{m1.n_outputs} outputs"
        )
    A1, B1, C1, D1 = _weights(m1)
    A2, B2, C2, D2 = _weights(m2)
    sparse = _any_sparse(*_weights(m1), *_weights(m2))
    sizes, p, q = [m2.n_states, m1.n_states], m1.n_inputs, m2.n_outputs
    return ImplicitModel(
        A=_assemble([[A2, B2 @ C1], [None, A1]], sizes, sizes, sparse),
        B=_assemble([[B2 @ D1], [B1]], sizes, [p], sparse),
        C=_assemble([[C2, D2 @ C1]], [q], sizes, sparse),
        D=_assemble([[D2 @ D1]], [q], [p], sparse),
        b_x=np.concatenate([m2.b_x + _matvec(B2, m1.b_y), m1.b_x]),
        b_y=_matvec(D2, m1.b_y) + m2.b_y,
        activation=ActivationMap.concat([m2.activation, m1.activation]),
        metadata=_compose_metadata(m1, m2),
    )


def stack_parallel(m1: ImplicitModel, m2: ImplicitModel, combine: str = "concat") -> ImplicitModel:
    """Both models on the same input, state (x_1, x_2); outputs concatenated or summed.

    Block diagonal: well-posed iff both parts are.

    Parameters
    ----------
    m1 : ImplicitModel
        The first model.
    m2 : ImplicitModel
        The second, with the same number of inputs.
    combine : {"concat", "sum"}, default="concat"
        Outputs (ŷ_1; ŷ_2), or ŷ_1 + ŷ_2 (equal output sizes).

    Returns
    -------
    ImplicitModel
        The parallel model.

    Raises
    ------
    ValueError
        If the input (or, for "sum", output) sizes differ or combine is unknown.

    Examples
    --------
    >>> import numpy as np
    >>> from implicit_cvx import from_layers, stack_parallel
    >>> m1 = from_layers([np.array([[1.0, -1.0], [0.5, 0.5]]), np.eye(2)])
    >>> m2 = from_layers([np.eye(2), np.array([[1.0, 2.0]])])
    >>> stack_parallel(m1, m2).predict([[1.0, 0.0]])
    array([[1. , 0.5, 1. ]])
    >>> stack_parallel(m1, m1, combine="sum").predict([[1.0, 0.0]])
    array([[2., 1.]])
    """
    if m1.n_inputs != m2.n_inputs:
        raise ValueError(
            f"stack_parallel: models take {m1.n_inputs} and {m2.n_inputs} inputs; they must match"
        )
    if combine not in ("concat", "sum"):
        raise ValueError(f"stack_parallel: combine must be 'concat' or 'sum', got {combine!r}")
    if combine == "sum" and m1.n_outputs != m2.n_outputs:
        raise ValueError(
            f"stack_parallel(combine='sum'): outputs of sizes {m1.n_outputs} and {m2.n_outputs} differ"
        )
    A1, B1, C1, D1 = _weights(m1)
    A2, B2, C2, D2 = _weights(m2)
    sparse = _any_sparse(*_weights(m1), *_weights(m2))
    sizes, p, (q1, q2) = [m1.n_states, m2.n_states], m1.n_inputs, (m1.n_outputs, m2.n_outputs)
    if combine == "concat":
        C = _assemble([[C1, None], [None, C2]], [q1, q2], sizes, sparse)
        D = _assemble([[D1], [D2]], [q1, q2], [p], sparse)
        b_y = np.concatenate([m1.b_y, m2.b_y])
    else:
        C = _assemble([[C1, C2]], [q1], sizes, sparse)
        D = _assemble([[D1]], [q1], [p], sparse) + _assemble([[D2]], [q1], [p], sparse)
        b_y = m1.b_y + m2.b_y
    return ImplicitModel(
        A=_assemble([[A1, None], [None, A2]], sizes, sizes, sparse),
        B=_assemble([[B1], [B2]], sizes, [p], sparse),
        C=C,
        D=D,
        b_x=np.concatenate([m1.b_x, m2.b_x]),
        b_y=b_y,
        activation=ActivationMap.concat([m1.activation, m2.activation]),
        metadata=_compose_metadata(m1, None),
    )
