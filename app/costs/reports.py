"""Reports: the ledger's costs summed, for `sparq costs` and `GET /v1/costs` (rollups), the Costs page
(`CostView`) and budgets (`spent`).

Every sum is made by the database (`GROUP BY`) from the one list of summed figures (`SUMMED`, as
`ledger_sums` and `daily_sums` write them), so a report over a million logged queries moves a few rows to
Python, not a million, and no two reports can add a figure up differently. A query asked over two collections
counts once in each: the JSON list of collections is expanded in SQL (`json_each` on SQLite,
`json_array_elements_text` on PostgreSQL).

Over the whole ledger the sums come from the daily sums (`query_cost_daily`), which triggers on query_log keep
equal to it (migration 0006): a few thousand day-user-model groups instead of every query. A `since`, a time
window or the page's newest-N window still reads the ledger itself.

Vocabulary: the *ledger* is query_log; the *daily sums* are query_cost_daily; a *generation* names the ledger's
content (newest id, row count); a *rollup* is the sums per one of `GROUPINGS`; the page's *breakdown* is the
sums per one of `BREAKDOWNS`, its *grain* the sums per `GRAIN_KEYS` that every page figure is added up from."""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, TypeVar

import numpy as np
import pandas as pd
from sqlalchemy import (
    JSON,
    Connection,
    Engine,
    Select,
    SQLColumnExpression,
    Text,
    case,
    cast,
    func,
    literal_column,
    select,
    true,
)
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from app.costs.ledger import (
    FLAT_SOURCE,
    NO_COLLECTION,
    NO_MODEL,
    flat_frame,
    flat_record,
    load_queries,
    to_csv,
)
from app.models import QueryLog, query_cost_daily

T = TypeVar("T")
Q = TypeVar("Q", bound="Select[*tuple[Any, ...]]")  # a query narrowed keeps its own row type

# The figures that add up over queries, by name: the ledger's SUMs and the daily sums' columns.
SUMMED = [
    "queries",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
    "cloud_cost_usd",
    "energy_joules",
    "flops",
    "dense_flops",
    "total_ms",
]
GROUPINGS = ("user", "collection", "day", "model", "status")  # what a rollup groups by
BREAKDOWNS = ("user_name", "collection", "model")  # what the Costs page breaks down by (the frame's column)
MEASURES = {
    "cost_usd": "Cost (USD)",
    "energy_joules": "Energy (J)",
    "tokens": "Tokens",
    "total_ms": "Latency (ms)",
}
GRAIN_KEYS = ["day", "user_name", "model", "energy_source", "collections"]
EXPENSIVE_COLUMNS = [
    "id",
    "created_at",
    "user_name",
    "collection",
    "model",
    "status",
    "question",
    "tokens",
    "total_ms",
    "energy_joules",
    "energy_source",
    "cost_usd",
    "cloud_cost_usd",
]
SPARSITY_POINTS = 5_000  # newest queries drawn in the sparsity scatter (one point each)
HEATMAP_QUERIES = 2_000  # newest queries whose expert histograms are summed into the heatmap
TOP_KEPT = 200  # the most expensive queries kept in order between generations (ten pages of twenty)


# --- SQL building blocks ---------------------------------------------------------------------------------


def _dialect(engine: Engine) -> str:
    name = engine.dialect.name
    if name not in ("sqlite", "postgresql"):
        raise ValueError(f"cost reports support SQLite and PostgreSQL, not {name}")
    return name


def created_period(engine: Engine, freq: str) -> ColumnElement[str]:
    """The UTC day ('YYYY-MM-DD') or hour ('YYYY-MM-DD HH:00:00') of a ledger row's `created_at`, as text
    (the daily sums' `day` is the same expression, in migration 0006)."""
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


def each_collection(engine: Engine, collections: ColumnElement[Any] | None = None) -> Any:
    """One row per collection named in a ledger row (or in `collections`, the JSON text of a daily sums
    row), joined beside it (an empty list gives none)."""
    column: SQLColumnExpression[Any] = QueryLog.collections if collections is None else collections
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


