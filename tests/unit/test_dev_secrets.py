"""The local stack's secrets (infra/dev.py ``persistent_secrets``): made once, kept across restarts, never
readable by other users, and a file from an older stack keeps its JWT secret when the management API's keys
are added to it."""

from __future__ import annotations

import json
import stat

from infra.dev import persistent_secrets


def test_secrets_are_made_once_and_kept(tmp_path):
    path = tmp_path / "secrets.json"
    first = persistent_secrets(path)
    assert set(first) == {"jwt_secret", "management_access_key_id", "management_secret_access_key"}
    key_id = first["management_access_key_id"]
    assert key_id.startswith("AKIA") and len(key_id) == 20
    assert len(first["management_secret_access_key"]) == 40
    assert persistent_secrets(path) == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_file_from_before_the_management_api_keeps_its_jwt_secret(tmp_path):
    path = tmp_path / "secrets.json"
    path.write_text(json.dumps({"jwt_secret": "kept-from-an-older-stack"}) + "\n")
    upgraded = persistent_secrets(path)
    assert upgraded["jwt_secret"] == "kept-from-an-older-stack"
    assert upgraded["management_access_key_id"].startswith("AKIA")
    assert json.loads(path.read_text()) == upgraded
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not list(tmp_path.glob("*.partial"))
