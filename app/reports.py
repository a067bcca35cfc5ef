"""Cost reports from the query log: a flat table, rollups for charts, expert utilisation, CSV export."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from app.models import QueryLog

COLUMNS = [
    "id", "created_at", "user_name", "collection", "collections", "model", "backend", "status", "question",
    "prompt_tokens", "completion_tokens", "tokens", "total_ms", "tokens_per_second", "energy_joules",
    "energy_source", "cost_usd", "cloud_cost_usd", "flops", "dense_flops", "sparsity_saving",
    "active_params_per_token", "total_params",
]
METRICS = {"cost_usd": "Cost (USD)", "energy_joules": "Energy (J)", "tokens": "Tokens", "total_ms": "Latency (ms)"}


def load_queries(engine: Engine, limit: int = 20_000) -> tuple[pd.DataFrame, list[Any]]:
    """The newest `limit` query_log rows as a frame, plus their expert histograms (kept out of the frame)."""
    with Session(engine) as session:
        rows = list(session.scalars(select(QueryLog).order_by(QueryLog.id.desc()).limit(limit)))
    records = []
    histograms = []
    for r in rows:
        flops, dense = r.flops or 0.0, r.dense_flops or 0.0
        records.append({
            "id": r.id, "created_at": r.created_at, "user_name": r.user_name,
            "collection": ", ".join(r.collections or []) or "(all)", "collections": list(r.collections or []),
            "model": r.model or "(none)", "backend": r.backend or "", "status": r.status, "question": r.question,
            "prompt_tokens": r.prompt_tokens or 0, "completion_tokens": r.completion_tokens or 0,
            "tokens": (r.prompt_tokens or 0) + (r.completion_tokens or 0), "total_ms": r.total_ms or 0.0,
            "tokens_per_second": r.tokens_per_second, "energy_joules": r.energy_joules or 0.0,
            "energy_source": r.energy_source or "", "cost_usd": r.cost_usd or 0.0,
            "cloud_cost_usd": r.cloud_cost_usd or 0.0, "flops": flops, "dense_flops": dense,
            "sparsity_saving": (1 - flops / dense) if dense else np.nan,
            "active_params_per_token": r.active_params_per_token, "total_params": r.total_params,
        })
        histograms.append((r.details or {}).get("expert_histogram"))
    frame = pd.DataFrame(records, columns=COLUMNS)
    if not frame.empty:
        frame["created_at"] = pd.to_datetime(frame["created_at"], utc=True)
    return frame, histograms


def over_time(frame: pd.DataFrame, freq: str = "D") -> pd.DataFrame:
    """Sums per period (D day, h hour) of cost, energy, tokens; mean latency; query count."""
    if frame.empty:
        return pd.DataFrame(columns=["period", "queries", *METRICS])
    grouped = frame.set_index("created_at").resample(freq)
    out = grouped.agg({"cost_usd": "sum", "energy_joules": "sum", "tokens": "sum", "total_ms": "mean", "id": "count"})
    out = out.rename(columns={"id": "queries"}).reset_index().rename(columns={"created_at": "period"})
    return out[out["queries"] > 0].reset_index(drop=True)


def by_dimension(frame: pd.DataFrame, dimension: str) -> pd.DataFrame:
    """Totals per user, collection (a query over two collections counts for each) or model."""
    if frame.empty:
        return pd.DataFrame(columns=[dimension, "queries", *METRICS])
    data = frame
    if dimension == "collection":
        data = frame.assign(collection=frame["collections"].map(lambda c: c or ["(all)"])).explode("collection")
    out = data.groupby(dimension).agg(
        queries=("id", "count"), cost_usd=("cost_usd", "sum"), energy_joules=("energy_joules", "sum"),
        tokens=("tokens", "sum"), total_ms=("total_ms", "mean"),
    )
    return out.reset_index().sort_values("cost_usd", ascending=False, ignore_index=True)


def sparsity_summary(frame: pd.DataFrame) -> dict[str, float]:
    """FLOPs actually spent against what a dense model of the same total size would have needed."""
    flops = float(frame["flops"].sum()) if not frame.empty else 0.0
    dense = float(frame["dense_flops"].sum()) if not frame.empty else 0.0
    return {"flops": flops, "dense_flops": dense, "saving": (1 - flops / dense) if dense else 0.0,
            "cost_usd": float(frame["cost_usd"].sum()) if not frame.empty else 0.0,
            "cloud_cost_usd": float(frame["cloud_cost_usd"].sum()) if not frame.empty else 0.0}


def expert_heatmap(histograms: list[Any]) -> pd.DataFrame:
    """Long table (layer, expert, count, share within the layer) summed over queries; histograms of another
    shape (a different model) are summed separately and only the most common shape is shown."""
    arrays = [np.asarray(h, dtype=float) for h in histograms if h]
    arrays = [a for a in arrays if a.ndim == 2 and a.size]
    if not arrays:
        return pd.DataFrame(columns=["layer", "expert", "count", "share"])
    shapes = pd.Series([a.shape for a in arrays]).value_counts()
    shape = shapes.index[0]
    total = np.sum([a for a in arrays if a.shape == shape], axis=0)
    layers, experts = np.indices(total.shape)
    row_sums = total.sum(axis=1, keepdims=True)
    share = np.divide(total, row_sums, out=np.zeros_like(total), where=row_sums > 0)
    return pd.DataFrame({"layer": layers.ravel(), "expert": experts.ravel(), "count": total.ravel(),
                         "share": share.ravel()})


def most_expensive(frame: pd.DataFrame, n: int = 20) -> pd.DataFrame:
    cols = ["id", "created_at", "user_name", "collection", "model", "status", "question", "tokens", "total_ms",
            "energy_joules", "energy_source", "cost_usd", "cloud_cost_usd"]
    if frame.empty:
        return pd.DataFrame(columns=cols)
    return frame.nlargest(n, "cost_usd")[cols].reset_index(drop=True)


def _defuse(value: Any) -> Any:
    """Text that a spreadsheet would run as a formula (=, +, -, @) is quoted: questions are user input."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def to_csv(frame: pd.DataFrame) -> bytes:
    out = frame.drop(columns=["collections"], errors="ignore").copy()
    for col in out.columns:
        if out[col].dtype == object or pd.api.types.is_string_dtype(out[col]):
            out[col] = out[col].map(_defuse)
    return out.to_csv(index=False).encode("utf-8")
