"""Cost rollups over the query log: per user, collection, day or model.

Everything is summed by the database (`GROUP BY`), so a rollup over a million logged queries moves a few rows
to Python, not a million. A query asked over two collections counts once in each of them: the JSON list of
collections is expanded in SQL (`json_each` on SQLite, `json_array_elements_text` on PostgreSQL).

Over the whole log the sums come from `query_cost_daily`, which triggers on query_log keep equal to the log
(migration 0006): a few thousand day-user-model groups instead of every query. A `since` or an id window
still reads the log itself."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Engine, Row, case, cast, func, literal_column, select, true
from sqlalchemy.sql.elements import ColumnElement

from app.models import QueryLog, query_cost_daily

GROUPINGS = ("user", "collection", "day", "model", "status")
NO_COLLECTION = "(all)"
NO_MODEL = "(none)"


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


def _dialect(engine: Engine) -> str:
    name = engine.dialect.name
    if name not in ("sqlite", "postgresql"):
        raise ValueError(f"cost reports support SQLite and PostgreSQL, not {name}")
    return name


def period(engine: Engine, freq: str) -> ColumnElement[str]:
    """The UTC day ('YYYY-MM-DD') or hour ('YYYY-MM-DD HH:00:00') of `created_at`, as text."""
    if freq not in ("day", "hour"):
        raise ValueError(f"period is day or hour, not {freq!r}")
    if _dialect(engine) == "sqlite":
        # SQLAlchemy keeps the UTC timestamp as text, 'YYYY-MM-DD HH:MM:SS.ffffff': its prefix is the period
        # (a substring costs a fifth of strftime's date parsing per row).
        if freq == "day":
            return func.substr(QueryLog.created_at, 1, 10)
        return func.substr(QueryLog.created_at, 1, 13).concat(":00:00")
    utc = func.timezone("UTC", QueryLog.created_at)
    return func.to_char(utc, "YYYY-MM-DD" if freq == "day" else "YYYY-MM-DD HH24:00:00")


def collection_elements(engine: Engine, collections: ColumnElement[Any] | None = None) -> Any:
    """One row per collection named in a query_log row (or in `collections`, the JSON text of a summary
    row), joined beside it (an empty list gives none)."""
    column: ColumnElement[Any] = QueryLog.collections if collections is None else collections
    if _dialect(engine) == "sqlite":
        return func.json_each(column).table_valued("value", joins_implicitly=True)
    if collections is not None:
        column = cast(column, JSON)
    # A JSON null (or any non-array) would make json_array_elements_text raise: treat it as no collection.
    as_array = case(
        (func.json_typeof(column) == "array", column),
        else_=literal_column("'[]'::json", JSON),
    )
    return func.json_array_elements_text(as_array).table_valued("value", joins_implicitly=True)


def totals_columns() -> list[ColumnElement[Any]]:
    """SUMs of the cost columns, labelled as CostRollup's fields (NULLs count as zero, as before)."""
    return [
        func.count(QueryLog.id).label("queries"),
        func.coalesce(func.sum(QueryLog.prompt_tokens), 0).label("prompt_tokens"),
        func.coalesce(func.sum(QueryLog.completion_tokens), 0).label("completion_tokens"),
        func.coalesce(func.sum(QueryLog.cost_usd), 0.0).label("cost_usd"),
        func.coalesce(func.sum(QueryLog.cloud_cost_usd), 0.0).label("cloud_cost_usd"),
        func.coalesce(func.sum(QueryLog.energy_joules), 0.0).label("energy_joules"),
        func.coalesce(func.sum(QueryLog.flops), 0.0).label("flops"),
        func.coalesce(func.sum(QueryLog.dense_flops), 0.0).label("dense_flops"),
        func.coalesce(func.sum(QueryLog.total_ms), 0.0).label("total_ms"),
    ]


SUMMED = ("queries", "prompt_tokens", "completion_tokens", "cost_usd", "cloud_cost_usd", "energy_joules", "flops",
          "dense_flops", "total_ms")


def daily_totals_columns() -> list[ColumnElement[Any]]:
    """`totals_columns` over query_cost_daily: the SUMs of its sums, labelled the same."""
    return [func.sum(query_cost_daily.c[name]).label(name) for name in SUMMED]


