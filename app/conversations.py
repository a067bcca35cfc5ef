"""Saved conversations: each user's chats kept in the database, so a reload or another day resumes them.

Every read and change takes the owner's name and matches it in SQL: one user can never list, open,
rename or delete another's conversation, and an unknown id and someone else's id look the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, delete, func, select, update
from sqlalchemy.orm import Session

from app.models import Conversation, ConversationMessage
from retrieval.schema import utcnow

TITLE_CHARS = 80


class ConversationError(LookupError):
    """No such conversation of this user (or a bad title)."""


@dataclass(frozen=True)
class ConversationSummary:
    """A conversation as the sidebar lists it: without its messages, so a long list stays cheap."""

    id: int
    title: str
    created_at: datetime
    updated_at: datetime
    messages: int


@dataclass
class SavedConversation:
    """A whole conversation, messages in order, to resume it where it was left."""

    id: int
    title: str
    created_at: datetime
    updated_at: datetime
    messages: list[dict[str, Any]] = field(default_factory=list)


def title_from(question: str) -> str:
    """The first question, on one line and shortened: what the sidebar shows."""
    text = " ".join(question.split())
    return text if len(text) <= TITLE_CHARS else text[: TITLE_CHARS - 1].rsplit(" ", 1)[0] + "…"


class Conversations:
    """Each user's saved conversations; every call takes the owner's name, so nobody reaches another's."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def start(self, user: str, first_question: str) -> int:
        """A new conversation titled after its first question; returns its id."""
        with Session(self.engine) as session:
            row = Conversation(user_name=user, title=title_from(first_question) or "New conversation")
            session.add(row)
            session.commit()
            return row.id

    def append(
        self, user: str, conversation_id: int, role: str, content: str, details: dict[str, Any] | None = None
    ) -> None:
        """Add one turn (a question, or an answer with its citations, cost and query id in `details`)."""
        if role not in ("user", "assistant"):
            raise ConversationError(f"role must be user or assistant, not {role!r}")
        with Session(self.engine) as session, session.begin():
            self._owned(session, user, conversation_id)
            session.add(
                ConversationMessage(
                    conversation_id=conversation_id, role=role, content=content, details=details or {}
                )
            )
            session.execute(
                update(Conversation).where(Conversation.id == conversation_id).values(updated_at=utcnow())
            )

    def list(self, user: str, limit: int = 200) -> list[ConversationSummary]:
        """The user's conversations, most recently used first."""
        with Session(self.engine) as session:
            counts = (
                select(ConversationMessage.conversation_id, func.count(ConversationMessage.id).label("n"))
                .group_by(ConversationMessage.conversation_id)
                .subquery()
            )
            rows = session.execute(
                select(Conversation, func.coalesce(counts.c.n, 0))
                .outerjoin(counts, counts.c.conversation_id == Conversation.id)
                .where(Conversation.user_name == user)
                .order_by(Conversation.updated_at.desc(), Conversation.id.desc())
                .limit(limit)
            ).all()
            return [ConversationSummary(c.id, c.title, c.created_at, c.updated_at, int(n)) for c, n in rows]

    def get(self, user: str, conversation_id: int) -> SavedConversation:
        """One of `user`'s conversations with every message (ConversationError when it is not theirs)."""
        with Session(self.engine) as session:
            c = self._owned(session, user, conversation_id)
            messages = session.scalars(
                select(ConversationMessage)
                .where(ConversationMessage.conversation_id == conversation_id)
                .order_by(ConversationMessage.id)
            )
            return SavedConversation(
                c.id,
                c.title,
                c.created_at,
                c.updated_at,
                [{"role": m.role, "content": m.content, **(m.details or {})} for m in messages],
            )

    def rename(self, user: str, conversation_id: int, title: str) -> None:
        """Give one of `user`'s conversations a new title (whitespace folded, at most 300 characters)."""
        title = " ".join(title.split())[:300]
        if not title:
            raise ConversationError("a conversation needs a non-empty title")
        with Session(self.engine) as session, session.begin():
            self._owned(session, user, conversation_id).title = title

    def delete(self, user: str, conversation_id: int) -> None:
        """Delete one of `user`'s conversations and its messages."""
        with Session(self.engine) as session, session.begin():
            self._owned(session, user, conversation_id)
            session.execute(
                delete(ConversationMessage).where(ConversationMessage.conversation_id == conversation_id)
            )
            session.execute(delete(Conversation).where(Conversation.id == conversation_id))

    @staticmethod
    def _owned(session: Session, user: str, conversation_id: int) -> Conversation:
        row = session.scalar(
            select(Conversation).where(Conversation.id == conversation_id, Conversation.user_name == user)
        )
        if row is None:
            raise ConversationError(f"no conversation {conversation_id} of yours")
        return row
