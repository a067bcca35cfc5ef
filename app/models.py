"""Application tables: people who sign in, their sign-in sessions and failed attempts, and the per-query
cost log, and the sources that sync themselves with their runs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column

from retrieval.schema import Base, IdType, utcnow


class User(Base):
    """A person who signs in: role, groups and how the account is managed (local, LDAP or a provider)."""

    __tablename__ = "users"
    # One sparq user per identity at a provider: two providers' `alice` are two different people.
    __table_args__ = (Index("uq_users_oidc_identity", "oidc_issuer", "oidc_subject", unique=True),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    password_hash: Mapped[str | None] = mapped_column(String(300), nullable=True)
    role: Mapped[str] = mapped_column(String(20), default="employee")  # admin | employee
    groups: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # Set for a generated first-admin password: nothing but the Account page until it is changed.
    must_change_password: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Who manages the account: local (passwords here), ldap (directory sync) or oidc (sign-in provider).
    source: Mapped[str] = mapped_column(String(10), default="local", server_default="local")
    disabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    email: Mapped[str | None] = mapped_column(String(300), nullable=True)
    # Who the OpenID Connect provider says this is (source "oidc"): the issuer URL and its subject id.
    oidc_issuer: Mapped[str | None] = mapped_column(String(500), nullable=True)
    oidc_subject: Mapped[str | None] = mapped_column(String(255), nullable=True)


class UserSession(Base):
    """One signed-in browser session. Only the sha256 of its random token is stored, so a database
    reader cannot sign in as anyone; ends when revoked, idle too long, or past its absolute expiry."""

    __tablename__ = "user_sessions"

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)


class SigninFailure(Base):
    """One wrong password, under a hashed throttle key (client address, or address and name): kept in the
    database so every replica counts the same attempts; rows older than the window are pruned."""

    __tablename__ = "signin_failures"
    __table_args__ = (Index("ix_signin_failures_key_created", "key", "created_at"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    key: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)


class QueryLog(Base):
    """One row per ask, whatever its outcome, so cost and failures are both auditable."""

    __tablename__ = "query_log"
    __table_args__ = (
        Index("ix_query_log_created", "created_at"),
        Index("ix_query_log_user", "user_name"),
        Index("ix_query_log_cost", "cost_usd"),  # the Costs page's most-expensive list
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    user_name: Mapped[str] = mapped_column(String(200))
    collections: Mapped[list[str]] = mapped_column(JSON, default=list)
    question: Mapped[str] = mapped_column(Text)
    rewritten_question: Mapped[str | None] = mapped_column(Text, nullable=True)
    answer: Mapped[str | None] = mapped_column(Text, nullable=True)
    # ok | no_answer | no_documents | error | rejected
    status: Mapped[str] = mapped_column(String(20))
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    model: Mapped[str | None] = mapped_column(String(500), nullable=True)
    backend: Mapped[str | None] = mapped_column(String(50), nullable=True)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    total_ms: Mapped[float] = mapped_column(Float, default=0.0)
    timings_ms: Mapped[dict[str, float]] = mapped_column(JSON, default=dict)
    tokens_per_second: Mapped[float | None] = mapped_column(Float, nullable=True)
    active_params_per_token: Mapped[float | None] = mapped_column(Float, nullable=True)
    total_params: Mapped[float | None] = mapped_column(Float, nullable=True)
    flops: Mapped[float | None] = mapped_column(Float, nullable=True)
    dense_flops: Mapped[float | None] = mapped_column(Float, nullable=True)
    accounting: Mapped[str | None] = mapped_column(String(20), nullable=True)  # measured | modelled
    energy_joules: Mapped[float | None] = mapped_column(Float, nullable=True)
    energy_source: Mapped[str | None] = mapped_column(String(20), nullable=True)  # measured | modelled
    cost_usd: Mapped[float | None] = mapped_column(Float, nullable=True)
    cloud_cost_usd: Mapped[float | None] = mapped_column(Float, nullable=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


# Tables the database derives from others by itself (triggers), outside `Base.metadata` on purpose: a backup
# leaves them out and a restore rebuilds them as the restored rows are inserted (see migration 0006).
DERIVED = MetaData()

# The query log summed per UTC day, user, model, energy source, status and collection list (the JSON text),
# kept exact by triggers on query_log (insert, update, delete) whoever writes it: the Costs page and
# `sparq costs` read a few thousand of these instead of scanning every logged query. The unique key that
# the triggers upsert on is created by the migration (an md5 expression index on PostgreSQL).
query_cost_daily = Table(
    "query_cost_daily",
    DERIVED,
    Column("id", IdType, primary_key=True),
    Column("day", String(10), nullable=False),  # 'YYYY-MM-DD' (UTC), as reports.created_period(..., "day")
    Column("user_name", String(200), nullable=False),
    Column("model", String(500), nullable=False),  # '(none)' for no model
    Column("energy_source", String(20), nullable=False),  # '' for none
    Column("status", String(20), nullable=False),
    Column("collections", Text, nullable=False),  # the row's JSON text ('null' for none)
    Column("queries", BigInteger, nullable=False),
    Column("prompt_tokens", BigInteger, nullable=False),
    Column("completion_tokens", BigInteger, nullable=False),
    Column("cost_usd", Float, nullable=False),
    Column("cloud_cost_usd", Float, nullable=False),
    Column("energy_joules", Float, nullable=False),
    Column("flops", Float, nullable=False),
    Column("dense_flops", Float, nullable=False),
    Column("total_ms", Float, nullable=False),
)


class ApiKey(Base):
    """A key another program calls the HTTP API with; it acts as its user. Only a hash is stored."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    user_name: Mapped[str] = mapped_column(String(200), index=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(20))  # first characters, so a listing can name a key
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Budget(Base):
    """A spending limit for one user or one group (its members together) per day or month."""

    __tablename__ = "budgets"
    __table_args__ = (UniqueConstraint("scope", "subject", "metric", "period", name="uq_budget"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    scope: Mapped[str] = mapped_column(String(10))  # user | group
    subject: Mapped[str] = mapped_column(String(200))
    metric: Mapped[str] = mapped_column(String(10))  # usd | tokens | joules
    period: Mapped[str] = mapped_column(String(10))  # day | month
    limit: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Feedback(Base):
    """A user's thumbs up/down on one of their answers; one per user and query, changeable."""

    __tablename__ = "feedback"
    __table_args__ = (UniqueConstraint("query_id", "user_name", name="uq_feedback_query_user"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    query_id: Mapped[int] = mapped_column(ForeignKey("query_log.id", ondelete="CASCADE"), index=True)
    user_name: Mapped[str] = mapped_column(String(200))
    rating: Mapped[str] = mapped_column(String(4))  # up | down
    comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class Conversation(Base):
    """A user's saved chat: listed in the sidebar, reopened after a reload; owned by one user."""

    __tablename__ = "conversations"

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    user_name: Mapped[str] = mapped_column(String(200), index=True)
    title: Mapped[str] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class ConversationMessage(Base):
    """One turn of a conversation, with the answer's citations, cost and query id in `details`."""

    __tablename__ = "conversation_messages"

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    conversation_id: Mapped[int] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), index=True
    )
    role: Mapped[str] = mapped_column(String(20))  # user | assistant
    content: Mapped[str] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Source(Base):
    """A source that syncs itself (a folder, a mailbox, a web site): its connector and options, where its
    documents go, its schedule, and the lease a scheduler holds while syncing it, so that several processes
    (`sparq serve`, `sparq ui`, replicas) never sync one source at the same time."""

    __tablename__ = "sources"
    __table_args__ = (Index("ix_sources_due", "enabled", "next_due_at"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(20))  # a key of ingestion.connectors.registry.CONNECTORS
    # The connector's settings. Never a secret: a password is named by password_env or password_file.
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    root_key: Mapped[str] = mapped_column(String(2048))  # the prefix of its documents' paths (its own only)
    collection: Mapped[str] = mapped_column(String(200))
    groups: Mapped[list[str]] = mapped_column(JSON, default=list)
    schedule: Mapped[str] = mapped_column(String(50))  # "every 30m" ... or "manual"
    interval_s: Mapped[int | None] = mapped_column(Integer, nullable=True)  # None: manual
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    cursor: Mapped[str | None] = mapped_column(Text, nullable=True)  # from the last successful sync only
    next_due_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)  # in a row; 0 after a successful sync
    lease_owner: Mapped[str | None] = mapped_column(String(200), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class SourceRun(Base):
    """One sync of a source, whatever its outcome: what changed, how long it took, and why it failed."""

    __tablename__ = "source_runs"
    __table_args__ = (Index("ix_source_runs_source_started", "source_id", "started_at"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    source_id: Mapped[int] = mapped_column(ForeignKey("sources.id", ondelete="CASCADE"))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(20))  # completed | failed
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    files_new: Mapped[int] = mapped_column(Integer, default=0)
    files_updated: Mapped[int] = mapped_column(Integer, default=0)
    files_unchanged: Mapped[int] = mapped_column(Integer, default=0)
    files_removed: Mapped[int] = mapped_column(Integer, default=0)
    files_failed: Mapped[int] = mapped_column(Integer, default=0)
    duration_s: Mapped[float] = mapped_column(Float, default=0.0)
    # Per-item problems (the connector's notes, files that failed), at most a few dozen lines.
    notes: Mapped[list[str]] = mapped_column(JSON, default=list)
    runner: Mapped[str | None] = mapped_column(String(200), nullable=True)  # the process that ran it
