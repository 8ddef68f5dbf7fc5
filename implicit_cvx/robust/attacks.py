"""Attacks that check the certificates (paper §4 / Table 1).

- sensitivity attack: rank inputs by the column sums of S (one ranking for all samples);
- gradient-saliency attack: rank inputs per sample by |∇_u L| (cross-entropy, implicit gradient);
  both set the top k = max(1, round(fraction·p)) inputs to values drawn uniformly from the domain;
- PGD in ℓ∞ with the implicit gradient ∇_u (cross-entropy or margin loss).
Success rate = share of correctly classified samples (ŷ_y > ŷ_j for all j ≠ y; a tie is an error)
whose predicted class changes. A model with one output is a binary classifier (class 1 iff ŷ > 0,
margin (2y − 1)ŷ, cross-entropy log(1 + exp(−(2y − 1)ŷ))). Domains and ε may be per feature.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..train.objective import predicted_labels
from .bounds import sensitivity_matrix
from .certify import _check_domain as _domain_arrays
from .certify import _clean_margins, _inner_box, check_labels

__all__ = ["AttackResult", "attack_k", "gradient_attack", "pgd_attack", "sensitivity_attack"]

EQ_TOL = 1e-10


@dataclass
class AttackResult:
    """Outcome of one attack on m samples.

    Attributes
    ----------
    kind : str
        "sensitivity", "gradient", "pgd" or "sparse_lp".
    fraction : float or None
        The share of inputs perturbed (sensitivity and gradient attacks).
    k : int or None
        The number of inputs perturbed.
    eps : float, list or None
        The PGD radius (a float, or a list of per-feature radii).
    success_rate : float
        changed.sum() / correct.sum() (nan when no sample is correct).
    samples : int
        m.
    n_correct : int
        Clean-correct samples.
    correct : ndarray of bool, shape (m,)
        Clean-correct samples (the ones attacked).
    changed : ndarray of bool, shape (m,)
        Correct samples whose predicted class changed.
    predictions, adversarial_predictions : ndarray, shape (m,)
        Labels at U and at U_adv.
    adversarial_margins : ndarray, shape (m,)
        ŷ_y − max_{j≠y} ŷ_j at U_adv ((2y − 1)ŷ for one output).
    U_adv : ndarray, shape (m, p)
        The perturbed inputs.
    indices : ndarray or None
        The perturbed inputs, (k,) for the sensitivity attack, (m, k) for the gradient one.

    Examples
    --------
    >>> import numpy as np
    >>> from implicit_cvx import ImplicitModel, robust
    >>> model = ImplicitModel(A=[[0, 0.5], [0.2, 0]], B=[[1, -1], [0.5, 1]],
    ...                       C=[[1, -1], [-1, 1]], D=np.zeros((2, 2)))
    >>> U = np.array([[1.0, 0.0], [0.0, 1.0], [0.4, 0.6]])
    >>> y = np.array([0, 1, 1])
    >>> result = robust.pgd_attack(model, U, y, 0.5, domain=(0, 1), rng=np.random.default_rng(0))
    >>> result.kind, result.n_correct, result.changed
    ('pgd', 3, array([ True, False,  True]))
    """

    kind: str
    fraction: float | None
    k: int | None
    eps: float | list | None
    success_rate: float
    samples: int
    n_correct: int
    correct: np.ndarray
    changed: np.ndarray
    predictions: np.ndarray
    adversarial_predictions: np.ndarray
    adversarial_margins: np.ndarray
    U_adv: np.ndarray
    indices: np.ndarray | None = None


def attack_k(fraction, p: int) -> int:
    """k = max(1, round(fraction·p)) (halves round up); fraction must lie in (0, 1].

    Parameters
    ----------
    fraction : float
        The share of the p inputs to perturb.
    p : int
        The number of inputs.

    Returns
    -------
    int
        k.

    Raises
    ------
    ValueError
        If fraction is not a number in (0, 1].

    Examples
    --------
    >>> from implicit_cvx import robust
    >>> robust.attack_k(0.5, 2), robust.attack_k(0.25, 10)
    (1, 3)
    """
    try:
        f = float(fraction)
    except (TypeError, ValueError):
        raise ValueError(f"fraction must be a number in (0, 1], got {fraction!r}") from None
    if not 0.0 < f <= 1.0:
        raise ValueError(
            f"fraction must be in (0, 1] (the share of inputs perturbed; 0.1 is 10%), got {fraction!r}"
        )
    return int(min(p, max(1, np.floor(f * p + 0.5))))


def _check_domain(domain, p: int) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) per feature, finite (values are drawn from it)."""
    lo, hi = _domain_arrays(domain, p)
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
        raise ValueError(f"domain must be finite with lo < hi (values are drawn from it), got {domain!r}")
    return lo, hi


