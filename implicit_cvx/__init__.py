"""implicit_cvx: implicit deep learning trained as convex optimization.

x = φ(Ax + Bu + b_x), ŷ = Cx + Du + b_y, with ‖A‖_∞ ≤ κ < 1 for well-posedness.
"""

from .activations import Activation, ActivationMap, get_activation
from .convert import (
    cascade,
    conv2d_matrix,
    from_conv2d,
    from_layers,
    from_sklearn,
    parallel,
    residual_block,
)
from .equilibrium import EquilibriumError, EquilibriumInfo, IllPosedError, solve_equilibrium
from .gradients import implicit_adjoint, loss_gradients
from .model import ImplicitModel
from .structure import BlockStructure, block_structure
from .wellposed import (
    inf_norm,
    pf_eigenvalue,
    project_inf_ball,
    project_l1_ball_rows,
    rescale,
    wellposedness_report,
)

__version__ = "0.1.0"


def __getattr__(name):
    # The estimators import scikit-learn's machinery; load them on first use only.
    if name in ("ImplicitClassifier", "ImplicitRegressor"):
        from . import estimators

        return getattr(estimators, name)
    raise AttributeError(f"module 'implicit_cvx' has no attribute {name!r}")


__all__ = [
    "Activation", "ActivationMap", "BlockStructure", "EquilibriumError", "EquilibriumInfo",
    "IllPosedError", "ImplicitClassifier", "ImplicitModel", "ImplicitRegressor", "block_structure",
    "cascade", "conv2d_matrix", "from_conv2d", "from_layers", "from_sklearn", "get_activation",
    "implicit_adjoint", "inf_norm", "loss_gradients", "parallel", "pf_eigenvalue",
    "project_inf_ball", "project_l1_ball_rows", "rescale", "residual_block", "solve_equilibrium",
    "wellposedness_report",
]
