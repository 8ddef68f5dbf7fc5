"""Initial models for the fitting methods: random well-posed models, saved files, given models."""

from __future__ import annotations

import os

import numpy as np
import scipy.sparse as sp

from ..model import ImplicitModel
from ..numerics import check_kappa, in_ball, inf_norm


def as_generator(seed) -> np.random.Generator:
    """A numpy Generator from an int seed, None, or a Generator (returned as is)."""
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is not None and not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an int, None or a numpy Generator, got {seed!r}")
    return np.random.default_rng(seed)


def random_model(
    n_states: int,
    n_inputs: int,
    n_outputs: int,
    kappa: float = 0.95,
    seed=0,
    activation="relu",
    include_D: bool = True,
    scale: float = 1.0,
    a_fraction: float = 0.5,
    bias_scale: float = 1.0,
) -> ImplicitModel:
    """A random well-posed model: ‖A‖_∞ = a_fraction·κ, B, C ~ scale·N(0, 1)/√fan-in.

    A is a Gaussian matrix rescaled as a whole onto ‖A‖_∞ = a_fraction·κ (inside the κ-ball of
    paper §2); D is small (0.1·scale·N(0,1)/√p) when include_D, else zero; b_x ~ bias_scale·N(0, 1)
    spreads the ReLU kinks over the inputs (zero biases put them all at u = 0), b_y = 0.
    """
    for name, v in (("n_states", n_states), ("n_inputs", n_inputs), ("n_outputs", n_outputs)):
        if int(v) != v or v < 1:
            raise ValueError(f"{name}={v!r} must be a positive integer")
    kappa = check_kappa(kappa)
    if not (0.0 <= a_fraction <= 1.0):
        raise ValueError(f"a_fraction={a_fraction!r} must lie in [0, 1] (‖A‖_∞ = a_fraction·κ)")
    rng = as_generator(seed)
    n, p, q = int(n_states), int(n_inputs), int(n_outputs)
    A = rng.standard_normal((n, n))
    A *= a_fraction * kappa / max(inf_norm(A), 1e-300)
    B = scale * rng.standard_normal((n, p)) / np.sqrt(p)
    C = scale * rng.standard_normal((q, n)) / np.sqrt(n)
    D = 0.1 * scale * rng.standard_normal((q, p)) / np.sqrt(p) if include_D else np.zeros((q, p))
    b_x = bias_scale * rng.standard_normal(n)
    return ImplicitModel(A, B, C, D, b_x=b_x, activation=activation, metadata={"kappa": kappa})


SPREAD_PASSES = 3  # bias/equilibrium passes of spread_biases (the kinks move with the states)


def spread_biases(model: ImplicitModel, U, seed=0) -> ImplicitModel:
    """The model with b_x placed so that each state starts active on a random 20–80 % of the rows
    of U. A ReLU state inactive on every row gets neither gradient nor adjoint signal and never
    recovers; with b_x ~ N(0, 1) on inputs in [0, 1], a quarter of the states start that way."""
    rng = as_generator(seed)
    U = np.asarray(U, dtype=float)
    A, B = _dense(model.A), _dense(model.B)
    quantiles = rng.uniform(0.2, 0.8, model.n_states)
    for _ in range(SPREAD_PASSES):
        Z = model.equilibrium(U, method="reproducible") @ A.T + U @ B.T  # pre-activations without the bias
        b_x = -np.array([np.quantile(Z[:, i], q) for i, q in enumerate(quantiles)])  # n ≤ 10³ calls
        model = model.with_weights(b_x=b_x)
    return model


def _dense(M) -> np.ndarray:
    return M.toarray() if sp.issparse(M) else np.array(M, dtype=float)


def unfold_saved_init(init, transform):
    """`init` for a fit on transformed inputs u = (x − μ) ⊙ s: a saved model file takes raw inputs
    x, so it is loaded and unfolded into u's units (exactly: B' = B diag(1/s), b_x' = b_x + Bμ,
    likewise D, b_y); "random", "data", None and in-memory models are returned as given."""
    if not isinstance(init, (str, os.PathLike)) or init in ("random", "data"):
        return init
    if not os.path.isfile(init):
        raise ValueError(f"init={str(init)!r} is neither 'random', 'data' nor an existing model file")
    return transform.unfold(ImplicitModel.load(init))


def init_model(
    init,
    *,
    n_inputs: int,
    n_outputs: int,
    n_states: int | None = None,
    kappa: float = 0.95,
    seed=0,
    activation="relu",
    include_D: bool = True,
    U=None,
) -> ImplicitModel:
    """The starting model of a fit: "random"/None, "data" (random, then `spread_biases` on the
    training inputs U), a path to a saved model, or an ImplicitModel.

    Shapes are checked against the data (n_inputs = p, n_outputs = q) and n_states; the model
    must lie in the κ-ball; weights are returned dense (a copy, the input is never modified).
    """
    kappa = check_kappa(kappa)
    if init is None or (isinstance(init, str) and init in ("random", "data")):
        if n_states is None:
            raise ValueError("n_states is required for a random initial model")
        rng = as_generator(seed)
        model = random_model(n_states, n_inputs, n_outputs, kappa, rng, activation, include_D)
        if init == "data":
            if U is None:
                raise ValueError("init='data' places the biases from the training inputs: pass U")
            model = spread_biases(model, U, rng)
        return model
    if isinstance(init, (str, os.PathLike)):
        if not os.path.exists(init):
            raise ValueError(
                f"init={str(init)!r} is neither 'random', 'data' nor an existing model file"
            )
        init = ImplicitModel.load(init)
    if not isinstance(init, ImplicitModel):
        raise ValueError(
            f"init must be 'random', 'data', a model file path or an ImplicitModel, got "
            f"{type(init).__name__}"
        )
    got = (init.n_inputs, init.n_outputs)
    if got != (n_inputs, n_outputs):
        raise ValueError(
            f"initial model maps {got[0]} inputs to {got[1]} outputs but the data have "
            f"{n_inputs} inputs and {n_outputs} outputs (classes); use a matching model"
        )
    if n_states is not None and init.n_states != n_states:
        raise ValueError(
            f"initial model has {init.n_states} states but n_states={n_states}; pass "
            "n_states=None or a matching value"
        )
    A = _dense(init.A)
    norm = inf_norm(A)
    if not in_ball(A, kappa):
        raise ValueError(
            f"initial model has ‖A‖_∞ = {norm:.6g} > κ = {kappa}; rescale it into the ball "
            "(wellposed.rescale, ReLU models) or project A (wellposed.project_inf_ball) first"
        )
    D = _dense(init.D)
    if not include_D and np.any(D):
        raise ValueError("include_D=False but the initial model has a nonzero D; zero it first")
    meta = dict(init.metadata, kappa=kappa)
    return ImplicitModel(
        A, _dense(init.B), _dense(init.C), D, init.b_x.copy(), init.b_y.copy(),
        activation=init.activation, metadata=meta,
    )
