"""The fitting methods, registered once by name.

Adding a method is one new module (a FitMethod subclass with its options dataclass) and one line
here. The YAML schema (`train.fit.config_schema`), the keyword arguments of `fit_<name>` and the
estimators' `method_params` are all derived from the registered options.
"""

from __future__ import annotations

from ..config import ConfigError
from .adjoint import AdjointMethod
from .fenchel import FenchelMethod
from .gradient import GradientMethod
from .sim import SimMethod

METHODS = {cls.name: cls for cls in (SimMethod, AdjointMethod, FenchelMethod, GradientMethod)}


def get_method(name: str):
    """The FitMethod class registered as `name`."""
    if name not in METHODS:
        raise ConfigError(f"unknown fitting method {name!r}; choose one of {sorted(METHODS)}")
    return METHODS[name]
