"""The Costs page's figures as the old page computed them: in pandas, from the ledger's rows loaded as a flat
frame (`app.costs.ledger.load_queries`). Kept out of the product, which sums in SQL only (`CostView`), as the
reference its figures must equal, and as the old way bench/costs.py times against the new."""

from __future__ import annotations

import pandas as pd

from app.costs.ledger import NO_COLLECTION
from app.costs.reports import EXPENSIVE_COLUMNS, MEASURES


def over_time(frame: pd.DataFrame, freq: str = "D") -> pd.DataFrame:
    """Sums per period (D day, h hour) of cost, energy, tokens; mean latency; query count."""
    if frame.empty:
        return pd.DataFrame(columns=["period", "queries", *MEASURES])
    grouped = frame.set_index("created_at").resample(freq)
    out = grouped.agg(
        {"cost_usd": "sum", "energy_joules": "sum", "tokens": "sum", "total_ms": "mean", "id": "count"}
    )
    out = out.rename(columns={"id": "queries"}).reset_index().rename(columns={"created_at": "period"})
    return out[out["queries"] > 0].reset_index(drop=True)


def by_dimension(frame: pd.DataFrame, dimension: str) -> pd.DataFrame:
    """Totals per user, collection (a query over two collections counts for each) or model."""
    if frame.empty:
        return pd.DataFrame(columns=[dimension, "queries", *MEASURES])
    data = frame
    if dimension == "collection":
        data = frame.assign(collection=frame["collections"].map(lambda c: c or [NO_COLLECTION])).explode(
            "collection"
        )
    out = data.groupby(dimension).agg(
        queries=("id", "count"),
        cost_usd=("cost_usd", "sum"),
        energy_joules=("energy_joules", "sum"),
        tokens=("tokens", "sum"),
        total_ms=("total_ms", "mean"),
    )
    return out.reset_index().sort_values("cost_usd", ascending=False, ignore_index=True)


def sparsity_summary(frame: pd.DataFrame) -> dict[str, float]:
    """FLOPs actually spent against what a dense model of the same total size would have needed."""
    flops = float(frame["flops"].sum()) if not frame.empty else 0.0
    dense = float(frame["dense_flops"].sum()) if not frame.empty else 0.0
    return {
        "flops": flops,
        "dense_flops": dense,
        "saving": (1 - flops / dense) if dense else 0.0,
        "cost_usd": float(frame["cost_usd"].sum()) if not frame.empty else 0.0,
        "cloud_cost_usd": float(frame["cloud_cost_usd"].sum()) if not frame.empty else 0.0,
    }


def most_expensive(frame: pd.DataFrame, n: int = 20) -> pd.DataFrame:
    """The `n` most expensive queries, with the columns of the page's list."""
    if frame.empty:
        return pd.DataFrame(columns=EXPENSIVE_COLUMNS)
    return frame.nlargest(n, "cost_usd")[EXPENSIVE_COLUMNS].reset_index(drop=True)
