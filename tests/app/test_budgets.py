"""Budgets on the real ask path: real store, embedder and small model; a spent budget refuses the next
query before the model runs (HTTP 429 with Retry-After through the API), charges nothing, and resets at
the period boundary (the Assistant's clock is injected)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.api import create_app
from app.api_keys import ApiKeys
from app.costs.budgets import BudgetError, OverBudget, period_bounds
from app.models import QueryLog


@pytest.fixture
def ready(assistant, small_llm, tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "travel.md").write_text(
        "# Travel\n\nEmployees book economy class for flights under six hours.\n"
    )
    assistant.use_llm(small_llm)
    assistant.settings.max_answer_tokens = 16
    assistant.ingest(folder, collection="handbook", groups=["sales", "staff"])
    assistant.users.add("alice", groups=["sales"])
    assistant.users.add("carol", groups=["sales"])
    assistant.users.add("dave", groups=["staff"])
    return assistant


def _rows(assistant) -> list[QueryLog]:
    with Session(assistant.engine) as s:
        return list(s.scalars(select(QueryLog).order_by(QueryLog.id)))


def test_period_bounds_cover_utc_days_and_months():
    now = datetime(2026, 12, 31, 23, 59, tzinfo=UTC)
    assert period_bounds(now, "day") == (datetime(2026, 12, 31, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))
    assert period_bounds(now, "month") == (
        datetime(2026, 12, 1, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
    )


def test_invalid_budgets_are_refused(ready):
    with pytest.raises(BudgetError):
        ready.budgets.set("user", "alice", "euros", "day", 1)
    with pytest.raises(BudgetError):
        ready.budgets.set("team", "alice", "usd", "day", 1)
    with pytest.raises(BudgetError):
        ready.budgets.set("user", "alice", "usd", "day", -1)


def test_spent_user_budget_refuses_before_the_model_and_resets_next_period(ready):
    ready.budgets.set("user", "alice", "tokens", "day", 1)
    first = ready.ask("Which class do employees book?", user="alice")
    assert first.status in ("ok", "no_answer") and first.prompt_tokens > 1
    from app.costs.meter import IN_FLIGHT

    in_flight = IN_FLIGHT.count
    with pytest.raises(OverBudget) as refused:
        ready.ask("And for long flights?", user="alice")
    assert IN_FLIGHT.count == in_flight  # the refused query left the work in flight (it used to stay)
    assert "per day is spent" in str(refused.value) and refused.value.retry_after_s > 0
    last = _rows(ready)[-1]
    assert last.status == "over_budget" and last.prompt_tokens == 0 and last.completion_tokens == 0
    assert not last.cost_usd  # nothing charged for the refused query
    # Another user is not affected by alice's budget.
    assert ready.ask("Which class do employees book?", user="dave").status in ("ok", "no_answer")
    # The next UTC day starts a new period.
    tomorrow = period_bounds(datetime.now(UTC), "day")[1] + timedelta(minutes=1)
    ready.clock = lambda: tomorrow
    assert ready.ask("Which class do employees book?", user="alice").status in ("ok", "no_answer")


def test_group_budget_is_shared_by_its_members(ready):
    ready.budgets.set("group", "sales", "usd", "month", 1e-12)
    ready.ask("Which class do employees book?", user="alice")
    with pytest.raises(OverBudget):
        ready.ask("Which class do employees book?", user="carol")  # alice spent the group's budget
    assert ready.ask("Which class do employees book?", user="dave").status in ("ok", "no_answer")


def test_api_answers_429_with_retry_after_when_over_budget(ready):
    ready.budgets.set("user", "alice", "joules", "month", 1e-9)
    keys = ApiKeys(ready.engine, ready.users)
    _, key = keys.create("alice")
    client = TestClient(create_app(ready, keys=keys))
    auth = {"Authorization": f"Bearer {key}"}
    body = {"messages": [{"role": "user", "content": "Which class do employees book?"}]}
    assert client.post("/v1/chat/completions", json=body, headers=auth).status_code == 200
    refused = client.post("/v1/chat/completions", json=body, headers=auth)
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
    assert refused.json()["error"]["type"] == "over_budget"
    streamed = client.post("/v1/chat/completions", json={**body, "stream": True}, headers=auth)
    assert streamed.status_code == 429
    costs = client.get("/v1/costs", headers=auth).json()
    assert costs["budgets"][0]["metric"] == "joules" and costs["budgets"][0]["used"] > 1e-9
    assert [g["key"] for g in costs["groups"]] == ["alice"]  # an employee sees only their own costs
