"""Settings: defaults < TOML file < environment < flags, and refusals that name the key."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from server import config
from server.config import Settings, SettingsError


def test_defaults_are_the_documented_ones() -> None:
    settings = config.from_sources(environ={})
    assert settings.listen == "127.0.0.1:50051"
    assert settings.db == "sqlite:///./protoevents.db"
    assert settings.data_dir == Path("protoevents-data")
    assert settings.fsync == "batch"
    assert settings.dedup_window_s == 10.0
    assert (settings.writer_batch_events, settings.writer_batch_interval_ms) == (1000, 200)


def test_file_then_environment_then_flags(tmp_path: Path) -> None:
    file = tmp_path / "proxy.toml"
    file.write_text('listen = "0.0.0.0:6000"\nfsync = "off"\nmax_batch_events = 50\n')
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
