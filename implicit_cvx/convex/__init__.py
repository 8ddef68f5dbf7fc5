"""The shared convex engine: Gram-reduced row problems with a certified duality gap per row."""

from .gram import GramStats, gram_stats
from .rows import RowSolution, RowSpec, row_gap, solve_path, solve_rows

__all__ = ["GramStats", "RowSolution", "RowSpec", "gram_stats", "row_gap", "solve_path", "solve_rows"]
