"""Settings: defaults < TOML file < environment < flags, and refusals that name the key."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from protoevents.proxy import config
from protoevents.proxy.app import default_dedup
from protoevents.proxy.config import MiB, Settings, SettingsError
from protoevents.proxy.dedup import DEFAULT_MAX_BYTES, DEFAULT_MAX_ENTRIES, Deduplicator
from tests.support.commands import CliRunner


def test_defaults_are_the_documented_ones() -> None:
    settings = config.from_sources(environ={})
    assert settings.listen == "127.0.0.1:50051"
    assert settings.db == "sqlite:///./protoevents.db"
    assert settings.data_dir == Path("protoevents-data")
    assert settings.fsync == "batch"
    assert settings.dedup_window_s == 10.0
    assert (settings.dedup_max_entries, settings.dedup_max_bytes) == (100_000, 160 * MiB)
    assert (settings.writer_batch_events, settings.writer_batch_interval_ms) == (1000, 200)
    assert settings.log_level == "info"
    assert config.from_sources(environ={"PROTOEVENTS_LOG_LEVEL": "DEBUG"}).log_level == "DEBUG"
    assert (settings.access_file, settings.denial_log_interval_s) == (None, 60.0)


def test_the_access_file_comes_from_the_file_the_environment_or_the_flag(tmp_path: Path) -> None:
    file = tmp_path / "proxy.toml"
    file.write_text('access_file = "from-file.toml"\ndenial_log_interval_s = 5\n')
    from_file = config.from_sources(file, {})
    assert (from_file.access_file, from_file.denial_log_interval_s) == (Path("from-file.toml"), 5)
    env = {"PROTOEVENTS_ACCESS_FILE": "from-env.toml"}
    assert config.from_sources(file, env).access_file == Path("from-env.toml")
    flag = config.from_sources(file, env, {"access_file": "from-flag.toml"})
    assert flag.access_file == Path("from-flag.toml")
    with pytest.raises(SettingsError, match=r"setting denial_log_interval_s = 0\.0: must be"):
        config.from_sources(environ={"PROTOEVENTS_DENIAL_LOG_INTERVAL_S": "0"})


def test_file_then_environment_then_flags(tmp_path: Path) -> None:
    file = tmp_path / "proxy.toml"
    file.write_text(
        'listen = "0.0.0.0:6000"\ninsecure = true\nfsync = "off"\nmax_batch_events = 50\n'
    )
    env = {"PROTOEVENTS_FSYNC": "interval", "PROTOEVENTS_MAX_BATCH_EVENTS": "70"}
    settings = config.from_sources(file, env, {"max_batch_events": "90", "db": None})
    assert settings.listen == "0.0.0.0:6000"  # file
    assert settings.fsync == "interval"  # environment over file
    assert settings.max_batch_events == 90  # flag over environment
    assert settings.db == Settings().db  # an unset flag changes nothing


def test_flags_from_the_command_line(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    config.add_arguments(parser)
    args = parser.parse_args(["--data-dir", str(tmp_path), "--dedup-window-s", "2.5"])
    settings = config.from_arguments(args, environ={})
    assert settings.data_dir == tmp_path
    assert settings.dedup_window_s == 2.5


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({"fsync": "sometimes"}, "setting fsync = 'sometimes': expected one of batch"),
        ({"listen": "50051"}, "setting listen = '50051': expected HOST:PORT"),
        ({"max_batch_events": "0"}, "setting max_batch_events = 0: must be greater than 0"),
        ({"max_batch_events": "many"}, "setting max_batch_events = 'many' (from --max-batch"),
        ({"wal_max_bytes": "100000"}, "setting wal_max_bytes = 100000: must be at least two"),
        ({"dedup_max_bytes": "0"}, "setting dedup_max_bytes = 0: must be greater than 0"),
        ({"dedup_max_bytes": "-1"}, "setting dedup_max_bytes = -1: must be greater than 0"),
        ({"log_level": "loud"}, "setting log_level = 'loud': expected one of debug, info, warn"),
    ],
)
def test_bad_values_are_named(source: dict[str, object], message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        config.from_sources(environ={}, overrides=source)
    assert message in str(caught.value)


def test_bad_environment_and_file_keys_are_named(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="PROTOEVENTS_DEDUP_WINDOW_S"):
        config.from_sources(environ={"PROTOEVENTS_DEDUP_WINDOW_S": "ten"})
    file = tmp_path / "proxy.toml"
    file.write_text("listne = '127.0.0.1:1'\n")
    with pytest.raises(SettingsError, match="unknown setting 'listne'"):
        config.from_sources(file, environ={})
    file.write_text("max_attributes = true\n")
    with pytest.raises(SettingsError, match=r"max_attributes = True .*expected an integer"):
        config.from_sources(file, environ={})


def test_a_setting_of_an_earlier_version_names_what_replaced_it(tmp_path: Path) -> None:
    file = tmp_path / "proxy.toml"
    file.write_text("max_concurrent_rpcs = 256\n")
    with pytest.raises(SettingsError) as caught:
        config.from_sources(file, environ={})
    assert str(caught.value) == (
        f"{file}: setting 'max_concurrent_rpcs' was replaced by max_ingest_streams and "
        "max_streams_per_client (ingest calls only: health, queries and watchers are never "
        "refused for them)"
    )


def test_the_dedup_bounds_reach_the_deduplicator(tmp_path: Path) -> None:
    # The defaults are the deduplicator's own, so one used without settings is bounded alike.
    dedup = default_dedup(Settings())
    assert isinstance(dedup, Deduplicator)
    assert (dedup.max_entries, dedup.max_bytes) == (DEFAULT_MAX_ENTRIES, DEFAULT_MAX_BYTES)
    file = tmp_path / "proxy.toml"
    file.write_text("dedup_max_bytes = 16_777_216\n")
    settings = config.from_sources(file, {"PROTOEVENTS_DEDUP_MAX_ENTRIES": "5000"})
    dedup = default_dedup(settings)
    assert isinstance(dedup, Deduplicator)
    assert (dedup.max_entries, dedup.max_bytes) == (5000, 16 * MiB)
    parser = argparse.ArgumentParser()
    config.add_arguments(parser)
    args = parser.parse_args(["--config", str(file), "--dedup-max-bytes", "1_048_576"])
    assert config.from_arguments(args, environ={}).dedup_max_bytes == 1 * MiB


def test_serve_help_says_each_default_once(run_cli: CliRunner) -> None:
    shown = run_cli("serve", "--help")
    assert shown.returncode == 0
    text = " ".join(shown.stdout.split())
    assert "(default: None" not in text
    assert "start) (default:" not in text
    assert "(default: random at each start) (env PROTOEVENTS_PAGE_TOKEN_SECRET)" in text
    assert "(default: 64; env PROTOEVENTS_MAX_STREAMS_PER_CLIENT)" in text


def test_metrics_listen_is_off_by_default_and_set_like_any_setting(tmp_path: Path) -> None:
    assert config.from_sources(environ={}).metrics_listen is None
    file = tmp_path / "proxy.toml"
    file.write_text('metrics_listen = "127.0.0.1:9464"\n')
    assert config.from_sources(file, {}).metrics_listen == "127.0.0.1:9464"
    env = {"PROTOEVENTS_METRICS_LISTEN": "[::1]:9465"}
    assert config.from_sources(file, env).metrics_listen == "[::1]:9465"
    flag = {"metrics_listen": "0.0.0.0:9466"}
    assert config.from_sources(file, env, flag).metrics_listen == "0.0.0.0:9466"
    with pytest.raises(SettingsError) as caught:
        config.from_sources(environ={"PROTOEVENTS_METRICS_LISTEN": "9464"})
    assert str(caught.value) == (
        "setting metrics_listen = '9464': expected HOST:PORT, such as 127.0.0.1:50051 "
        "(from PROTOEVENTS_METRICS_LISTEN)"
    )
