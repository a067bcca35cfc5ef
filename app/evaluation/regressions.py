"""Thumbs-down answers as a regression set: ask each one again, as the person who asked it, and compare.

There is no gold answer for these questions, so the report says what changed: a different answer, a
citation where there was none, a refusal that became an answer (or the reverse), and what it cost.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from app.assistant import Assistant, SparqError
from app.feedback import FeedbackLog


def rerun_thumbs_down(
    assistant: Assistant, *, limit: int = 200, progress: Callable[[int, int], None] | None = None
) -> dict[str, Any]:
    """Re-ask the newest `limit` thumbs-down questions; returns per-question rows and a summary."""
    records = FeedbackLog(assistant.engine).records(rating="down", limit=limit)
    rows: list[dict[str, Any]] = []
    for n, r in enumerate(records, start=1):
        row: dict[str, Any] = {
            "query_id": r.query_id,
            "user": r.user,
            "question": r.question,
            "comment": r.comment,
            "old_answer": r.answer,
            "old_status": r.status,
            "old_cited": bool(r.citations),
        }
        try:
            answer = assistant.ask(r.question, user=r.user, collections=r.collections or None)
        except SparqError as exc:  # e.g. the user no longer exists: reported, the set goes on
            row.update(new_status="error", error=str(exc))
        else:
            row.update(
                new_answer=answer.text,
                new_status=answer.status,
                new_cited=bool(answer.citations),
                new_query_id=answer.query_id,
                cost_usd=answer.cost.total_usd,
                changed=answer.text.strip() != (r.answer or "").strip(),
            )
        rows.append(row)
        if progress is not None:
            progress(n, len(records))
    answered = [x for x in rows if x["new_status"] != "error"]
    return {
        "questions": len(rows),
        "changed": sum(bool(x.get("changed")) for x in answered),
        "now_cited": sum(bool(x.get("new_cited")) and not x["old_cited"] for x in answered),
        "answer_to_refusal": sum(x["old_status"] == "ok" and x["new_status"] != "ok" for x in answered),
        "refusal_to_answer": sum(x["old_status"] != "ok" and x["new_status"] == "ok" for x in answered),
        "errors": len(rows) - len(answered),
        "rows": rows,
    }