def ledger_sums() -> list[ColumnElement[Any]]:
    """The `SUMMED` figures over ledger rows, labelled by name (NULLs count as zero)."""
    return [
        func.count(QueryLog.id).label("queries"),
        *(
            func.coalesce(func.sum(getattr(QueryLog, name)), 0 if name.endswith("_tokens") else 0.0).label(
                name
            )
            for name in SUMMED[1:]
        ),
    ]


def daily_sums() -> list[ColumnElement[Any]]:
    """The `SUMMED` figures over daily sums rows (the sums of their sums), labelled as `ledger_sums`."""
    return [func.sum(query_cost_daily.c[name]).label(name) for name in SUMMED]


@dataclass(frozen=True)
class Generation:
    """What identifies the ledger's content: rows are only ever appended, so a new row moves `max_id` and a
    deleted one (retention) moves `count`."""

    max_id: int | None
    count: int


def generation(engine: Engine) -> Generation:
    """The ledger's newest id and its row count, the count read from the daily sums (each logged row is one
    of their queries): a scan of a few thousand sums instead of every row of the ledger."""
    _dialect(engine)
    query = select(
        select(func.max(QueryLog.id)).scalar_subquery(),
        select(func.coalesce(func.sum(query_cost_daily.c.queries), 0)).scalar_subquery(),
    )
    with engine.connect() as conn:
        max_id, count = conn.execute(query).one()
    return Generation(max_id, int(count))


def read_daily_sums(engine: Engine, keys: Sequence[str]) -> tuple[Generation, list[tuple[Any, ...]]]:
    """The daily sums summed per `keys` (their key columns), with the generation of the ledger read by the
    same statement, so from the same snapshot: the sums are those of exactly that generation."""
    _dialect(engine)
    columns = [query_cost_daily.c[k] for k in keys]
    query = select(select(func.max(QueryLog.id)).scalar_subquery(), *columns, *daily_sums()).group_by(
        *columns
    )
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    if not rows:
        return Generation(None, 0), []
    count = sum(int(r[1 + len(keys)]) for r in rows)  # the queries column
    return Generation(rows[0][0], count), [r[1:] for r in rows]


# --- rollups: `sparq costs`, GET /v1/costs, budgets -------------------------------------------------------


@dataclass
class CostRollup:
    """The `SUMMED` figures of the queries that share one `key` (a user, collection, day, model or status)."""

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
    def tokens(self) -> int:
        """Prompt and completion tokens together."""
        return self.prompt_tokens + self.completion_tokens

    @property
    def mean_latency_ms(self) -> float:
        """The mean wall time of these queries."""
        return self.total_ms / self.queries if self.queries else 0.0

    @property
    def sparsity_saving(self) -> float:
        """The share of a dense model's FLOPs these queries did not spend."""
        return 1 - self.flops / self.dense_flops if self.dense_flops else 0.0

    def to_dict(self) -> dict:
        """The figures by name, with the mean latency and sparsity saving in place of total_ms (the JSON)."""
        data = asdict(self)
        data.pop("total_ms")
        data["mean_latency_ms"] = round(self.mean_latency_ms, 1)
        data["sparsity_saving"] = round(self.sparsity_saving, 4)
        return data


def _rollup(key: str, r: Any) -> CostRollup:
    """A CostRollup from a result row's `SUMMED` columns."""
    return CostRollup(
        key=key,
        queries=int(r["queries"]),
        prompt_tokens=int(r["prompt_tokens"]),
        completion_tokens=int(r["completion_tokens"]),
        cost_usd=float(r["cost_usd"]),
        cloud_cost_usd=float(r["cloud_cost_usd"]),
        energy_joules=float(r["energy_joules"]),
        flops=float(r["flops"]),
        dense_flops=float(r["dense_flops"]),
        total_ms=float(r["total_ms"]),
    )


