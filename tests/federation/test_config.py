import pytest

from federation.config import RunConfig, load_config_file
from federation.errors import ConfigError


def test_defaults_are_a_private_run():
    config = RunConfig()
    assert config.noise == "distributed" and config.dataset == "digits" and config.clients == 50
    assert config.client_budget == config.target_epsilon


@pytest.mark.parametrize("changes, fragment", [
    ({"clients": 1}, "clients must be an integer >= 2"),
    ({"dataset": "cifar"}, "dataset must be one of"),
    ({"sample_rate": 0.0}, "sample_rate must be in (0.0, 1.0]"),
    ({"dropout_rate": 1.0}, "dropout_rate must be in [0.0, 1.0)"),
    ({"delta": 1.0}, "delta must be in (0.0, 1.0)"),
    ({"target_epsilon": float("nan")}, "target_epsilon must be a finite number"),
    ({"bits": 40}, "bits must be between 2 and 32"),
    ({"threshold": 51}, "threshold must be between 2 and clients=50"),
    ({"rounds": True}, "rounds must be an integer"),
])
def test_bad_values_name_the_key(changes, fragment):
    with pytest.raises(ConfigError) as error:
        RunConfig(**changes)
    assert fragment in str(error.value)


def test_unknown_keys_are_refused_with_the_known_ones_listed():
    with pytest.raises(ConfigError, match="unknown configuration key\\(s\\): colour"):
        RunConfig.from_dict({"colour": "blue"})


def test_round_trip_through_a_dict():
    config = RunConfig(rounds=3, lattice="E8", step=0.01)
    assert RunConfig.from_dict(config.to_dict()) == config


def test_toml_file_accepts_a_run_table_and_dashes(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('[run]\nrounds = 4\ntarget-epsilon = 2.5\n')
    assert RunConfig.from_dict(load_config_file(path)) == RunConfig(rounds=4, target_epsilon=2.5)


def test_toml_errors_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config_file(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("rounds = = 3")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config_file(bad)
