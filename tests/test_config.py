"""Configuration from defaults, a TOML file, UTWIN_* variables and flags."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from utwin.config import Config, Durability, Limits, load_config
from utwin.errors import InvalidArgument


def write_toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "utwin.toml"
    path.write_text(text)
    return path


def test_no_sources_give_the_defaults() -> None:
    """Without file, environment or flags every setting has its default."""
    assert Config() == load_config()


def test_defaults_are_the_documented_ones() -> None:
    """Loopback listen address, crash durability and the issue's limits."""
    config = load_config()
    assert ("127.0.0.1:50051", Durability.PROCESS, 1000, 1_000_000, 1 << 20) == (
        config.listen,
        config.durability,
        config.max_batch_topics,
        config.max_topics,
        config.max_message_bytes,
    )


def test_limits_carry_the_configured_values() -> None:
    """The Limits object handed to the domain mirrors the three limit settings."""
    config = load_config(flags={"max_topics": 5, "max_message_bytes": 6, "max_batch_topics": 7})
    assert Limits(max_topics=5, max_message_bytes=6, max_batch_topics=7) == config.limits


def test_default_limits_match_the_config_defaults() -> None:
    """Limits() and Config().limits agree."""
    assert Limits() == Config().limits


def test_config_is_frozen() -> None:
    """Nothing can change a loaded configuration."""
    with pytest.raises(dataclasses.FrozenInstanceError):
        load_config().listen = "0.0.0.0:1"  # type: ignore[misc]


def test_file_sets_each_kind_of_setting(tmp_path: Path) -> None:
    """Text, path, enum, integer and float settings are read from TOML."""
    path = write_toml(
        tmp_path,
        'listen = "127.0.0.1:6000"\n'
        'data_dir = "/srv/utwin"\n'
        'durability = "power"\n'
        "max_topics = 10\n"
        "shutdown_grace_s = 2.5\n",
    )
    config = load_config(file=path)
    assert ("127.0.0.1:6000", Path("/srv/utwin"), Durability.POWER, 10, 2.5) == (
        config.listen,
        config.data_dir,
        config.durability,
        config.max_topics,
        config.shutdown_grace_s,
    )


def test_file_float_setting_accepts_an_integer(tmp_path: Path) -> None:
    """A TOML integer for a seconds setting is taken as that many seconds."""
    config = load_config(file=write_toml(tmp_path, "expiry_sweep_interval_s = 30\n"))
    assert 30.0 == config.expiry_sweep_interval_s


def test_data_dir_expands_the_home_folder(tmp_path: Path) -> None:
    """A data folder starting with ~ is resolved to the user's home."""
    config = load_config(file=write_toml(tmp_path, 'data_dir = "~/utwin-data"\n'))
    assert Path("~/utwin-data").expanduser() == config.data_dir


def test_environment_sets_settings() -> None:
    """UTWIN_<NAME> sets the setting <name>, converted to its type."""
    config = load_config(
        env={"UTWIN_MAX_TOPICS": "42", "UTWIN_DURABILITY": "power", "UTWIN_LISTEN": "[::1]:7"}
    )
    assert (42, Durability.POWER, "[::1]:7") == (config.max_topics, config.durability, config.listen)


def test_environment_durability_ignores_case() -> None:
    """Enum values may be written in any case."""
    assert Durability.POWER == load_config(env={"UTWIN_DURABILITY": "POWER"}).durability


def test_environment_without_the_prefix_is_ignored() -> None:
    """Variables not starting with UTWIN_ are not settings."""
    assert Config() == load_config(env={"PATH": "/bin", "MAX_TOPICS": "5", "utwin_max_topics": "5"})


def test_environment_config_variable_is_not_a_setting() -> None:
    """UTWIN_CONFIG names the file (read by the CLI) and is not an unknown setting."""
    assert Config() == load_config(env={"UTWIN_CONFIG": "/etc/utwin.toml"})


def test_environment_target_variable_is_not_a_setting() -> None:
    """UTWIN_TARGET names the server for the CLI clients; `utwin serve` does not refuse it."""
    assert Config() == load_config(env={"UTWIN_TARGET": "127.0.0.1:50051"})


def test_environment_wins_over_the_file(tmp_path: Path) -> None:
    """A setting in both the file and the environment takes the environment's value."""
    path = write_toml(tmp_path, "max_topics = 1\nmax_batch_topics = 9\n")
    config = load_config(file=path, env={"UTWIN_MAX_TOPICS": "2"})
    assert (2, 9) == (config.max_topics, config.max_batch_topics)


def test_flags_win_over_environment_and_file(tmp_path: Path) -> None:
    """A flag beats the same setting from the environment and the file."""
    path = write_toml(tmp_path, 'listen = "127.0.0.1:1"\n')
    config = load_config(file=path, env={"UTWIN_LISTEN": "127.0.0.1:2"}, flags={"listen": "127.0.0.1:3"})
    assert "127.0.0.1:3" == config.listen


def test_unset_flags_leave_lower_sources_in_place(tmp_path: Path) -> None:
    """A flag left at None (not given) does not override the environment or the file."""
    path = write_toml(tmp_path, 'listen = "127.0.0.1:1"\n')
    config = load_config(
        file=path, env={"UTWIN_LOG_LEVEL": "debug"}, flags={"listen": None, "log_level": None}
    )
    assert ("127.0.0.1:1", "debug") == (config.listen, config.log_level)


