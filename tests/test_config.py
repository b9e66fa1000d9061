"""cosynth.config: the data root from an option, the environment, or beside a checkout; clear failures."""

import pytest
from typer.testing import CliRunner

from cosynth import config
from cosynth.cli import app


def test_explicit_root_and_environment_override(tmp_path, monkeypatch):
    monkeypatch.setenv("COSYNTH_DATA", str(tmp_path))
    assert config.data_root() == tmp_path
    other = tmp_path / "other"
    other.mkdir()
    assert config.data_root(other) == other
    monkeypatch.setenv("COSYNTH_CACHE", str(tmp_path / "cache"))
    assert config.cache_dir("graphs") == tmp_path / "cache" / "graphs"


def test_missing_data_root_names_the_paths_it_looked_in(tmp_path, monkeypatch):
    missing = tmp_path / "nowhere"
    monkeypatch.setenv("COSYNTH_DATA", str(missing))
    with pytest.raises(config.DataRootError, match=f"looked in {missing}.*COSYNTH_DATA"):
        config.data_root()
    assert config.data_root(must_exist=False) == missing


def test_train_on_a_dataset_without_data_is_a_clear_cli_error(tmp_path, monkeypatch):
    monkeypatch.setenv("COSYNTH_DATA", str(tmp_path / "nowhere"))
    result = CliRunner().invoke(app, ["train", "cosnet", "--dataset", "band_gap", "-o", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "no shared data folder found" in result.output and "Traceback" not in result.output


def test_files_keep_the_umask_mode(tmp_path):
    import os

    from cosynth.io.files import atomic_write_text

    old = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "report.md", "hello")
    finally:
        os.umask(old)
    assert path.read_text() == "hello" and (path.stat().st_mode & 0o777) == 0o644
    assert not list(tmp_path.glob(".*.tmp"))