def _rollup_daily(engine: Engine, by: str, user: str | None) -> Any:
    """The rollup's query over the daily sums (the whole ledger, no window)."""
    daily = query_cost_daily.c
    key: ColumnElement[Any]
    query = select().select_from(query_cost_daily)
    if by == "collection":
        elements = each_collection(engine, daily.collections)
        key = func.coalesce(elements.c.value, NO_COLLECTION)
        query = query.outerjoin(elements, true())
    else:
        key = {"user": daily.user_name, "day": daily.day, "model": daily.model, "status": daily.status}[by]
    query = query.add_columns(key.label("key"), *daily_sums()).group_by(key).order_by(key)
    return query if user is None else query.where(daily.user_name == user)


def _rollup_ledger(engine: Engine, by: str, since: datetime, user: str | None) -> Any:
    """The rollup's query over the ledger rows created at or after `since`."""
    key: SQLColumnExpression[Any]
    query = select()
    if by == "user":
        key = QueryLog.user_name
    elif by == "day":
        key = created_period(engine, "day")
    elif by == "model":
        key = func.coalesce(QueryLog.model, NO_MODEL)
    elif by == "status":
        key = QueryLog.status
    else:
        elements = each_collection(engine)
        key = func.coalesce(elements.c.value, NO_COLLECTION)
        query = query.select_from(QueryLog).outerjoin(elements, true())
    query = query.add_columns(key.label("key"), *ledger_sums()).group_by(key).order_by(key)
    if by != "collection":
        query = query.select_from(QueryLog)
    query = query.where(QueryLog.created_at >= since)
    return query if user is None else query.where(QueryLog.user_name == user)


def rollup(
    engine: Engine, by: str = "user", *, since: datetime | None = None, user: str | None = None
) -> list[CostRollup]:
    """The sums per `by` (one of `GROUPINGS`), sorted by key: over the daily sums unless `since` narrows it;
    `user` keeps only that user's queries (what an employee may see of the costs)."""
    if by not in GROUPINGS:
        raise ValueError(f"group by one of {', '.join(GROUPINGS)}, not {by!r}")
    query = _rollup_daily(engine, by, user) if since is None else _rollup_ledger(engine, by, since, user)
    with engine.connect() as conn:
        rows = conn.execute(query).mappings().all()
    return sorted((_rollup(str(r["key"]), r) for r in rows), key=lambda g: g.key)


def spent(executor: Session | Connection, users: Sequence[str], start: datetime, end: datetime) -> CostRollup:
    """The sums of `users`' queries created in [start, end) (what a budget has used), keyed by their names."""
    query = select(*ledger_sums()).where(
        QueryLog.user_name.in_(users), QueryLog.created_at >= start, QueryLog.created_at < end
    )
    return _rollup(", ".join(users), executor.execute(query).mappings().one())


# --- the Costs page ---------------------------------------------------------------------------------------


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
    return pd.DataFrame(
        {"layer": layers.ravel(), "expert": experts.ravel(), "count": total.ravel(), "share": share.ravel()}
    )


_CACHE_SIZE = 256
_cache: OrderedDict[tuple, Any] = OrderedDict()
_cache_lock = threading.Lock()


def clear_cache() -> None:
    """Forget every cached page figure (tests and benchmarks time a first render)."""
    with _cache_lock:
        _cache.clear()


@dataclass
class _Grain:
    """The analysed queries summed per (UTC day, user, model, energy source, collection list): every total
    the page shows is a sum of these, so one SQL scan serves them all, and a new generation only adds the
    rows logged since (and takes away those that left the newest-N window)."""

    min_id: int | None
    max_id: int | None
    count: int
    frame: pd.DataFrame
    k: int = 0  # for the most-expensive list: how many were asked for (fewer kept: that was the window)


_grains: dict[tuple, _Grain] = {}
_tops: dict[tuple, _Grain] = {}


