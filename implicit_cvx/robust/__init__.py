"""Robustness of implicit models (paper §4, DESIGN §7): sensitivity bounds, certified bounds on
ℓ∞ balls (box, interval, LP relaxation with a weak-duality certificate) and attacks."""

from .attacks import AttackResult, attack_k, gradient_attack, pgd_attack, sensitivity_attack
from .bounds import (
    LipschitzBound,
    SparseBound,
    lipschitz_bound,
    residual_widening,
    sensitivity_matrix,
    sparse_perturbation_bound,
    state_bounds,
)
from .certify import METHODS, CertifyResult, certify, input_box, margin_lower_bounds, output_bounds

__all__ = [
    "METHODS",
    "AttackResult",
    "CertifyResult",
    "LipschitzBound",
    "SparseBound",
    "attack_k",
    "certify",
    "gradient_attack",
    "input_box",
    "lipschitz_bound",
    "margin_lower_bounds",
    "output_bounds",
    "pgd_attack",
    "residual_widening",
    "sensitivity_attack",
    "sensitivity_matrix",
    "sparse_perturbation_bound",
    "state_bounds",
]
