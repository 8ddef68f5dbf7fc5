"""Test-wide settings: derandomized hypothesis; one BLAS thread per test process (pytest -n 2
already uses both cores; oversubscribed BLAS threads made some tests 15× slower)."""

from hypothesis import settings
from threadpoolctl import threadpool_limits

# Property tests draw the same examples on every run (the suite is deterministic); a test may
# still ask for more examples or a deadline in its own @settings.
settings.register_profile("deterministic", derandomize=True, database=None)
settings.load_profile("deterministic")

_BLAS_LIMIT = threadpool_limits(limits=1)
