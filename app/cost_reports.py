"""Cost rollups over the query log: per user, collection, day or model."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass
from datetime import datetime

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from app.models import QueryLog

GROUPINGS = ("user", "collection", "day", "model", "status")


@dataclass
class CostRollup:
    key: str
    queries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    cloud_cost_usd: float = 0.0
    energy_joules: float = 0.0
    flops: float = 0.0
    dense_flops: float = 0.0
    total_ms: float = 0.0

    @property
    def mean_latency_ms(self) -> float:
        return self.total_ms / self.queries if self.queries else 0.0

    @property
    def sparsity_saving(self) -> float:
        return 1 - self.flops / self.dense_flops if self.dense_flops else 0.0

    def to_dict(self) -> dict:
        data = asdict(self)
        data.pop("total_ms")
        data["mean_latency_ms"] = round(self.mean_latency_ms, 1)
        data["sparsity_saving"] = round(self.sparsity_saving, 4)
        return data


def _keys(row: QueryLog, by: str) -> list[str]:
    if by == "user":
        return [row.user_name]
    if by == "collection":
        return list(row.collections) or ["(all)"]
    if by == "day":
        return [row.created_at.date().isoformat()]
    if by == "model":
        return [row.model or "(none)"]
    return [row.status]


def rollup(engine: Engine, by: str = "user", *, since: datetime | None = None) -> list[CostRollup]:
    """A query asked over two collections counts once in each of them."""
    if by not in GROUPINGS:
        raise ValueError(f"group by one of {', '.join(GROUPINGS)}, not {by!r}")
    groups: dict[str, CostRollup] = defaultdict(lambda: CostRollup(""))
    query = select(QueryLog).order_by(QueryLog.id)
    if since is not None:
        query = query.where(QueryLog.created_at >= since)
    with Session(engine) as session:
        for row in session.scalars(query.execution_options(yield_per=1000)):
            for key in _keys(row, by):
                g = groups[key]
                g.key = key
                g.queries += 1
                g.prompt_tokens += row.prompt_tokens or 0
                g.completion_tokens += row.completion_tokens or 0
                g.cost_usd += row.cost_usd or 0.0
                g.cloud_cost_usd += row.cloud_cost_usd or 0.0
                g.energy_joules += row.energy_joules or 0.0
                g.flops += row.flops or 0.0
                g.dense_flops += row.dense_flops or 0.0
                g.total_ms += row.total_ms or 0.0
    return sorted(groups.values(), key=lambda g: g.key)
