"""implicit_cvx: implicit deep learning trained as convex optimization."""

__version__ = "0.1.0"
