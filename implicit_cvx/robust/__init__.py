"""Robustness of implicit models (paper §4, DESIGN §7): sensitivity bounds, certified bounds on
ℓ∞ balls (box, interval, LP relaxation with a weak-duality certificate), attacks, robust training
(‖S‖_∞ ≤ s in the (C, D) step) and input importance from S."""

from .approximation import ModelErrorBound, low_rank_truncation, model_error_bound
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
from .importance import Importance, input_importance, model_importance, plot_importance
from .loss import WorstCaseLoss, worst_case_loss, worst_case_loss_bounds
from .sdp import SdpMargins, sdp_margin_lower_bounds
from .sparse import (
    SparseMargins,
    sparse_attack,
    sparse_closed_form_margins,
    sparse_margin_lower_bounds,
)
from .training import (
    check_s_bound,
    fit_output_layer_s_bounded,
    s_bound_scaling,
    s_bound_weights,
    s_norm_bound,
)

__all__ = [
    "METHODS",
    "ModelErrorBound",
    "SdpMargins",
    "SparseMargins",
    "WorstCaseLoss",
    "low_rank_truncation",
    "model_error_bound",
    "sdp_margin_lower_bounds",
    "sparse_attack",
    "sparse_closed_form_margins",
    "sparse_margin_lower_bounds",
    "worst_case_loss",
    "worst_case_loss_bounds",
    "AttackResult",
    "CertifyResult",
    "Importance",
    "LipschitzBound",
    "SparseBound",
    "attack_k",
    "certify",
    "check_s_bound",
    "fit_output_layer_s_bounded",
    "gradient_attack",
    "input_box",
    "input_importance",
    "lipschitz_bound",
    "margin_lower_bounds",
    "model_importance",
    "output_bounds",
    "pgd_attack",
    "plot_importance",
    "residual_widening",
    "s_bound_scaling",
    "s_bound_weights",
    "s_norm_bound",
    "sensitivity_attack",
    "sensitivity_matrix",
    "sparse_perturbation_bound",
    "state_bounds",
]
