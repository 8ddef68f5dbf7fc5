"""Activations: componentwise non-expansive scalars (`scalar.py`), block activations that couple
the states of one block — max-pooling, softmax, gates, blockwise Lipschitz (BLIP, Thm 2.7)
(`blocks.py`) — and the map giving every state its activation (`maps.py`)."""

from .blocks import BLOCK_ACTIVATIONS, GateBlock, MaxPoolBlock, SoftmaxBlock
from .maps import ActivationMap, get_activation
from .scalar import NAMES, Activation, scalar_activation

__all__ = ["BLOCK_ACTIVATIONS", "NAMES", "Activation", "ActivationMap", "GateBlock", "MaxPoolBlock",
           "SoftmaxBlock", "get_activation", "scalar_activation"]
