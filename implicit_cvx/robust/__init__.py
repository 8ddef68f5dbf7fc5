"""Robustness of implicit models (paper §4): sensitivity bounds, certified bounds on ℓ∞ balls
(box, interval, linear bound propagation through the fixed point with optimized slopes, the LP
relaxation with a weak-duality certificate), exact verification by mixed-integer programming,
attacks, robust training (‖S‖_∞ ≤ s in the (C, D) step) and input importance from S."""

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
from .certify import (
    METHODS,
    CertifyResult,
    certify,
    input_box,
    margin_lower_bounds,
    margin_rows,
    output_bounds,
)
from .exact import margin_range
from .importance import Importance, input_importance, model_importance, plot_importance
from .linear import linear_lower_bounds, optimize_slopes, tighten
from .loss import WorstCaseLoss, worst_case_loss, worst_case_loss_bounds
from .partitioned import certify_partitioned, merge_certify_results
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
    "certify_partitioned",
    "check_s_bound",
    "fit_output_layer_s_bounded",
    "gradient_attack",
    "input_box",
    "input_importance",
    "linear_lower_bounds",
    "lipschitz_bound",
    "margin_lower_bounds",
    "margin_range",
    "margin_rows",
    "merge_certify_results",
    "model_importance",
    "optimize_slopes",
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
    "tighten",
]
