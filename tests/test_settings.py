from pathlib import Path

import pydantic
import pytest

from swarm.ground.errors import ConfigError
from swarm.ground.settings import Credentials, Settings


def test_file_then_environment_then_overrides_take_precedence(tmp_path: Path) -> None:
    file = tmp_path / "swarm.toml"
    file.write_text('[board]\nlease_seconds = 12\npromotion_seeds = 5\n[harness]\ntier = "standard"\n')
    env = {"SWARM_BOARD__PROMOTION_SEEDS": "4", "SWARM_HARNESS__TIER": "large"}
    settings = Settings.load(file=file, env=env, overrides={"harness.tier": "sim", "board.z": None})
    assert settings.board.lease_seconds == 12
    assert settings.board.promotion_seeds == 4
    assert settings.harness.tier == "sim"
    assert settings.board.z == 2.0


def test_unrelated_swarm_variables_are_not_settings(tmp_path: Path) -> None:
    settings = Settings.load(file=None, env={"SWARM_RUN_ID": "abc", "SWARM_DIR": str(tmp_path)})
    assert settings.dir == tmp_path


def test_bad_values_and_unknown_fields_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="lease_seconds"):
        Settings.load(file=None, env={"SWARM_BOARD__LEASE_SECONDS": "soon"})
    file = tmp_path / "swarm.toml"
    file.write_text("[board]\nleese_seconds = 3\n")
    with pytest.raises(ConfigError, match="leese_seconds"):
        Settings.load(file=file, env={})
    file.write_text("[board\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        Settings.load(file=file, env={})
    with pytest.raises(ConfigError, match="no such settings file"):
        Settings.load(file=tmp_path / "missing.toml", env={})


def test_settings_are_frozen() -> None:
    settings = Settings.load(file=None, env={})
    with pytest.raises(pydantic.ValidationError, match="Instance is frozen"):
        settings.board.z = 3.0  # type: ignore[misc]


def test_credentials_reach_a_child_through_its_environment(tmp_path: Path) -> None:
    given = Credentials(user="swarm", password="s3cret", nkey_seed_file=tmp_path / "node.nk", tls_ca=tmp_path / "ca.pem")
    read_back = Settings.load(file=None, env={**given.to_env(), "SWARM_NATS__URL": "nats://h:4222"}).nats
    assert Credentials.from_settings(read_back) == given
    assert read_back.url == "nats://h:4222"
    assert Credentials().to_env() == {}


def test_a_ladder_is_named_tiers_cheapest_first_each_once() -> None:
    assert Settings.load(env={"SWARM_BOARD__LADDER": "tiny,small"}).board.ladder == ["tiny", "small"]
    assert Settings.load(overrides={"board.ladder": ["sim", "sim-large"]}, env={}).board.ladder == ["sim", "sim-large"]
    with pytest.raises(ConfigError, match="no tier 'huge'"):
        Settings.load(overrides={"board.ladder": "tiny,huge"}, env={})
    with pytest.raises(ConfigError, match="appears twice"):
        Settings.load(overrides={"board.ladder": "tiny,tiny"}, env={})
