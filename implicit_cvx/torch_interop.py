"""PyTorch in and out (optional extra: pip install 'implicit_cvx[torch]').

- `from_torch(module, input_shape=None)`: an `nn.Sequential` of Linear, Conv2d, ReLU, Tanh,
  Sigmoid, LeakyReLU, Softmax (flat signals), MaxPool2d, Flatten, BatchNorm1d/2d (eval mode:
  folded into the weights),
  Identity, nested Sequential and `Residual` (below) → an ImplicitModel (via
  network.from_sequential); an `ImplicitModule` → its model.
- `to_torch(model)` → an `ImplicitModule`: forward solves the equilibrium with this package's
  solvers (float64) and backward is the implicit gradient (App. G: `gradients.loss_gradients`)
  in a custom autograd Function, so the module trains with any torch optimizer. Sparse weights
  train their stored entries only.

`import implicit_cvx` does not import torch; this module does.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

try:
    import torch
    from torch import nn
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "implicit_cvx.torch_interop needs PyTorch: pip install 'implicit_cvx[torch]' (a CPU "
        "wheel is enough)"
    ) from exc

from .convert import Conv2d
from .gradients import loss_gradients
from .model import ImplicitModel
from .network import BatchNorm, Flatten, Linear, MaxPool2d, from_sequential
from .network import Residual as _ResidualSpec

__all__ = ["ImplicitModule", "Residual", "from_torch", "to_torch"]

_WEIGHTS = ("A", "B", "C", "D")


class Residual(nn.Module):
    """y = act(body(x) + shortcut(x)) (shortcut None: the identity; activation None: ReLU,
    nn.Identity(): none): a residual block that `from_torch` understands in an nn.Sequential."""

    def __init__(self, body: nn.Module, shortcut: nn.Module | None = None,
                 activation: nn.Module | None = None):
        super().__init__()
        self.body = body
        self.shortcut = shortcut
        self.activation = nn.ReLU() if activation is None else activation

    def forward(self, x):
        skip = x if self.shortcut is None else self.shortcut(x)
        return self.activation(self.body(x) + skip)


# ---- from torch ----------------------------------------------------------------------------------
def _np(t) -> np.ndarray | None:
    return None if t is None else t.detach().cpu().to(torch.float64).numpy()


def _conv(m: nn.Conv2d) -> Conv2d:
    if m.groups != 1 or tuple(m.dilation) != (1, 1) or m.padding_mode != "zeros":
        raise ValueError(
            f"{m}: only groups=1, dilation=1 and zero padding are supported"
        )
    if isinstance(m.padding, str):
        if m.padding != "valid":
            raise ValueError(f"{m}: padding={m.padding!r} is not supported; give it as numbers")
        padding = 0
    else:
        padding = tuple(m.padding)
    return Conv2d(_np(m.weight), _np(m.bias), tuple(m.stride), padding)


def _pool(m: nn.MaxPool2d) -> MaxPool2d:
    if m.dilation not in (1, (1, 1)) or m.ceil_mode or m.return_indices:
        raise ValueError(f"{m}: only dilation=1, ceil_mode=False, return_indices=False")
    return MaxPool2d(m.kernel_size, m.stride, m.padding)


def _batchnorm(m) -> BatchNorm:
    if m.training or m.running_mean is None:
        raise ValueError(
            f"{m} normalizes by batch statistics (training mode or no running statistics); "
            "call module.eval() on a network trained with track_running_stats=True"
        )
    size = m.num_features
    weight = _np(m.weight) if m.affine else np.ones(size)
    bias = _np(m.bias) if m.affine else np.zeros(size)
    return BatchNorm(weight, bias, _np(m.running_mean), _np(m.running_var), float(m.eps))


def _flatten(m: nn.Flatten) -> Flatten:
    if m.start_dim != 1 or m.end_dim != -1:
        raise ValueError(f"{m}: only Flatten(start_dim=1, end_dim=-1) is supported")
    return Flatten()


def _softmax(m: nn.Softmax) -> str:
    if m.dim not in (1, -1):
        raise ValueError(f"{m}: only softmax over the features of a flat signal (dim=1 or -1)")
    return "softmax"


_SIMPLE = {
    nn.ReLU: lambda m: "relu",
    nn.Tanh: lambda m: "tanh",
    nn.Sigmoid: lambda m: "sigmoid",
    nn.Softmax: _softmax,
    nn.LeakyReLU: lambda m: {"name": "leaky_relu", "alpha": float(m.negative_slope)},
    nn.Linear: lambda m: Linear(_np(m.weight), _np(m.bias)),
    nn.Conv2d: _conv,
    nn.MaxPool2d: _pool,
    nn.Flatten: _flatten,
    nn.BatchNorm1d: _batchnorm,
    nn.BatchNorm2d: _batchnorm,
}


def _specs(module: nn.Module) -> list:
    """The layer specs of a module (Sequential and Residual recursively)."""
    if isinstance(module, nn.Sequential):
        return [spec for child in module for spec in _specs(child)]
    if isinstance(module, nn.Identity):
        return []
    if isinstance(module, Residual):
        act = _specs(module.activation)  # [] for nn.Identity: no activation after the sum
        if len(act) > 1:
            raise ValueError(f"Residual activation must be one activation module, got {act}")
        short = [] if module.shortcut is None else _specs(module.shortcut)
        return [_ResidualSpec(_specs(module.body), act[0] if act else None, short)]
    convert = _SIMPLE.get(type(module))
    if convert is None:
        names = ", ".join(sorted(t.__name__ for t in _SIMPLE))
        raise ValueError(
            f"from_torch cannot convert {type(module).__name__}; supported: {names}, Identity, "
            "Sequential and implicit_cvx.torch_interop.Residual"
        )
    return [convert(module)]


def _input_shape(specs: list, input_shape):
    if input_shape is not None:
        return input_shape
    first = specs[0] if specs else None
    if isinstance(first, Linear):
        return int(np.shape(first.weight)[1])
    raise ValueError(
        "from_torch needs input_shape ((C, H, W) for images, or the input size) unless the "
        "network starts with nn.Linear"
    )


def from_torch(module, input_shape=None) -> ImplicitModel:
    """The ImplicitModel of an nn.Sequential (see the module docstring) or of an ImplicitModule.

    Outputs equal the module's outputs (computed in float64).

    Parameters
    ----------
    module : torch.nn.Sequential or ImplicitModule
        The network.
    input_shape : int or tuple of int, optional
        (C, H, W) of the images (inputs flattened channel-major), or the input size; inferred
        when the first layer is nn.Linear.

    Returns
    -------
    ImplicitModel
        The equivalent model.

    Raises
    ------
    ValueError
        If a layer is not supported (naming it) or the input shape cannot be inferred.

    Examples
    --------
    >>> import numpy as np
    >>> import torch
    >>> from implicit_cvx import from_torch
    >>> _ = torch.manual_seed(0)
    >>> net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU(), torch.nn.Linear(3, 1))
    >>> model = from_torch(net)
    >>> u = np.array([[1.0, -0.5]])
    >>> model.predict(u).round(5), net(torch.tensor(u, dtype=torch.float32)).detach().numpy().round(5)
    (array([[-0.59325]]), array([[-0.59325]], dtype=float32))
    """
    if isinstance(module, ImplicitModule):
        return module.to_model()
    if not isinstance(module, nn.Module):
        raise ValueError(f"from_torch needs a torch.nn.Module, got {type(module).__name__}")
    specs = _specs(module)
    return from_sequential(specs, _input_shape(specs, input_shape))


# ---- to torch ------------------------------------------------------------------------------------
class _Equilibrium(torch.autograd.Function):
    """Ŷ(U, weights) through the equilibrium; backward by the implicit adjoint."""

    @staticmethod
    def forward(ctx, module, U, *params):
        model = module.to_model()
        U_np = U.detach().cpu().to(torch.float64).numpy()
        X = model.equilibrium(U_np, tol=module.tol)
        ctx.module, ctx.model, ctx.U, ctx.X, ctx.dtype = module, model, U_np, X, U.dtype
        return torch.from_numpy(model.output(X, U_np))

    @staticmethod
    def backward(ctx, G):
        grads = loss_gradients(ctx.model, ctx.U, ctx.X, G.detach().cpu().to(torch.float64).numpy())
        out = [torch.from_numpy(np.asarray(grads["U"])).to(ctx.dtype)]
        for name in _WEIGHTS:
            out.append(torch.from_numpy(ctx.module.weight_values(name, grads[name])))
        out += [torch.from_numpy(grads["b_x"]), torch.from_numpy(grads["b_y"])]
        return (None, *out)


class ImplicitModule(nn.Module):
    """An implicit model as a torch module (float64 parameters A, B, C, D, b_x, b_y; a sparse
    weight is the parameter `<name>_values` of its stored entries on a fixed pattern).

    forward(U) takes (m, p) inputs (or (m, C, H, W) images, flattened channel-major) and returns
    Ŷ (m, q) in float64; `to_model()` gives back the ImplicitModel with the current weights.
    """

    def __init__(self, model: ImplicitModel, tol: float = 1e-12):
        super().__init__()
        self.activation, self.metadata, self.tol = model.activation, dict(model.metadata), tol
        self._patterns = {}
        for name in _WEIGHTS:
            M = getattr(model, name)
            if sp.issparse(M):
                M = sp.csr_matrix(M)
                M.sum_duplicates()
                M.sort_indices()
                self._patterns[name] = (M.indices.copy(), M.indptr.copy(), M.shape)
                self.register_parameter(f"{name}_values", nn.Parameter(torch.from_numpy(M.data.copy())))
            else:
                self.register_parameter(name, nn.Parameter(torch.from_numpy(np.array(M, dtype=float))))
        self.b_x = nn.Parameter(torch.from_numpy(model.b_x.copy()))
        self.b_y = nn.Parameter(torch.from_numpy(model.b_y.copy()))

    def _weight(self, name: str):
        if name in self._patterns:
            indices, indptr, shape = self._patterns[name]
            values = getattr(self, f"{name}_values").detach().numpy().copy()
            return sp.csr_matrix((values, indices, indptr), shape=shape)
        return getattr(self, name).detach().numpy().copy()

    def weight_params(self) -> list:
        return [getattr(self, f"{n}_values" if n in self._patterns else n) for n in _WEIGHTS]

    def weight_values(self, name: str, grad) -> np.ndarray:
        """A gradient in the layout of the parameter: dense, or the values on the pattern."""
        if name not in self._patterns:
            return np.asarray(grad.toarray() if sp.issparse(grad) else grad, dtype=float)
        indices, indptr, shape = self._patterns[name]
        rows = np.repeat(np.arange(shape[0]), np.diff(indptr))
        picked = sp.csr_matrix(grad)[rows, indices]
        picked = picked.toarray() if sp.issparse(picked) else np.asarray(picked)
        return np.asarray(picked, dtype=float).ravel()

    def to_model(self) -> ImplicitModel:
        return ImplicitModel(
            *(self._weight(n) for n in _WEIGHTS),
            b_x=self.b_x.detach().numpy().copy(), b_y=self.b_y.detach().numpy().copy(),
            activation=self.activation, metadata=self.metadata,
        )

    def forward(self, U):
        U = U.reshape(U.shape[0], -1)
        return _Equilibrium.apply(self, U, *self.weight_params(), self.b_x, self.b_y)


def to_torch(model: ImplicitModel, tol: float = 1e-12) -> ImplicitModule:
    """An nn.Module computing the model's outputs; gradients by implicit differentiation.

    Forward solves the equilibrium with this package's solvers (float64); backward is the
    implicit gradient (App. G), so the module trains with any torch optimizer.

    Parameters
    ----------
    model : ImplicitModel
        The model.
    tol : float, default=1e-12
        The equilibrium tolerance of every forward pass.

    Returns
    -------
    ImplicitModule
        The module; ``to_model()`` gives back an ImplicitModel with its current weights.

    Examples
    --------
    >>> import torch
    >>> from implicit_cvx import ImplicitModel, to_torch
    >>> model = ImplicitModel(A=[[0, 0.5], [0, 0]], B=[[1, -1], [0, 1]], C=[[1, 1]], D=[[0, 0]],
    ...                       b_x=[0, 0.1])
    >>> module = to_torch(model)
    >>> u = torch.tensor([[1.0, 0.5]], dtype=torch.float64, requires_grad=True)
    >>> module(u).sum().backward()
    >>> u.grad
    tensor([[1.0000, 0.5000]], dtype=torch.float64)
    """
    if not isinstance(model, ImplicitModel):
        raise ValueError(f"to_torch needs an ImplicitModel, got {type(model).__name__}")
    return ImplicitModule(model, tol)
