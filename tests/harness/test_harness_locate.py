"""The harness finds what bootstrap installed, and says clearly what is missing."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from harness import Mosquitto, ToolNotFoundError, locate


def test_questdb_jar_matches_the_pin() -> None:
    version, sha256 = locate.questdb_pin()
    jar = locate.questdb_jar()
    assert jar.name == f"questdb-{version}.jar"
    assert hashlib.sha256(jar.read_bytes()).hexdigest() == sha256


def test_tools_are_found() -> None:
    assert locate.java_feature_version(locate.java_binary()) >= 17
    assert locate.mosquitto_binary().name == "mosquitto"
    assert (locate.pg_bindir() / "initdb").exists()


def test_a_missing_tool_raises_instead_of_skipping(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DERRICK_MOSQUITTO", str(tmp_path / "no-such-mosquitto"))
    with pytest.raises(ToolNotFoundError, match="DERRICK_MOSQUITTO"):
        Mosquitto(tmp_path)


def test_environment_beats_the_bootstrap_env_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    fake_bindir = tmp_path / "pg"
    fake_bindir.mkdir()
    for program in ("initdb", "postgres", "pg_isready"):
        (fake_bindir / program).touch()
    (cache / "env").write_text(f"# comment\nDERRICK_PG_BINDIR={fake_bindir}\n")
    monkeypatch.setenv("DERRICK_CACHE", str(cache))
    monkeypatch.delenv("DERRICK_PG_BINDIR", raising=False)
    assert locate.pg_bindir() == fake_bindir
    real = tmp_path / "real"
    real.mkdir()
    monkeypatch.setenv("DERRICK_PG_BINDIR", str(real))
    with pytest.raises(ToolNotFoundError, match="initdb"):
        locate.pg_bindir()