def log_generation(engine: Engine) -> tuple[int | None, int]:
    """The query log's newest id and its row count, the count read from the daily sums (each logged row is
    one of their queries): a scan of a few thousand sums instead of every row of the log."""
    _dialect(engine)
    query = select(select(func.max(QueryLog.id)).scalar_subquery(),
                   select(func.coalesce(func.sum(query_cost_daily.c.queries), 0)).scalar_subquery())
    with engine.connect() as conn:
        max_id, count = conn.execute(query).one()
    return max_id, int(count)


def daily_sums(engine: Engine, keys: Sequence[str]) -> tuple[int | None, int, list[Row[Any]]]:
    """query_cost_daily summed per `keys` (its key columns), with the query log's newest id and row count
    read by the same statement, so from the same snapshot: the sums are those of exactly that generation."""
    _dialect(engine)
    columns = [query_cost_daily.c[k] for k in keys]
    query = (select(select(func.max(QueryLog.id)).scalar_subquery(), *columns, *daily_totals_columns())
             .group_by(*columns))
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    if not rows:
        return None, 0, []
    count = sum(int(r[1 + len(keys)]) for r in rows)  # the queries column
    return rows[0][0], count, [r[1:] for r in rows]


def _grouped_daily(engine: Engine, by: str, user: str | None) -> Any:
    """`grouped`'s query over query_cost_daily (the whole log, no window)."""
    daily = query_cost_daily.c
    key: ColumnElement[Any]
    query = select().select_from(query_cost_daily)
    if by == "collection":
        elements = collection_elements(engine, daily.collections)
        key = func.coalesce(elements.c.value, NO_COLLECTION)
        query = query.outerjoin(elements, true())
    else:
        key = {"user": daily.user_name, "day": daily.day, "model": daily.model, "status": daily.status}[by]
    query = query.add_columns(key.label("key"), *daily_totals_columns()).group_by(key).order_by(key)
    return query if user is None else query.where(daily.user_name == user)


def grouped(engine: Engine, by: str, *, since: datetime | None = None, min_id: int | None = None,
            user: str | None = None) -> list[CostRollup]:
    """One SQL `GROUP BY` over the query log (over its daily sums when neither `since` nor `min_id` narrows
    it); `min_id` keeps only rows with id >= it (the newest N), `user` only that user's queries (what an
    employee may see of the costs)."""
    if by not in GROUPINGS:
        raise ValueError(f"group by one of {', '.join(GROUPINGS)}, not {by!r}")
    if since is None and min_id is None:
        return _rollups(engine, _grouped_daily(engine, by, user))
    key: ColumnElement[Any]
    query = select()
    if by == "user":
        key = QueryLog.user_name
    elif by == "day":
        key = period(engine, "day")
    elif by == "model":
        key = func.coalesce(QueryLog.model, NO_MODEL)
    elif by == "status":
        key = QueryLog.status
    else:
        elements = collection_elements(engine)
        key = func.coalesce(elements.c.value, NO_COLLECTION)
        query = query.select_from(QueryLog).outerjoin(elements, true())
    query = query.add_columns(key.label("key"), *totals_columns()).group_by(key).order_by(key)
    if by != "collection":
        query = query.select_from(QueryLog)
    if since is not None:
        query = query.where(QueryLog.created_at >= since)
    if min_id is not None:
        query = query.where(QueryLog.id >= min_id)
    if user is not None:
        query = query.where(QueryLog.user_name == user)
    return _rollups(engine, query)


def _rollups(engine: Engine, query: Any) -> list[CostRollup]:
    with engine.connect() as conn:
        rows = conn.execute(query).mappings().all()
    return [
        CostRollup(
            key=str(r["key"]), queries=int(r["queries"]), prompt_tokens=int(r["prompt_tokens"]),
            completion_tokens=int(r["completion_tokens"]), cost_usd=float(r["cost_usd"]),
            cloud_cost_usd=float(r["cloud_cost_usd"]), energy_joules=float(r["energy_joules"]),
            flops=float(r["flops"]), dense_flops=float(r["dense_flops"]), total_ms=float(r["total_ms"]),
        )
        for r in rows
    ]


def rollup(engine: Engine, by: str = "user", *, since: datetime | None = None,
           user: str | None = None) -> list[CostRollup]:
    """A query asked over two collections counts once in each of them; sorted by key."""
    return sorted(grouped(engine, by, since=since, user=user), key=lambda g: g.key)
