"""YAML config validation: defaults, and errors that name the key, the value and what is allowed."""

import pytest

from implicit_cvx.config import ConfigError, Field, validate
from implicit_cvx.train.fit import SCHEMA, load_config


def test_defaults_filled_and_values_coerced():
    cfg = validate({"method": "sim", "model": {"kappa": 0.5}}, SCHEMA)
    assert cfg["method"] == "sim"
    assert cfg["model"]["kappa"] == 0.5
    assert cfg["model"]["n_states"] == SCHEMA["model"]["n_states"].default
    assert cfg["sim"]["lam"] == SCHEMA["sim"]["lam"].default


@pytest.mark.parametrize(
    "raw, key, fragment",
    [
        ({"method": "sgd"}, "'method'", "one of 'sim'"),
        ({"model": {"kappa": 1.0}}, "'model.kappa'", "< 1"),
        ({"model": {"kappa": 0}}, "'model.kappa'", "> 0"),
        ({"model": {"n_states": "ten"}}, "'model.n_states'", "an integer"),
        ({"model": {"include_D": "yes"}}, "'model.include_D'", "true or false"),
        ({"sim": {"lam": -1.0}}, "'sim.lam'", "≥ 0"),
    ],
)
def test_errors_name_key_value_and_allowed(raw, key, fragment):
    with pytest.raises(ConfigError) as err:
        validate(raw, SCHEMA)
    msg = str(err.value)
    assert key in msg and "allowed" in msg and fragment in msg


def test_unknown_keys_are_refused_with_the_allowed_list():
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) \['kapa'\].*allowed keys"):
        validate({"model": {"kapa": 0.9}}, SCHEMA)


def test_section_must_be_mapping():
    with pytest.raises(ConfigError, match="must be a mapping"):
        validate({"model": [1, 2]}, SCHEMA)


def test_floats_field_and_bool_is_not_a_number():
    f = Field("floats", [0.1], low=0)
    assert f.check("eps", 0.5) == [0.5]
    assert f.check("eps", [1, 2]) == [1.0, 2.0]
    with pytest.raises(ConfigError):
        f.check("eps", [0.1, -1])
    with pytest.raises(ConfigError):
        Field("float", 1.0).check("x", True)


@pytest.mark.parametrize("name", ["sim_digits", "adjoint_digits", "fenchel_digits", "gradient_digits"])
def test_shipped_configs_validate(name):
    cfg = load_config(f"configs/{name}.yaml")
    assert cfg["method"] == name.split("_")[0]


def test_bad_yaml_file_names_the_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("method: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(p)
    p.write_text("- a list\n")
    with pytest.raises(ConfigError, match="must be a YAML mapping"):
        load_config(p)
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "missing.yaml")
