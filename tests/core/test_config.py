"""The typed environment (core.config): one cache variable with its old name as an alias, typed
values that fail naming the variable, and Settings.from_env taking them (no server needed)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from conveyor.core import Settings, cache_dir, environment
from conveyor.core import config as config_mod


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CONVEYOR_CACHE_DIR", "CONVEYOR_CACHE", "CONVEYOR_DATA_DIR", "CONVEYOR_DATABASE_URL",
                 "CONVEYOR_ANONYMOUS_READ", "CONVEYOR_PUBLIC_URL", "CONVEYOR_HTMX_JS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(config_mod, "_warned", set())


def test_the_cache_defaults_to_the_users_cache_dir() -> None:
    assert cache_dir() == Path("~/.cache/conveyor").expanduser()


def test_cache_dir_is_the_variable_and_wins_over_the_old_name(monkeypatch: pytest.MonkeyPatch,
                                                              tmp_path: Path) -> None:
    monkeypatch.setenv("CONVEYOR_CACHE", str(tmp_path / "old"))
    monkeypatch.setenv("CONVEYOR_CACHE_DIR", str(tmp_path / "new"))
    assert cache_dir() == tmp_path / "new"


def test_the_old_name_still_works_and_says_it_is_deprecated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("CONVEYOR_CACHE", str(tmp_path / "old"))
    with caplog.at_level(logging.WARNING, logger="conveyor.config"):
        assert cache_dir() == tmp_path / "old"
        assert cache_dir() == tmp_path / "old"
    warnings = [r.getMessage() for r in caplog.records if "deprecated" in r.getMessage()]
    assert warnings == ["CONVEYOR_CACHE is deprecated: set CONVEYOR_CACHE_DIR instead"]  # once


def test_every_cache_user_follows_the_one_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Kubernetes and Flux builds, base images and htmx: before, two of them read CONVEYOR_CACHE and
    two CONVEYOR_CACHE_DIR, so setting either one split the cache."""
    from conveyor.clusters.binaries import cache_root
    from conveyor.clusters.flux.build import build_dir
    from conveyor.images.debian import cache_dir as base_images
    from conveyor.web import assets

    monkeypatch.setenv("CONVEYOR_CACHE_DIR", str(tmp_path))
    htmx = tmp_path / "web" / "node_modules" / "htmx.org" / "dist" / "htmx.min.js"
    htmx.parent.mkdir(parents=True)
    htmx.write_text("/* htmx */")
    assets.htmx_path.cache_clear()
    try:
        assert cache_root() == tmp_path / "kubernetes"
        assert build_dir("v1").parent.parent == tmp_path
        assert base_images() == tmp_path / "base-images"
        assert assets.htmx_path() == htmx
    finally:
        assets.htmx_path.cache_clear()


def test_a_malformed_value_names_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVEYOR_ANONYMOUS_READ", "perhaps")
    with pytest.raises(ValueError, match="CONVEYOR_ANONYMOUS_READ"):
        environment()


def test_from_env_takes_the_environment_and_the_command_line_wins(monkeypatch: pytest.MonkeyPatch,
                                                                  tmp_path: Path) -> None:
    monkeypatch.setenv("CONVEYOR_DATA_DIR", str(tmp_path / "env"))
    monkeypatch.setenv("CONVEYOR_DATABASE_URL", "postgresql://db.invalid/conveyor")
    monkeypatch.setenv("CONVEYOR_ANONYMOUS_READ", "yes")
    monkeypatch.setenv("CONVEYOR_PUBLIC_URL", "https://ci.example.test")
    s = Settings.from_env(port=9000)
    assert (s.data_dir, s.database_url, s.anonymous_read, s.base_url, s.port) == (
        (tmp_path / "env").resolve(), "postgresql://db.invalid/conveyor", True, "https://ci.example.test", 9000)
    assert Settings.from_env(data_dir=tmp_path / "flag").data_dir == (tmp_path / "flag").resolve()
    monkeypatch.setenv("CONVEYOR_ANONYMOUS_READ", "")  # empty counts as unset
    assert Settings.from_env().anonymous_read is False


def test_settings_made_directly_do_not_pick_up_a_database(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CONVEYOR_DATABASE_URL", "postgresql://db.invalid/conveyor")
    assert Settings(data_dir=tmp_path).db_url == f"sqlite:///{tmp_path / 'conveyor.db'}"
