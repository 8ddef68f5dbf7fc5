"""One declaration per option: the YAML schema, the fit functions' keyword arguments and the
estimators' parameters / method_params agree for every registered method."""

import inspect

import numpy as np
import pytest

from implicit_cvx import ImplicitClassifier
from implicit_cvx.config import ConfigError, Field, option_specs
from implicit_cvx.estimators import _ImplicitEstimator
from implicit_cvx.train import adjoint, fenchel, gradient, sim
from implicit_cvx.train.fit import config_schema, method_options
from implicit_cvx.train.registry import METHODS

FIT_FUNCTIONS = {"sim": sim.fit_sim, "adjoint": adjoint.fit_adjoint, "fenchel": fenchel.fit_fenchel,
                 "gradient": gradient.fit_gradient}
DRIVER_ONLY = {("run", "checkpoint_every")}  # read by the CLI's RunLog, not by a fit function


def _schema_keys(method: str) -> dict:
    """(section, key) → Field of every option in the config schema of `method`."""
    out = {}
    for section, spec in config_schema(method).items():
        if isinstance(spec, dict):
            out.update({(section, key): f for key, f in spec.items()})
        elif section not in ("method", "seed"):
            out[("top", section)] = spec
    return {k: v for k, v in out.items() if k[0] != "dataset" and k not in DRIVER_ONLY}


@pytest.mark.parametrize("method", sorted(METHODS))
def test_schema_fit_function_and_options_agree(method):
    specs = option_specs(METHODS[method].Options)
    in_config = {s.name for s in specs if s.section != "python"}
    schema = _schema_keys(method)
    assert {key for _, key in schema} == in_config
    for s in specs:
        if s.section != "python":
            assert schema[(s.section or method, s.name)] is s.field  # the very same declaration
    params = inspect.signature(FIT_FUNCTIONS[method]).parameters
    assert {s.name for s in specs} <= set(params)
    for s in specs:
        assert params[s.name].default == s.field.default, s.name
    cfg = {"method": method, "seed": 0, "dataset": {}}
    filled = method_options(_validate(cfg, method))
    assert set(filled) == in_config and all(filled[k] == _default(specs, k) for k in filled)


def _validate(cfg, method):
    from implicit_cvx.config import validate

    return validate(cfg, config_schema(method))


def _default(specs, name):
    return next(s.field.default for s in specs if s.name == name)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_estimator_parameters_map_to_declared_options(method):
    params = set(inspect.signature(_ImplicitEstimator.__init__).parameters)
    for s in option_specs(METHODS[method].Options):
        assert s.estimator is None or s.estimator in params, (method, s.name, s.estimator)
        assert isinstance(s.field, Field) and s.field.help, f"{method}.{s.name} has no help text"


def test_method_params_are_validated_by_the_method():
    X = np.random.default_rng(0).normal(size=(30, 3))
    y = (X[:, 0] > 0).astype(int)
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['etta'\] for method 'adjoint'.*'eta'"):
        ImplicitClassifier(max_iter=1, method_params={"etta": 1.0}).fit(X, y)
    with pytest.raises(ConfigError, match="option 'eta'"):
        ImplicitClassifier(max_iter=1, method_params={"eta": -1.0}).fit(X, y)
    clf = ImplicitClassifier(n_states=4, max_iter=1, method_params={"eta": 0.5}).fit(X, y)
    assert clf.history_[0]["eta"] <= 0.5
