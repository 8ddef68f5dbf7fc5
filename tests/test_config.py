"""YAML config validation: defaults, and errors that name the key, the value and what is allowed;
strict YAML (no aliases, no duplicate keys, sections must be mappings); keys a method does not
read are refused by name."""

import pytest

from implicit_cvx.config import ConfigError, Field, validate
from implicit_cvx.train.fit import config_schema, load_config, method_options


def test_defaults_filled_and_values_coerced():
    schema = config_schema("sim")
    cfg = validate({"method": "sim", "model": {"kappa": 0.5}}, schema)
    assert cfg["method"] == "sim"
    assert cfg["model"]["kappa"] == 0.5
    assert cfg["model"]["include_D"] is schema["model"]["include_D"].default
    assert cfg["sim"]["lam"] == schema["sim"]["lam"].default
    assert method_options(cfg)["lam"] == 1e-3 and method_options(cfg)["kappa"] == 0.5


@pytest.mark.parametrize(
    "raw, key, fragment",
    [
        ({"method": "sgd"}, "'method'", "one of 'sim'"),
        ({"model": {"kappa": 1.0}}, "'model.kappa'", "< 1"),
        ({"model": {"kappa": 0}}, "'model.kappa'", "> 0"),
        ({"model": {"n_states": "ten"}}, "'model.n_states'", "an integer"),
        ({"model": {"include_D": "yes"}}, "'model.include_D'", "true or false"),
        ({"adjoint": {"lam_l1": -1.0}}, "'adjoint.lam_l1'", "≥ 0"),
        ({"adjoint": {"eta": float("nan")}}, "'adjoint.eta'", "> 0"),
    ],
)
def test_errors_name_key_value_and_allowed(raw, key, fragment):
    with pytest.raises(ConfigError) as err:
        validate(raw, config_schema("adjoint"))
    msg = str(err.value)
    assert key in msg and "allowed" in msg and fragment in msg


def test_unknown_keys_are_refused_with_the_allowed_list():
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) \['kapa'\].*allowed keys"):
        validate({"model": {"kapa": 0.9}}, config_schema("adjoint"))


@pytest.mark.parametrize("section", [[1, 2], False, None, "text"])
def test_a_section_must_be_a_mapping(section):
    with pytest.raises(ConfigError, match="must be a mapping"):
        validate({"model": section}, config_schema("adjoint"))


def test_floats_field_and_bool_is_not_a_number():
    f = Field("floats", [0.1], low=0)
    assert f.check("eps", 0.5) == [0.5]
    assert f.check("eps", [1, 2]) == [1.0, 2.0]
    with pytest.raises(ConfigError):
        f.check("eps", [0.1, -1])
    with pytest.raises(ConfigError):
        Field("float", 1.0).check("x", True)


@pytest.mark.parametrize("name", ["sim_digits", "adjoint_digits", "fenchel_digits", "gradient_digits",
                                  "adjoint_mnist"])
def test_shipped_configs_validate(name):
    cfg = load_config(f"configs/{name}.yaml")
    assert cfg["method"] == name.split("_")[0]


def _config(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_bad_yaml_file_names_the_file(tmp_path):
    with pytest.raises(ConfigError, match="c.yaml: not valid YAML"):
        load_config(_config(tmp_path, "method: [unclosed\n"))
    with pytest.raises(ConfigError, match="must be a YAML mapping"):
        load_config(_config(tmp_path, "- a list\n"))
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="is not a file"):
        load_config(tmp_path)


def test_aliases_anchors_and_duplicate_keys_are_refused(tmp_path):
    bomb = "a: &a [1, 1]\nb: &b [*a, *a]\nc: [*b, *b]\nmethod: adjoint\n"
    with pytest.raises(ConfigError, match="anchors"):
        load_config(_config(tmp_path, bomb))
    with pytest.raises(ConfigError, match="duplicate config key 'seed'"):
        load_config(_config(tmp_path, "method: adjoint\nseed: 1\nseed: 2\n"))
    with pytest.raises(ConfigError, match="duplicate config key 'kappa'"):
        load_config(_config(tmp_path, "model: {kappa: 0.5, kappa: 0.6}\n"))


@pytest.mark.parametrize("text, fragment", [
    ("method: sim\nmodel: {init: data}\n", "'model.init' is not used by method 'sim'"),
    ("method: sim\nadjoint: {eta: 1.0}\n", "'adjoint' is not used by method 'sim'"),
    ("method: gradient\nrun: {n_jobs: 2}\n", "'run.n_jobs' is not used by method 'gradient'"),
    ("method: sim\ndataset: {validation_fraction: 0.1}\n", "validation_fraction' is not used"),
    ("method: adjoint\nmodel: false\n", "must be a mapping"),
    ("method: adjoint\nadjoint: []\n", "must be a mapping"),
])
def test_keys_a_method_does_not_read_are_refused(tmp_path, text, fragment):
    with pytest.raises(ConfigError, match=fragment):
        load_config(_config(tmp_path, text))
