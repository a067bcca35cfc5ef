"""Feedback and saved conversations on a real database, through their stores and through the API."""

from __future__ import annotations

import csv
import io
import json

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.api import create_app
from app.api_keys import ApiKeys
from app.conversations import ConversationError, Conversations, title_from
from app.feedback import FeedbackError, FeedbackLog, export
from app.models import QueryLog


def _query(assistant, user: str, question: str = "What is the VPN?") -> int:
    with Session(assistant.engine) as s:
        row = QueryLog(
            user_name=user,
            question=question,
            answer="=HYPERLINK(1)",
            status="ok",
            collections=["it"],
            details={"citations": [{"collection": "it"}]},
        )
        s.add(row)
        s.commit()
        return row.id


def test_feedback_is_one_per_user_and_query_changeable_and_owner_only(assistant):
    log = FeedbackLog(assistant.engine)
    qid = _query(assistant, "alice")
    first = log.rate(qid, "alice", "up")
    assert log.rate(qid, "alice", "down", "wrong VPN name") == first
    assert log.of(qid, "alice") == "down"
    with pytest.raises(FeedbackError):
        log.rate(qid, "mallory", "down")  # not mallory's question
    with pytest.raises(FeedbackError):
        log.rate(qid + 999, "alice", "up")
    with pytest.raises(FeedbackError):
        log.rate(qid, "alice", "meh")
    records = log.records(rating="down")
    assert [(r.query_id, r.comment) for r in records] == [(qid, "wrong VPN name")]
    assert log.records(collection="it") and not log.records(collection="hr")
    assert log.thumbs_down_questions() == ["What is the VPN?"]
    rows = list(csv.DictReader(io.StringIO(export(records, "csv"))))
    assert rows[0]["answer"] == "'=HYPERLINK(1)"  # a formula stays text in a spreadsheet
    assert json.loads(export(records, "json"))[0]["rating"] == "down"


def test_conversations_belong_to_their_owner(assistant):
    store = Conversations(assistant.engine)
    cid = store.start(
        "alice", "  What is\nthe travel policy for flights under six hours, and who approves them?  "
    )
    store.append("alice", cid, "user", "What is the travel policy?")
    store.append("alice", cid, "assistant", "Economy [1].", {"query_id": 1, "citations": [{"ref": 1}]})
    listed = store.list("alice")
    assert [c.id for c in listed] == [cid] and listed[0].messages == 2
    assert listed[0].title == title_from(
        "What is the travel policy for flights under six hours, and who approves them?"
    )
    assert store.get("alice", cid).messages[1]["citations"] == [{"ref": 1}]
    assert store.list("mallory") == []
    for attempt in (
        lambda: store.get("mallory", cid),
        lambda: store.rename("mallory", cid, "mine"),
        lambda: store.delete("mallory", cid),
        lambda: store.append("mallory", cid, "user", "hi"),
    ):
        with pytest.raises(ConversationError):
            attempt()
    store.rename("alice", cid, "Travel")
    assert store.get("alice", cid).title == "Travel"
    store.delete("alice", cid)
    assert store.list("alice") == []


def test_api_feedback_and_conversations_are_the_callers_own(assistant):
    assistant.users.add("alice", groups=["it"])
    assistant.users.add("mallory", groups=["it"])
    keys = ApiKeys(assistant.engine, assistant.users)
    alice = {"Authorization": f"Bearer {keys.create('alice')[1]}"}
    mallory = {"Authorization": f"Bearer {keys.create('mallory')[1]}"}
    client = TestClient(create_app(assistant, keys=keys))
    qid = _query(assistant, "alice")
    assert (
        client.post("/v1/feedback", json={"query_id": qid, "rating": "up"}, headers=alice).status_code == 200
    )
    changed = client.post(
        "/v1/feedback", json={"query_id": qid, "rating": "down", "comment": "no"}, headers=alice
    )
    assert changed.status_code == 200 and changed.json()["rating"] == "down"
    assert (
        client.post("/v1/feedback", json={"query_id": qid, "rating": "up"}, headers=mallory).status_code
        == 404
    )
    cid = Conversations(assistant.engine).start("alice", "hello")
    assert [c["id"] for c in client.get("/v1/conversations", headers=alice).json()] == [cid]
    assert client.get("/v1/conversations", headers=mallory).json() == []
    assert client.get(f"/v1/conversations/{cid}", headers=mallory).status_code == 404
    assert client.delete(f"/v1/conversations/{cid}", headers=mallory).status_code == 404
    assert client.delete(f"/v1/conversations/{cid}", headers=alice).status_code == 204
    assert client.get(f"/v1/conversations/{cid}", headers=alice).status_code == 404


def test_thumbs_down_answers_are_a_regression_set_asked_again_as_their_askers(assistant, small_llm, tmp_path):
    from app.evaluation.regressions import rerun_thumbs_down

    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "vpn.md").write_text("# VPN\n\nThe VPN server is vpn.example.com.\n")
    assistant.use_llm(small_llm)
    assistant.settings.max_answer_tokens = 12
    assistant.ingest(folder, collection="it", groups=["it"])
    assistant.users.add("alice", groups=["it"])
    first = assistant.ask("What is the VPN server?", user="alice")
    FeedbackLog(assistant.engine).rate(first.query_id, "alice", "down", "too vague")
    report = rerun_thumbs_down(assistant)
    assert report["questions"] == 1 and report["errors"] == 0
    row = report["rows"][0]
    assert row["user"] == "alice" and row["comment"] == "too vague"
    assert row["new_query_id"] != first.query_id and row["new_status"] in ("ok", "no_answer")
    assert row["changed"] is False  # greedy decoding over the same store: the same answer again


def test_feedback_export_cli_writes_csv_and_json(assistant, monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from app.cli import cli

    qid = _query(assistant, "alice")
    FeedbackLog(assistant.engine).rate(qid, "alice", "down", "stale VPN name")
    monkeypatch.setenv("SPARQ_DATA_DIR", str(assistant.settings.data_dir))
    monkeypatch.setenv("SPARQ_DATABASE_URL", assistant.settings.resolved_database_url)
    runner = CliRunner()
    as_csv = runner.invoke(cli, ["feedback", "--export", "csv", "--rating", "down"])
    assert as_csv.exit_code == 0, as_csv.output
    assert list(csv.DictReader(io.StringIO(as_csv.stdout)))[0]["comment"] == "stale VPN name"
    out = tmp_path / "fb.json"
    as_json = runner.invoke(cli, ["feedback", "--export", "json", "-o", str(out)])
    assert as_json.exit_code == 0 and json.loads(out.read_text())[0]["query_id"] == qid
    bad = runner.invoke(cli, ["feedback", "--export", "xml"])
    assert bad.exit_code == 2 and "csv or json" in bad.output
