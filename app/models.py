"""Application tables: people who sign in and the per-query cost log."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Float, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from retrieval.schema import Base, IdType, utcnow


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    password_hash: Mapped[str | None] = mapped_column(String(300), nullable=True)
    role: Mapped[str] = mapped_column(String(20), default="employee")  # admin | employee
    groups: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class QueryLog(Base):
    """One row per ask, whatever its outcome, so cost and failures are both auditable."""

    __tablename__ = "query_log"
    __table_args__ = (Index("ix_query_log_created", "created_at"), Index("ix_query_log_user", "user_name"))

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