class CostView:
    """The Costs page's figures over the newest `limit` queries, from SQL `GROUP BY`s, cached per generation
    (and per argument) so a rerun with no new query reads two index lookups and nothing else."""

    def __init__(self, engine: Engine, limit: int = 20_000) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        self.engine = engine
        self.limit = int(limit)
        self._url = engine.url.render_as_string(hide_password=True)
        self.generation = generation(engine)
        self.queries = min(self.generation.count, self.limit)
        self.min_id: int | None = self._cached("min_id", (), self._min_id)

    def _cached(self, name: str, args: tuple, compute: Callable[[], T]) -> T:
        key = (self._url, self.generation, self.limit, name, args)
        with _cache_lock:
            if key in _cache:
                _cache.move_to_end(key)
                return _cache[key]
        value = compute()
        with _cache_lock:
            _cache[key] = value
            while len(_cache) > _CACHE_SIZE:
                _cache.popitem(last=False)
        return value

    def _min_id(self) -> int | None:
        """The id of the `limit`-th newest query (the window is id >= it), or None when all are analysed."""
        if self.generation.count <= self.limit:
            return None
        with self.engine.connect() as conn:
            return conn.execute(
                select(QueryLog.id).order_by(QueryLog.id.desc()).offset(self.limit - 1).limit(1)
            ).scalar()

    def _window(self, query: Q) -> Q:
        """`query` narrowed to the analysed queries (the newest `limit`)."""
        return query if self.min_id is None else query.where(QueryLog.id >= self.min_id)

    @property
    def empty(self) -> bool:
        """No query analysed (none logged yet)."""
        return self.queries == 0

    # --- the grain: one scan, then kept up to date ------------------------------------------------------
    def _grain_rows(self, lo: int | None, hi: int | None) -> pd.DataFrame:
        """SQL sums per grain key over lo <= id <= hi (None: unbounded)."""
        keys = [
            created_period(self.engine, "day").label("day"),
            QueryLog.user_name.label("user_name"),
            func.coalesce(QueryLog.model, NO_MODEL).label("model"),
            func.coalesce(QueryLog.energy_source, "").label("energy_source"),
            cast(QueryLog.collections, Text).label("collections"),  # the JSON text: few distinct lists
        ]
        query = select(*keys, *ledger_sums()).group_by(*keys)
        if lo is not None:
            query = query.where(QueryLog.id >= lo)
        if hi is not None:
            query = query.where(QueryLog.id <= hi)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        frame = _frame(rows, GRAIN_KEYS + SUMMED)
        frame["collections"] = frame["collections"].fillna("null")
        return frame.astype({c: float for c in SUMMED})

    def _grain(self) -> pd.DataFrame:
        return self._cached("grain", (), self._update_grain)

    def _fresh_grain(self) -> pd.DataFrame:
        """The grain with nothing to start from (a first render). From the trigger-kept daily sums when the
        window is most of the ledger: those sums, less the rows older than the window; otherwise (or if a
        query was logged since this view read the generation) from the window's rows."""
        gen, min_id = self.generation, self.min_id
        if min_id is None or gen.count - self.queries < self.queries:
            daily_gen, rows = read_daily_sums(self.engine, GRAIN_KEYS)
            if daily_gen == gen:
                daily = _frame(rows, GRAIN_KEYS + SUMMED).astype({c: float for c in SUMMED})
                if min_id is None:
                    return daily
                older = self._grain_rows(None, min_id - 1)
                older[SUMMED] = -older[SUMMED]
                return _regroup([daily, older])
        return self._grain_rows(min_id, gen.max_id)

    def _update_grain(self) -> pd.DataFrame:
        key = (self._url, self.limit)
        gen, min_id = self.generation, self.min_id
        with _cache_lock:
            old = _grains.get(key)
        frame: pd.DataFrame | None = None
        if old is not None and gen.max_id is not None and old.max_id is not None and gen.max_id >= old.max_id:
            with self.engine.connect() as conn:
                appended = conn.execute(
                    select(func.count(QueryLog.id)).where(QueryLog.id > old.max_id)
                ).scalar()
            # Only appends since (no row deleted): add the new rows, take away those that left the window.
            if gen.count - old.count == appended and (min_id or 0) >= (old.min_id or 0):
                parts = [old.frame]
                if gen.max_id > old.max_id:
                    parts.append(self._grain_rows(old.max_id + 1, gen.max_id))
                if min_id is not None and min_id > (old.min_id or 0):
                    gone = self._grain_rows(old.min_id, min_id - 1)
                    gone[SUMMED] = -gone[SUMMED]
                    parts.append(gone)
                frame = _regroup(parts) if len(parts) > 1 else old.frame
        if frame is None:
            frame = self._fresh_grain()
        with _cache_lock:
            _grains[key] = _Grain(min_id, gen.max_id, gen.count, frame)
            while len(_grains) > _CACHE_SIZE:
                _grains.pop(next(iter(_grains)))
        return frame

    # --- figures -----------------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """Totals: queries, FLOPs against dense and the saving, cost, cheapest cloud cost, energy, and how many
        queries per energy source."""
        return self._cached("summary", (), self._summary)

    def _summary(self) -> dict[str, Any]:
        grain = self._grain()
        flops, dense = float(grain["flops"].sum()), float(grain["dense_flops"].sum())
        per_source = grain.groupby("energy_source")["queries"].sum()
        sources = sorted(((str(k), int(v)) for k, v in per_source.items()), key=lambda kv: (-kv[1], kv[0]))
        return {
            "queries": int(grain["queries"].sum()),
            "flops": flops,
            "dense_flops": dense,
            "saving": (1 - flops / dense) if dense else 0.0,
            "cost_usd": float(grain["cost_usd"].sum()),
            "cloud_cost_usd": float(grain["cloud_cost_usd"].sum()),
            "energy_joules": float(grain["energy_joules"].sum()),
            "energy_sources": dict(sources),
        }

    def timeline(self, freq: str = "day") -> pd.DataFrame:
        """Per UTC day or hour: sums of cost, energy, tokens; mean latency; query count."""
        return self._cached("timeline", (freq,), lambda: self._timeline(freq))

    def _timeline(self, freq: str) -> pd.DataFrame:
        if freq == "day":
            out = _measures_frame(self._grain(), "day").rename(columns={"day": "period"})
        else:
            key = created_period(self.engine, freq)
            query = self._window(select(key.label("period"), *ledger_sums()).group_by(key))
            with self.engine.connect() as conn:
                rows = conn.execute(query).all()
            out = _measures_frame(_frame(rows, ["period", *SUMMED]), "period")
        out["period"] = pd.to_datetime(out["period"], utc=True)
        out = out.sort_values("period", ignore_index=True)
        return out[["period", "cost_usd", "energy_joules", "tokens", "total_ms", "queries"]]

    def breakdown(self, dimension: str) -> pd.DataFrame:
        """Totals per one of `BREAKDOWNS` (a query over two collections counts for each), most expensive
        first."""
        if dimension not in BREAKDOWNS:
            raise ValueError(f"break down by one of {', '.join(BREAKDOWNS)}, not {dimension!r}")
        return self._cached("breakdown", (dimension,), lambda: self._breakdown(dimension))

    def _breakdown(self, dimension: str) -> pd.DataFrame:
        grain = self._grain()
        if dimension == "collection":
            names = {text: _collection_names(text) for text in grain["collections"].unique()}
            grain = grain.assign(collection=grain["collections"].map(names)).explode("collection")
        out = _measures_frame(grain, dimension)
        out = out[[dimension, "queries", "cost_usd", "energy_joules", "tokens", "total_ms"]]
        return out.sort_values(["cost_usd", dimension], ascending=[False, True], ignore_index=True)

    def _newest(self, query: Q, n: int) -> Q:
        """Narrowed to the newest `n` analysed queries by an id range (ids grow with each logged query), so
        the primary key serves it whatever the planner's statistics say."""
        query = self._window(query)
        if self.generation.max_id is not None:
            query = query.where(QueryLog.id > self.generation.max_id - n)
        return query

    def sparsity_points(self, n: int = SPARSITY_POINTS) -> pd.DataFrame:
        """Those of the newest `n` analysed queries that recorded FLOPs: id, created_at, model, saving."""
        return self._cached("sparsity", (n,), lambda: self._sparsity(n))

    def _sparsity(self, n: int) -> pd.DataFrame:
        saving = (1 - func.coalesce(QueryLog.flops, 0.0) / QueryLog.dense_flops).label("sparsity_saving")
        model = func.coalesce(QueryLog.model, NO_MODEL).label("model")
        query = self._newest(
            select(QueryLog.id, QueryLog.created_at, model, saving)
            .where(QueryLog.dense_flops > 0)
            .order_by(QueryLog.id.desc()),
            n,
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        out = _frame(rows, ["id", "created_at", "model", "sparsity_saving"])
        out["created_at"] = pd.to_datetime(out["created_at"], utc=True)
        out["sparsity_saving"] = out["sparsity_saving"].astype(float)
        return out

    def heatmap(self, n: int = HEATMAP_QUERIES) -> pd.DataFrame:
        """`expert_heatmap` over the newest `n` analysed queries (only their histograms are read)."""
        return self._cached("heatmap", (n,), lambda: self._heatmap(n))

    def _heatmap(self, n: int) -> pd.DataFrame:
        query = self._newest(select(QueryLog.details["expert_histogram"]), n)
        with self.engine.connect() as conn:
            histograms = list(conn.execute(query).scalars())
        return expert_heatmap(histograms)

    def expensive(self, order: str = "cost", page: int = 0, page_size: int = 20) -> pd.DataFrame:
        """One page of the analysed queries, most expensive (`cost`) or newest (`recent`) first."""
        if order not in ("cost", "recent"):
            raise ValueError(f"order by cost or recent, not {order!r}")
        if page < 0 or page_size < 1:
            raise ValueError(f"page {page} of size {page_size} does not exist")
        return self._cached(
            "expensive", (order, page, page_size), lambda: self._expensive(order, page, page_size)
        )

    def _top_by_cost(self, k: int) -> pd.DataFrame:
        """(id, cost_usd) of at least the `k` most expensive analysed queries, most expensive first. Kept
        across generations: new queries are merged in, and only when one of the kept ones leaves the
        newest-N window is the whole window sorted again (no index on cost_usd to do it for us)."""
        key = (self._url, self.limit)
        gen, min_id = self.generation, self.min_id
        with _cache_lock:
            old = _tops.get(key)
        top: pd.DataFrame | None = None
        # The kept list is exact for the old window if it holds k rows, or the whole window (fewer than asked).
        complete = old is not None and (len(old.frame) >= k or len(old.frame) < old.k)
        if (
            old is not None
            and complete
            and old.max_id is not None
            and gen.max_id is not None
            and gen.max_id >= old.max_id
        ):
            kept = old.frame if min_id is None else old.frame[old.frame["id"] >= min_id]
            with self.engine.connect() as conn:
                appended = conn.execute(
                    select(func.count(QueryLog.id)).where(QueryLog.id > old.max_id)
                ).scalar()
            if gen.count - old.count == appended and len(kept) == len(old.frame):
                k = max(k, old.k)
                new = self._cost_rows(max(old.max_id + 1, min_id or 0), k)
                top = _sorted_top(pd.concat([kept, new]), k) if len(new) else kept
        if top is None:
            top = self._cost_rows(min_id, k)
        with _cache_lock:
            _tops[key] = _Grain(min_id, gen.max_id, gen.count, top, k)
            while len(_tops) > _CACHE_SIZE:
                _tops.pop(next(iter(_tops)))
        return top

    def _cost_rows(self, lo: int | None, k: int) -> pd.DataFrame:
        """The `k` most expensive queries with id >= `lo`, no cost last, newest first among equals. Costed
        and uncosted ones are asked for apart: PostgreSQL's index on cost_usd (ascending, NULLs last) read
        backwards gives DESC NULLS FIRST, so one `DESC NULLS LAST` query sorted the whole ledger."""
        costed = (
            select(QueryLog.id, QueryLog.cost_usd)
            .where(QueryLog.cost_usd.is_not(None))
            .order_by(QueryLog.cost_usd.desc(), QueryLog.id.desc())
            .limit(k)
        )
        uncosted = (
            select(QueryLog.id, QueryLog.cost_usd)
            .where(QueryLog.cost_usd.is_(None))
            .order_by(QueryLog.id.desc())
        )
        if lo is not None:
            costed, uncosted = costed.where(QueryLog.id >= lo), uncosted.where(QueryLog.id >= lo)
        with self.engine.connect() as conn:
            rows = list(conn.execute(costed).all())
            if len(rows) < k:
                rows += conn.execute(uncosted.limit(k - len(rows))).all()
        return _frame(rows, ["id", "cost_usd"]).astype({"cost_usd": float})

    def _expensive(self, order: str, page: int, page_size: int) -> pd.DataFrame:
        if order == "cost":
            wanted = (page + 1) * page_size
            ids = self._top_by_cost(max(TOP_KEPT, wanted))["id"].tolist()[page * page_size : wanted]
            query = select(*FLAT_SOURCE).where(QueryLog.id.in_(ids))
        else:
            query = self._window(
                select(*FLAT_SOURCE).order_by(QueryLog.id.desc()).offset(page * page_size).limit(page_size)
            )
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        if order == "cost":
            position = {i: n for n, i in enumerate(ids)}
            rows = sorted(rows, key=lambda r: position[r["id"]])
        return flat_frame([flat_record(r) for r in rows], EXPENSIVE_COLUMNS)

    def csv(self) -> bytes:
        """Every analysed query as CSV (loads the rows: call it only when the export is asked for)."""
        frame, _ = load_queries(self.engine, self.limit)
        return to_csv(frame)


def _frame(rows: Sequence[Any], columns: list[str]) -> pd.DataFrame:
    """SQL result rows as a frame, built column by column (pandas probes every row object it is handed
    for array attributes, which on SQLAlchemy rows raises and catches an AttributeError each time)."""
    values = list(zip(*rows, strict=True)) if rows else [()] * len(columns)
    return pd.DataFrame({c: list(v) for c, v in zip(columns, values, strict=True)}, columns=columns)


def _regroup(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """Grain frames (some negated: rows taken away) summed per grain key; groups left with no query go."""
    frame = pd.concat(parts, ignore_index=True).groupby(GRAIN_KEYS, as_index=False)[SUMMED].sum()
    return frame[frame["queries"] > 0].reset_index(drop=True)


def _sorted_top(frame: pd.DataFrame, k: int) -> pd.DataFrame:
    """Most expensive first (no cost last), newest first among equals; the first `k`."""
    ordered = frame.sort_values(["cost_usd", "id"], ascending=[False, False], na_position="last")
    return ordered.head(k).reset_index(drop=True)


def _collection_names(text: str) -> list[str]:
    """The grain's JSON text of a query's collections, as the names it counts for ('(all)' for none)."""
    names = json.loads(text) if text else None
    return [str(n) for n in names] if isinstance(names, list) and names else [NO_COLLECTION]


def _measures_frame(sums: pd.DataFrame, key: str) -> pd.DataFrame:
    """SQL sums regrouped by `key` as a chart frame of `MEASURES`: tokens summed, total_ms as the mean
    latency."""
    grouped = sums.groupby(key, as_index=False)[SUMMED].sum()
    queries = grouped["queries"]
    return pd.DataFrame(
        {
            key: grouped[key],
            "queries": queries.astype(int),
            "cost_usd": grouped["cost_usd"],
            "energy_joules": grouped["energy_joules"],
            "tokens": (grouped["prompt_tokens"] + grouped["completion_tokens"]).astype(int),
            "total_ms": (grouped["total_ms"] / queries.where(queries > 0)).fillna(0.0),
        }
    )
