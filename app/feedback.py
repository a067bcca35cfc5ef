"""Feedback on answers: thumbs up or down and an optional comment, one per user and query, changeable.

Only the person who asked may rate an answer (the query log says who that was), so ratings stay honest
and nobody learns of someone else's question by rating its id. Admins review and export them, and
thumbs-down questions become a regression set for `sparq eval`.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass
from datetime import datetime

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.models import Feedback, QueryLog

RATINGS = ("up", "down")
MAX_COMMENT_CHARS = 2000


class FeedbackError(ValueError):
    """Feedback that cannot be recorded as given; the message says why."""


@dataclass(frozen=True)
class FeedbackRecord:
    """A rating with the question, answer and cost it rates, so a reviewer needs no second lookup."""

    id: int
    query_id: int
    user: str
    rating: str
    comment: str | None
    updated_at: datetime
    question: str
    answer: str | None
    status: str
    model: str | None
    collections: list[str]
    citations: list[dict]
    cost_usd: float | None


class FeedbackLog:
    """Ratings of answers; only the asker may rate, so ratings stay honest and questions stay private."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def rate(self, query_id: int, user: str, rating: str, comment: str | None = None) -> int:
        """Record or change `user`'s rating of their own query; returns the feedback id."""
        if rating not in RATINGS:
            raise FeedbackError(f"rating must be one of {', '.join(RATINGS)}, not {rating!r}")
        comment = (comment or "").strip()[:MAX_COMMENT_CHARS] or None
        with Session(self.engine) as session:
            asker = session.scalar(select(QueryLog.user_name).where(QueryLog.id == query_id))
            if asker is None or asker != user:
                # The same answer for "no such query" and "not yours": ids of others' questions stay private.
                raise FeedbackError(f"no query {query_id} of yours to rate")
            row = session.scalar(
                select(Feedback).where(Feedback.query_id == query_id, Feedback.user_name == user)
            )
            if row is None:
                row = Feedback(query_id=query_id, user_name=user, rating=rating, comment=comment)
                session.add(row)
            else:
                row.rating, row.comment = rating, comment
            try:
                session.commit()
            except IntegrityError:  # two clicks at once: the other one inserted; change it instead
                session.rollback()
                return self.rate(query_id, user, rating, comment)
            return row.id

    def of(self, query_id: int, user: str) -> str | None:
        """`user`'s current rating of a query (for the UI's buttons)."""
        with Session(self.engine) as session:
            return session.scalar(
                select(Feedback.rating).where(Feedback.query_id == query_id, Feedback.user_name == user)
            )

    def records(
        self,
        *,
        rating: str | None = None,
        model: str | None = None,
        collection: str | None = None,
        limit: int = 1000,
    ) -> list[FeedbackRecord]:
        """Feedback joined with its query, newest first, optionally filtered (the admin view, the export)."""
        with Session(self.engine) as session:
            query = (
                select(Feedback, QueryLog)
                .join(QueryLog, QueryLog.id == Feedback.query_id)
                .order_by(Feedback.updated_at.desc(), Feedback.id.desc())
            )
            if rating is not None:
                query = query.where(Feedback.rating == rating)
            if model is not None:
                query = query.where(QueryLog.model == model)
            rows = session.execute(query.limit(limit if collection is None else limit * 10)).all()
        out = []
        for f, q in rows:
            if collection is not None and collection not in (q.collections or []):
                cited = {c.get("collection") for c in (q.details or {}).get("citations", [])}
                if collection not in cited:
                    continue
            out.append(
                FeedbackRecord(
                    f.id,
                    f.query_id,
                    f.user_name,
                    f.rating,
                    f.comment,
                    f.updated_at,
                    q.question,
                    q.answer,
                    q.status,
                    q.model,
                    list(q.collections or []),
                    list((q.details or {}).get("citations", [])),
                    q.cost_usd,
                )
            )
        return out[:limit]

    def thumbs_down_questions(self) -> list[str]:
        """Distinct questions whose answers were rated down: a regression set for `sparq eval`."""
        seen: dict[str, None] = {}
        for r in self.records(rating="down", limit=100_000):
            seen.setdefault(r.question, None)
        return list(seen)


def export(records: list[FeedbackRecord], fmt: str) -> str:
    """CSV or JSON text of feedback records (spreadsheet formulas in text are defused in CSV)."""
    rows = []
    for r in records:
        data = asdict(r)
        data["updated_at"] = r.updated_at.isoformat()
        rows.append(data)
    if fmt == "json":
        return json.dumps(rows, ensure_ascii=False, indent=2)
    if fmt != "csv":
        raise FeedbackError("export format must be csv or json")
    buffer = io.StringIO()
    fields = [
        "id",
        "query_id",
        "user",
        "rating",
        "comment",
        "updated_at",
        "question",
        "answer",
        "status",
        "model",
        "collections",
        "cost_usd",
    ]
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    for data in rows:
        data["collections"] = ";".join(data["collections"])
        writer.writerow({k: _defuse(v) for k, v in data.items() if k in fields})
    return buffer.getvalue()


def _defuse(value: object) -> object:
    """A cell starting with = + - @ is a formula to a spreadsheet; prefix it so it stays text."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@"):
        return "'" + value
    return value
