"""The run command's secrets (secrets.json: Fernet key, JWT secret, DID key-encryption key) and the
users' passwords file are private from their first byte: created 0600, not written then chmod-ed."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from tributary.cli import env

pytestmark = pytest.mark.unit


@pytest.fixture
def open_umask(monkeypatch: pytest.MonkeyPatch):
    """A umask that would make any plainly created file world-readable, and no chmod to fix it later."""
    old = os.umask(0)

    def no_chmod(self: Path, mode: int, **kwargs: object) -> None:
        raise AssertionError(f"{self.name} was chmod-ed after it was written")

    monkeypatch.setattr(Path, "chmod", no_chmod)
    yield
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_secrets_json_is_created_owner_only(tmp_path: Path, open_umask: None) -> None:
    values = env._load_or_create_secrets(tmp_path)
    path = tmp_path / "tributary" / "secrets.json"
    assert _mode(path) == 0o600
    assert json.loads(path.read_text()) == values
    assert set(values) >= {"fernet_key", "jwt_secret", "did_kek"}
    assert [p.name for p in path.parent.iterdir()] == ["secrets.json"]  # no temporary file left behind


def test_a_new_secret_keeps_the_old_ones_and_the_mode(tmp_path: Path, open_umask: None) -> None:
    path = tmp_path / "tributary" / "secrets.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"fernet_key": "kept"}))
    os.chmod(path, 0o644)  # an older deployment's file
    values = env._load_or_create_secrets(tmp_path)
    assert values["fernet_key"] == "kept" and "did_kek" in values
    assert _mode(path) == 0o600


def test_passwords_file_is_created_owner_only(tmp_path: Path, open_umask: None) -> None:
    path = env.write_passwords_file(tmp_path / "state" / "passwords.json")
    assert _mode(path) == 0o600
    assert set(json.loads(path.read_text())) == set(env.USERS)
