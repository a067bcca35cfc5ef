"""docker-compose.yml is validated against the Compose Specification's JSON schema (no Docker engine here).

The schema file is the Compose Specification's `compose_spec.json` (Apache-2.0), as shipped in the
docker-compose 1.29.2 wheel; see tests/data/README.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_file_matches_the_compose_specification():
    schema = json.loads((ROOT / "tests" / "data" / "compose-spec.schema.json").read_text())
    jsonschema.Draft201909Validator.check_schema(schema)
    jsonschema.Draft201909Validator(schema).validate(_compose())


def test_compose_has_app_postgres_and_optional_vllm_with_health_checks():
    compose = _compose()
    services = compose["services"]
    assert {"app", "db", "vllm"} <= set(services)
    assert services["vllm"]["profiles"] == ["vllm"]  # opt-in: CPU-only hosts run without it
    for name in ("app", "db", "vllm"):
        assert "test" in services[name]["healthcheck"]
    assert services["app"]["depends_on"]["db"]["condition"] == "service_healthy"
    env = services["app"]["environment"]
    assert env["SPARQ_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert "SPARQ_DB_PASSWORD" in env["SPARQ_DATABASE_URL"]  # the secret comes from the environment
    assert any(v.endswith(":/data") for v in services["app"]["volumes"])
    assert set(compose["volumes"]) >= {"sparq-data", "sparq-pg"}


def test_compose_keeps_secrets_out_of_the_file():
    text = (ROOT / "docker-compose.yml").read_text().lower()
    for needle in ("password: sparq", "password=sparq", "password: postgres"):
        assert needle not in text


def test_compose_runs_the_http_api_beside_the_ui_on_the_same_database():
    services = _compose()["services"]
    api = services["api"]
    assert api["command"][:2] == ["sparq", "serve"]
    assert api["environment"]["SPARQ_DATABASE_URL"] == services["app"]["environment"]["SPARQ_DATABASE_URL"]
    assert "/healthz" in " ".join(api["healthcheck"]["test"])
    assert api["depends_on"]["db"]["condition"] == "service_healthy"
