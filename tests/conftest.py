"""Test-wide settings: one BLAS thread per test process (pytest -n 2 already uses both cores;
oversubscribed BLAS threads made some tests 15× slower)."""

from threadpoolctl import threadpool_limits

_BLAS_LIMIT = threadpool_limits(limits=1)
