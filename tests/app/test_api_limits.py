"""API keys, the per-key rate limit and the bounded model queue, on the real app over a real database
(in-process through FastAPI's test client; the subprocess server is covered in test_api.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from app.api import create_app
from app.api.server import ModelGate, RateLimiter
from app.api_keys import ApiKeyError, ApiKeys, parse_duration


@pytest.fixture
def keys(assistant):
    assistant.users.add("alice", groups=["hr"])
    return ApiKeys(assistant.engine, assistant.users)


def test_keys_are_stored_hashed_and_stop_at_expiry_or_revocation(assistant, keys):
    now = datetime.now(UTC)
    info, key = keys.create("alice", name="portal", expires_in=timedelta(days=90), now=now)
    assert keys.verify(key, now=now).name == "alice"
    assert keys.verify(key, now=now + timedelta(days=91)) is None
    listed = keys.list("alice")
    assert [k.id for k in listed] == [info.id] and key not in repr(listed)
    with assistant.engine.connect() as conn:
        from sqlalchemy import text

        stored = conn.execute(text("SELECT key_hash, prefix FROM api_keys")).one()
    assert key not in stored[0] and len(stored[1]) < len(key) // 2
    keys.revoke(info.id)
    assert keys.verify(key) is None
    with pytest.raises(ApiKeyError):
        keys.create("nobody")
    assert parse_duration("90d") == timedelta(days=90)
    with pytest.raises(ApiKeyError):
        parse_duration("soon")


def test_a_deleted_user_s_key_stops_working(assistant, keys):
    _, key = keys.create("alice")
    assistant.users.remove("alice")
    assert keys.verify(key) is None


def test_rate_limit_per_key_gives_429_with_retry_after_then_recovers(assistant, keys):
    clock = [1000.0]
    app = create_app(assistant, keys=keys, rate_limiter=RateLimiter(2, clock=lambda: clock[0]))
    _, key = keys.create("alice")
    _, other = keys.create("alice", name="second")
    client = TestClient(app)
    auth = {"Authorization": f"Bearer {key}"}
    assert client.get("/v1/models", headers=auth).status_code == 200
    assert client.get("/v1/models", headers=auth).status_code == 200
    refused = client.get("/v1/models", headers=auth)
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    assert refused.json()["error"]["type"] == "rate_limit_exceeded"
    assert client.get("/v1/models", headers={"Authorization": f"Bearer {other}"}).status_code == 200
    clock[0] += 61
    assert client.get("/v1/models", headers=auth).status_code == 200


def test_a_busy_model_answers_503_after_the_configured_wait(assistant, keys):
    gate = ModelGate(1, 0.2)
    app = create_app(assistant, keys=keys, gate=gate)
    _, key = keys.create("alice")
    gate.acquire()  # another request holds the only slot
    try:
        r = TestClient(app).post(
            "/v1/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={"messages": [{"role": "user", "content": "Anything?"}]},
        )
    finally:
        gate.release()
    assert r.status_code == 503 and r.headers["Retry-After"] == "1"
    assert r.json()["error"]["type"] == "model_busy"


def test_keys_cli_prints_the_key_once_and_revokes(assistant, keys, monkeypatch):
    from app.cli import cli

    monkeypatch.setenv("SPARQ_DATA_DIR", str(assistant.settings.data_dir))
    monkeypatch.setenv("SPARQ_DATABASE_URL", assistant.settings.resolved_database_url)
    runner = CliRunner()
    made = runner.invoke(cli, ["keys", "create", "--user", "alice", "--name", "portal", "--expires", "90d"])
    assert made.exit_code == 0, made.output
    key = made.stdout.strip().splitlines()[0]
    assert keys.verify(key).name == "alice"
    listed = runner.invoke(cli, ["keys", "list", "--json"])
    assert listed.exit_code == 0 and key not in listed.stdout and "portal" in listed.stdout
    key_id = keys.list("alice")[0].id
    assert runner.invoke(cli, ["keys", "revoke", str(key_id)]).exit_code == 0
    assert keys.verify(key) is None
    bad = runner.invoke(cli, ["keys", "create", "--user", "nobody"])
    assert bad.exit_code == 2 and "unknown user" in bad.output


def test_a_disabled_user_s_key_stops_working(assistant, keys):
    _, key = keys.create("alice")
    assistant.users.set_disabled("alice", True)
    assert keys.verify(key) is None
    assistant.users.set_disabled("alice", False)
    assert keys.verify(key).name == "alice"
