"""The ledger: `query_log`, one row per ask whatever its outcome, carrying what the meter measured.

Written and read back here only, so a row's cost columns come from a `CostRecord` in one way and every place
that shows a row (the CSV export, the Costs page's list of queries) labels a missing model or collection and
zeroes a missing figure the same way. The sums over many rows are app.costs.reports'."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Engine, RowMapping, select
from sqlalchemy.orm import Session

from app.costs.meter import CostRecord
from app.models import QueryLog

log = logging.getLogger(__name__)

NO_COLLECTION = "(all)"  # how a query asked over every collection reads (its collection list is empty)
NO_MODEL = "(none)"  # how a query no model answered reads (as the daily sums' triggers store it)

# The flat table of logged queries: one record per row, as `flat_record` builds it.
FLAT_COLUMNS = [
    "id",
    "created_at",
    "user_name",
    "collection",
    "collections",
    "model",
    "backend",
    "status",
    "question",
    "prompt_tokens",
    "completion_tokens",
    "tokens",
    "total_ms",
    "tokens_per_second",
    "energy_joules",
    "energy_source",
    "cost_usd",
    "cloud_cost_usd",
    "flops",
    "dense_flops",
    "sparsity_saving",
    "active_params_per_token",
    "total_params",
]
# The query_log columns a flat record is built from.
FLAT_SOURCE = [
    QueryLog.id,
    QueryLog.created_at,
    QueryLog.user_name,
    QueryLog.collections,
    QueryLog.model,
    QueryLog.backend,
    QueryLog.status,
    QueryLog.question,
    QueryLog.prompt_tokens,
    QueryLog.completion_tokens,
    QueryLog.total_ms,
    QueryLog.tokens_per_second,
    QueryLog.energy_joules,
    QueryLog.energy_source,
    QueryLog.cost_usd,
    QueryLog.cloud_cost_usd,
    QueryLog.flops,
    QueryLog.dense_flops,
    QueryLog.active_params_per_token,
    QueryLog.total_params,
]


def entry(cost: CostRecord, *, details: dict[str, Any], **columns: Any) -> QueryLog:
    """A query_log row: `columns` (who asked what, and how it ended) plus the cost columns from `cost`, whose
    whole record also goes first into `details` (figures that were not measured are stored as NULL)."""
    return QueryLog(
        **columns,
        prompt_tokens=cost.prompt_tokens,
        completion_tokens=cost.completion_tokens,
        total_ms=cost.wall_seconds * 1000,
        tokens_per_second=cost.tokens_per_second or None,
        active_params_per_token=cost.active_params_per_token or None,
        total_params=cost.total_params or None,
        flops=cost.flops_total or None,
        dense_flops=cost.dense_flops_total or None,
        accounting=cost.accounting,
        energy_joules=cost.energy_joules,
        energy_source=cost.energy_source,
        cost_usd=cost.total_usd,
        cloud_cost_usd=min(cost.cloud_usd.values()) if cost.cloud_usd else None,
        details={"cost": cost.to_dict(), **details},
    )


def write(engine: Engine, row: QueryLog) -> int:
    """Commit one row and return its id; a failure is logged and raised (a query must not go unrecorded)."""
    try:
        with Session(engine) as session:
            session.add(row)
            session.commit()
            return row.id
    except Exception:
        log.exception("could not write the query log row")
        raise


def flat_record(row: RowMapping) -> dict[str, Any]:
    """One row (the `FLAT_SOURCE` columns by name) as a flat record: collections joined, labels for no model
    or collection, zero for a missing sum, tokens added, the sparsity saving where FLOPs were counted."""
    flops, dense = row["flops"] or 0.0, row["dense_flops"] or 0.0
    collections = list(row["collections"] or [])
    return {
        "id": row["id"],
        "created_at": row["created_at"],
        "user_name": row["user_name"],
        "collection": ", ".join(collections) or NO_COLLECTION,
        "collections": collections,
        "model": row["model"] or NO_MODEL,
        "backend": row["backend"] or "",
        "status": row["status"],
        "question": row["question"],
        "prompt_tokens": row["prompt_tokens"] or 0,
        "completion_tokens": row["completion_tokens"] or 0,
        "tokens": (row["prompt_tokens"] or 0) + (row["completion_tokens"] or 0),
        "total_ms": row["total_ms"] or 0.0,
        "tokens_per_second": row["tokens_per_second"],
        "energy_joules": row["energy_joules"] or 0.0,
        "energy_source": row["energy_source"] or "",
        "cost_usd": row["cost_usd"] or 0.0,
        "cloud_cost_usd": row["cloud_cost_usd"] or 0.0,
        "flops": flops,
        "dense_flops": dense,
        "sparsity_saving": (1 - flops / dense) if dense else np.nan,
        "active_params_per_token": row["active_params_per_token"],
        "total_params": row["total_params"],
    }


def flat_frame(records: list[dict[str, Any]], columns: list[str] = FLAT_COLUMNS) -> pd.DataFrame:
    """Flat records as a frame of `columns`, `created_at` as UTC timestamps."""
    frame = pd.DataFrame(records, columns=columns)
    if not frame.empty:
        frame["created_at"] = pd.to_datetime(frame["created_at"], utc=True)
    return frame


def load_queries(engine: Engine, limit: int = 20_000) -> tuple[pd.DataFrame, list[Any]]:
    """The newest `limit` rows as a flat frame, plus their expert histograms (kept out of the frame)."""
    query = select(*FLAT_SOURCE, QueryLog.details).order_by(QueryLog.id.desc()).limit(limit)
    with engine.connect() as conn:
        rows = conn.execute(query).mappings().all()
    records = [flat_record(r) for r in rows]
    histograms = [(r["details"] or {}).get("expert_histogram") for r in rows]
    return flat_frame(records), histograms


def _defuse(value: Any) -> Any:
    """Text that a spreadsheet would run as a formula (=, +, -, @) is quoted: questions are user input."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def to_csv(frame: pd.DataFrame) -> bytes:
    """A flat frame as CSV for a spreadsheet (the collection list column left out, formulas defused)."""
    out = frame.drop(columns=["collections"], errors="ignore").copy()
    for col in out.columns:
        if out[col].dtype == object or pd.api.types.is_string_dtype(out[col]):
            out[col] = out[col].map(_defuse)
    return out.to_csv(index=False).encode("utf-8")