def _prepare(model, U, y):
    U = model.check_inputs(U)
    return U, check_labels(y, U.shape[0], model.n_outputs)


def _margins(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """ŷ_y − max_{j≠y} ŷ_j per sample ((2y − 1)ŷ for one output)."""
    return _clean_margins(logits, y).min(axis=1, initial=np.inf)


def _result(model, kind, U, y, U_adv, logits, *, fraction=None, k=None, eps=None, indices=None, adv_logits=None):
    """Assemble an AttackResult from clean logits and the adversarial inputs."""
    if adv_logits is None:
        adv_logits = model.predict(U_adv, tol=EQ_TOL, raise_on_failure=False)
    correct = _margins(logits, y) > 0
    pred, adv = predicted_labels(logits), predicted_labels(adv_logits)
    changed = correct & (adv != pred)
    n_correct = int(correct.sum())
    return AttackResult(
        kind=kind, fraction=fraction, k=k, eps=eps,
        success_rate=float(changed.sum() / n_correct) if n_correct else float("nan"),
        samples=int(U.shape[0]), n_correct=n_correct, correct=correct, changed=changed,
        predictions=pred, adversarial_predictions=adv, adversarial_margins=_margins(adv_logits, y),
        U_adv=U_adv, indices=indices,
    )


def _replace_top(U, indices, domain, rng):
    """U with the inputs `indices` ((k,) shared or (m, k) per sample) set to uniform draws from
    the domain (lo, hi) per feature."""
    lo, hi = domain
    U_adv = U.copy()
    m = U.shape[0]
    k = indices.shape[-1]
    rows = np.arange(m)[:, None]
    cols = np.broadcast_to(indices, (m, k))
    U_adv[rows, cols] = rng.uniform(lo[cols], hi[cols])
    return U_adv


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest scores along the last axis (ties: lower index first)."""
    return np.argsort(-scores, axis=-1, kind="stable")[..., :k]


def sensitivity_attack(model, U, y, fraction, domain=(0.0, 1.0), rng=None) -> AttackResult:
    """Perturb the k inputs with the largest column sums of S (Thm 4.3) to uniform values.

    S = |C|(I − |A|)⁻¹|B| + |D|; the same k inputs for every sample, their values drawn
    uniformly from the domain.

    Parameters
    ----------
    model : ImplicitModel
        A classifier.
    U : array_like, shape (m, p)
        Inputs.
    y : array_like, shape (m,)
        Labels.
    fraction : float
        Share of the inputs to perturb (k = `attack_k(fraction, p)`).
    domain : (lo, hi), default=(0.0, 1.0)
        Finite range the new values are drawn from.
    rng : numpy.random.Generator or int, optional
        The randomness.

    Returns
    -------
    AttackResult
        With ``indices`` the k inputs.

    Raises
    ------
    ValueError
        If fraction or domain are invalid.

    Examples
    --------
    >>> import numpy as np
    >>> from implicit_cvx import ImplicitModel, robust
    >>> model = ImplicitModel(A=[[0, 0.5], [0.2, 0]], B=[[1, -1], [0.5, 1]],
    ...                       C=[[1, -1], [-1, 1]], D=np.zeros((2, 2)))
    >>> U = np.array([[1.0, 0.0], [0.0, 1.0], [0.4, 0.6]])
    >>> y = np.array([0, 1, 1])
    >>> result = robust.sensitivity_attack(model, U, y, 0.5, rng=np.random.default_rng(0))
    >>> result.indices, round(result.success_rate, 3)
    (array([1]), 0.667)
    """
    U, y = _prepare(model, U, y)
    k = attack_k(fraction, model.n_inputs)
    domain, rng = _check_domain(domain, model.n_inputs), np.random.default_rng(rng)
    indices = _top_k(sensitivity_matrix(model).sum(axis=0), k)
    logits = model.predict(U, tol=EQ_TOL, raise_on_failure=False)
    U_adv = _replace_top(U, indices, domain, rng)
    return _result(model, "sensitivity", U, y, U_adv, logits, fraction=float(fraction), k=k, indices=indices)


def _sigmoid(t: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * t))


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _loss_output_gradient(logits, y, loss: str) -> np.ndarray:
    """∂L/∂ŷ per sample: cross-entropy softmax(ŷ) − e_y, or margin max_{j≠y} ŷ_j − ŷ_y; for one
    output (s = 2y − 1) log(1 + exp(−sŷ)) and −sŷ."""
    if logits.shape[1] == 1:
        s = (2.0 * y - 1.0)[:, None]
        return -s * _sigmoid(-s * logits) if loss == "ce" else -s * np.ones_like(logits)
    rows = np.arange(y.size)
    if loss == "ce":
        G = _softmax(logits)
        G[rows, y] -= 1.0
        return G
    other = logits.copy()
    other[rows, y] = -np.inf
    G = np.zeros_like(logits)
    G[rows, other.argmax(axis=1)] = 1.0
    G[rows, y] -= 1.0
    return G


def _input_gradient(model, U, y, loss: str):
    """(∇_u L (m, p), logits) by implicit differentiation at the equilibrium (paper App. G)."""
    from ..gradients import loss_gradients

    X = model.equilibrium(U, tol=EQ_TOL, raise_on_failure=False)
    logits = model.output(X, U)
    return loss_gradients(model, U, X, _loss_output_gradient(logits, y, loss))["U"], logits


def gradient_attack(model, U, y, fraction, domain=(0.0, 1.0), rng=None) -> AttackResult:
    """Perturb, per sample, the k inputs with the largest |∇_u L| (cross-entropy) to uniform values.

    A gradient-saliency attack; the new values are drawn uniformly from the domain.

    Parameters
    ----------
    model : ImplicitModel
        A classifier.
    U : array_like, shape (m, p)
        Inputs.
    y : array_like, shape (m,)
        Labels.
    fraction : float
        Share of the inputs to perturb (k = `attack_k(fraction, p)`).
    domain : (lo, hi), default=(0.0, 1.0)
        Finite range the new values are drawn from.
    rng : numpy.random.Generator or int, optional
        The randomness.

    Returns
    -------
    AttackResult
        With ``indices`` (m, k), the inputs of each sample.

    Raises
    ------
    ValueError
        If fraction or domain are invalid.

    Examples
    --------
    >>> import numpy as np
    >>> from implicit_cvx import ImplicitModel, robust
    >>> model = ImplicitModel(A=[[0, 0.5], [0.2, 0]], B=[[1, -1], [0.5, 1]],
    ...                       C=[[1, -1], [-1, 1]], D=np.zeros((2, 2)))
    >>> U = np.array([[1.0, 0.0], [0.0, 1.0], [0.4, 0.6]])
    >>> y = np.array([0, 1, 1])
    >>> result = robust.gradient_attack(model, U, y, 0.5, rng=np.random.default_rng(0))
    >>> result.indices.ravel(), round(result.success_rate, 3)
    (array([1, 1, 1]), 0.667)
    """
    U, y = _prepare(model, U, y)
    k = attack_k(fraction, model.n_inputs)
    domain, rng = _check_domain(domain, model.n_inputs), np.random.default_rng(rng)
    grad, logits = _input_gradient(model, U, y, "ce")
    indices = _top_k(np.abs(grad), k)
    U_adv = _replace_top(U, indices, domain, rng)
    return _result(model, "gradient", U, y, U_adv, logits, fraction=float(fraction), k=k, indices=indices)


def pgd_attack(model, U, y, eps, steps: int = 40, step_size=None, domain=None, rng=None,
               loss: str = "ce", random_start: bool = True) -> AttackResult:
    """ℓ∞ projected gradient ascent of the loss within the ε-box.

    U_adv holds, per sample, the iterate with the smallest margin seen. An attack can never
    succeed where `certify` certified the sample: a certificate bounds every input in the ball.

    Parameters
    ----------
    model : ImplicitModel
        A classifier.
    U : array_like, shape (m, p)
        Inputs.
    y : array_like, shape (m,)
        Labels.
    eps : float or array_like of shape (p,)
        The radius, or one radius per feature.
    steps : int, default=40
        Ascent steps.
    step_size : float, optional
        Step length (default 2.5·ε/steps).
    domain : (lo, hi), optional
        Input domain the iterates are clipped to (scalars or per-feature arrays, ±inf allowed).
    rng : numpy.random.Generator or int, optional
        The randomness of the random start.
    loss : {"ce", "margin"}, default="ce"
        The loss ascended: cross-entropy or the margin.
    random_start : bool, default=True
        Start from a uniform point of the box.

    Returns
    -------
    AttackResult
        The attack's outcome.

    Raises
    ------
    ValueError
        If loss, steps or step_size are invalid.

    Examples
    --------
    At ε = 0.2, where `certify` with "lp" certifies every sample, the attack fails:

    >>> import numpy as np
    >>> from implicit_cvx import ImplicitModel, robust
    >>> model = ImplicitModel(A=[[0, 0.5], [0.2, 0]], B=[[1, -1], [0.5, 1]],
    ...                       C=[[1, -1], [-1, 1]], D=np.zeros((2, 2)))
    >>> U = np.array([[1.0, 0.0], [0.0, 1.0], [0.4, 0.6]])
    >>> y = np.array([0, 1, 1])
    >>> result = robust.pgd_attack(model, U, y, 0.2, domain=(0, 1), rng=np.random.default_rng(0))
    >>> result.success_rate, result.adversarial_margins.round(3)
    (0.0, array([0.4  , 1.6  , 0.422]))
    """
    U, y = _prepare(model, U, y)
    if loss not in ("ce", "margin"):
        raise ValueError(f"pgd loss must be 'ce' or 'margin', got {loss!r}")
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    lo, hi = _inner_box(U, eps, domain)  # inside the ball (ends rounded inward)
    eps = np.asarray(eps, dtype=float)
    alpha = 2.5 * eps / steps if step_size is None else np.asarray(step_size, dtype=float)
    if not np.all(np.isfinite(alpha) & (alpha >= 0)):
        raise ValueError(f"step_size must be finite and ≥ 0, got {step_size!r}")
    eps = float(eps) if eps.ndim == 0 else eps.tolist()
    rng = np.random.default_rng(rng)
    logits = model.predict(U, tol=EQ_TOL, raise_on_failure=False)
    best, best_logits, best_margin = U.copy(), logits.copy(), _margins(logits, y)
    V = rng.uniform(lo, hi) if random_start else U.copy()
    for step in range(int(steps) + 1):
        grad, cur = _input_gradient(model, V, y, loss)
        margin = _margins(cur, y)
        better = margin < best_margin
        best[better], best_logits[better], best_margin[better] = V[better], cur[better], margin[better]
        if step < steps:
            V = np.clip(V + alpha * np.sign(grad), lo, hi)
    return _result(model, "pgd", U, y, best, logits, eps=eps, adv_logits=best_logits)