def test_flag_path_value_is_taken(tmp_path: Path) -> None:
    """A Path given as a flag (as argparse builds it) is the data folder."""
    assert tmp_path == load_config(flags={"data_dir": tmp_path}).data_dir


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("file", "config file {file}: unknown setting 'colour'"),
        ("env", "environment: unknown setting 'colour'"),
        ("flags", "command line: unknown setting 'colour'"),
    ],
)
def test_unknown_setting_names_the_setting_and_its_source(tmp_path: Path, source: str, expected: str) -> None:
    """A setting the configuration does not have is refused, saying where it came from."""
    file = write_toml(tmp_path, 'colour = "red"\n')
    arguments = {
        "file": {"file": file},
        "env": {"env": {"UTWIN_COLOUR": "red"}},
        "flags": {"flags": {"colour": "red"}},
    }[source]
    with pytest.raises(InvalidArgument) as raised:
        load_config(**arguments)  # type: ignore[arg-type]
    assert expected.format(file=file) == raised.value.message


def test_toml_table_is_an_unknown_setting(tmp_path: Path) -> None:
    """Settings are top-level keys; a table is refused by its name."""
    file = write_toml(tmp_path, "[limits]\nmax_topics = 1\n")
    with pytest.raises(InvalidArgument, match="unknown setting 'limits'"):
        load_config(file=file)


@pytest.mark.parametrize(
    ("variable", "raw"),
    [
        ("UTWIN_MAX_TOPICS", "many"),
        ("UTWIN_MAX_TOPICS", "-1"),
        ("UTWIN_MAX_TOPICS", "1.5"),
        ("UTWIN_MAX_TOPICS", ""),
        ("UTWIN_SHUTDOWN_GRACE_S", "soon"),
        ("UTWIN_SHUTDOWN_GRACE_S", "-0.5"),
        ("UTWIN_SHUTDOWN_GRACE_S", "nan"),
        ("UTWIN_EXPIRY_SWEEP_INTERVAL_S", "inf"),
        ("UTWIN_DURABILITY", "disk"),
    ],
)
def test_bad_environment_value_names_the_setting_and_source(variable: str, raw: str) -> None:
    """A value that does not fit the setting's type is refused with the setting, value and source."""
    name = variable.removeprefix("UTWIN_").lower()
    with pytest.raises(InvalidArgument) as raised:
        load_config(env={variable: raw})
    assert raised.value.message.startswith(f"environment: {name}: {raw!r} is not valid")


@pytest.mark.parametrize(
    ("line", "name"),
    [
        ("max_topics = true", "max_topics"),
        ("max_topics = 1.5", "max_topics"),
        ("max_topics = -3", "max_topics"),
        ('max_topics = "ten"', "max_topics"),
        ("max_topics = [1]", "max_topics"),
        ("shutdown_grace_s = [1.0]", "shutdown_grace_s"),
        ("shutdown_grace_s = true", "shutdown_grace_s"),
        ("shutdown_grace_s = -1.0", "shutdown_grace_s"),
        ("shutdown_grace_s = nan", "shutdown_grace_s"),
        ("expiry_sweep_interval_s = inf", "expiry_sweep_interval_s"),
        ('durability = "disk"', "durability"),
        ("durability = 1", "durability"),
        ("listen = 50051", "listen"),
        ("log_level = false", "log_level"),
        ("data_dir = 5", "data_dir"),
        ("listen = [1, 2]", "listen"),
    ],
)
def test_bad_file_value_names_the_setting_and_source(tmp_path: Path, line: str, name: str) -> None:
    """A TOML value of the wrong kind or range is refused, naming the file and the setting."""
    file = write_toml(tmp_path, line + "\n")
    with pytest.raises(InvalidArgument) as raised:
        load_config(file=file)
    assert raised.value.message.startswith(f"config file {file}: {name}: ")


def test_bad_flag_value_names_the_setting_and_source() -> None:
    """A flag with a bad value is refused, naming the command line."""
    with pytest.raises(InvalidArgument, match=r"^command line: durability: 'disk' is not valid"):
        load_config(flags={"durability": "disk"})


def test_unparsable_file_names_the_file(tmp_path: Path) -> None:
    """A file that is not TOML is refused, naming the file."""
    file = write_toml(tmp_path, "listen = \n")
    with pytest.raises(InvalidArgument) as raised:
        load_config(file=file)
    assert raised.value.message.startswith(f"config file {file}: ")


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    """A configuration file that does not exist is refused, naming the file."""
    file = tmp_path / "absent.toml"
    with pytest.raises(InvalidArgument) as raised:
        load_config(file=file)
    assert raised.value.message.startswith(f"config file {file}: ")


def test_loading_does_not_read_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the mapping passed in is consulted, never os.environ behind the caller's back."""
    monkeypatch.setenv("UTWIN_MAX_TOPICS", "3")
    assert Config() == load_config()


def test_redis_backend_needs_nodes_and_refuses_durability_power() -> None:
    """store_backend redis without redis_nodes, or with durability power, names the setting."""
    with pytest.raises(InvalidArgument, match="redis_nodes"):
        load_config(flags={"store_backend": "redis"})
    with pytest.raises(InvalidArgument, match="durability"):
        load_config(flags={"store_backend": "redis", "redis_nodes": "127.0.0.1:7000", "durability": "power"})
    with pytest.raises(InvalidArgument, match="redis_nodes"):
        load_config(flags={"redis_nodes": "127.0.0.1:7000"})


def test_redis_nodes_come_from_a_comma_separated_list() -> None:
    """UTWIN_REDIS_NODES is split into HOST:PORT entries, each checked."""
    config = load_config(
        env={"UTWIN_STORE_BACKEND": "redis", "UTWIN_REDIS_NODES": "127.0.0.1:7000, [::1]:7001"}
    )
    assert ("127.0.0.1:7000", "[::1]:7001") == config.redis_nodes
    with pytest.raises(InvalidArgument, match="redis_nodes"):
        load_config(env={"UTWIN_STORE_BACKEND": "redis", "UTWIN_REDIS_NODES": "127.0.0.1"})
