"""implicit_cvx: implicit deep learning trained as convex optimization.

x = φ(Ax + Bu + b_x), ŷ = Cx + Du + b_y, with ‖A‖_∞ ≤ κ < 1 for well-posedness.
"""

from .activations import (
    Activation,
    ActivationMap,
    GateBlock,
    MaxPoolBlock,
    SoftmaxBlock,
    get_activation,
)
from .compose import feedback, gated
from .convert import (
    cascade,
    conv2d_matrix,
    from_conv2d,
    from_layers,
    from_sklearn,
    residual_block,
    stack_parallel,
)
from .equilibrium import EquilibriumError, EquilibriumInfo, IllPosedError, solve_equilibrium
from .gradients import implicit_adjoint, loss_gradients
from .model import ImplicitModel
from .network import from_sequential
from .recurrent import from_lstm, from_rnn
from .structure import BlockStructure, block_structure
from .wellposed import (
    blip_eigenvalue,
    inf_norm,
    pf_eigenvalue,
    project_inf_ball,
    project_l1_ball_rows,
    rescale,
    wellposedness_report,
)

__version__ = "0.1.0"


def __getattr__(name):
    # The estimators import scikit-learn's machinery, the torch bridge imports torch (an
    # optional extra); load them on first use only.
    if name in ("ImplicitClassifier", "ImplicitRegressor"):
        from . import estimators

        return getattr(estimators, name)
    if name in ("from_torch", "to_torch"):
        from . import torch_interop

        return getattr(torch_interop, name)
    raise AttributeError(f"module 'implicit_cvx' has no attribute {name!r}")


__all__ = [
    "Activation", "ActivationMap", "BlockStructure", "EquilibriumError", "EquilibriumInfo",
    "GateBlock", "IllPosedError", "ImplicitClassifier", "ImplicitModel", "ImplicitRegressor",
    "MaxPoolBlock", "SoftmaxBlock", "blip_eigenvalue", "block_structure", "cascade",
    "conv2d_matrix", "feedback", "from_conv2d", "from_layers", "from_lstm", "from_rnn",
    "from_sequential", "from_sklearn", "from_torch", "gated", "get_activation",
    "implicit_adjoint", "inf_norm", "loss_gradients", "pf_eigenvalue", "project_inf_ball",
    "project_l1_ball_rows", "rescale", "residual_block", "solve_equilibrium", "stack_parallel",
    "to_torch", "wellposedness_report",
]
