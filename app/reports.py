"""Cost reports from the query log: a flat table, rollups for charts, expert utilisation, CSV export.

The Costs page reads `CostView`: every figure is summed by the database and cached per generation of the
query log, so a rerun does not load the log into Python. `load_queries` (the flat frame) is kept for the
CSV export and for callers that want the rows themselves."""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import pandas as pd
from sqlalchemy import Engine, Text, cast, func, select
from sqlalchemy.orm import Session

from app import cost_reports
from app.models import QueryLog

T = TypeVar("T")

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


# --- SQL-side figures for the Costs page ----------------------------------------------------------------

DIMENSIONS = {"user_name": "user", "collection": "collection", "model": "model"}
EXPENSIVE_COLUMNS = ["id", "created_at", "user_name", "collection", "model", "status", "question", "tokens",
                     "total_ms", "energy_joules", "energy_source", "cost_usd", "cloud_cost_usd"]
SPARSITY_POINTS = 5_000  # newest queries drawn in the sparsity scatter (one point each)
HEATMAP_QUERIES = 2_000  # newest queries whose expert histograms are summed into the heatmap
_CACHE_SIZE = 256
_cache: OrderedDict[tuple, Any] = OrderedDict()
_cache_lock = threading.Lock()


@dataclass(frozen=True)
class Generation:
    """What identifies the query log's content: rows are only ever appended, so a new row moves `max_id`
    and a deleted one (retention) moves `count`."""

    max_id: int | None
    count: int


def generation(engine: Engine) -> Generation:
    return Generation(*cost_reports.log_generation(engine))


def clear_cache() -> None:
    with _cache_lock:
        _cache.clear()


GRAIN_KEYS = ["day", "user_name", "model", "energy_source", "collections"]
SUMS = ["queries", "prompt_tokens", "completion_tokens", "cost_usd", "cloud_cost_usd", "energy_joules", "flops",
        "dense_flops", "total_ms"]


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
TOP_KEPT = 200  # the most expensive queries kept in order between generations (ten pages of twenty)


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

    def _window(self, query):  # noqa: ANN001, ANN202 - a Select, narrowed to the analysed queries
        return query if self.min_id is None else query.where(QueryLog.id >= self.min_id)

    @property
    def empty(self) -> bool:
        return self.queries == 0

    # --- the grain: one scan, then kept up to date ------------------------------------------------------
    def _grain_rows(self, lo: int | None, hi: int | None) -> pd.DataFrame:
        """SQL sums per grain key over lo <= id <= hi (None: unbounded)."""
        keys = [
            cost_reports.period(self.engine, "day").label("day"),
            QueryLog.user_name.label("user_name"),
            func.coalesce(QueryLog.model, cost_reports.NO_MODEL).label("model"),
            func.coalesce(QueryLog.energy_source, "").label("energy_source"),
            cast(QueryLog.collections, Text).label("collections"),  # the JSON text: few distinct lists
        ]
        query = select(*keys, *cost_reports.totals_columns()).group_by(*keys)
        if lo is not None:
            query = query.where(QueryLog.id >= lo)
        if hi is not None:
            query = query.where(QueryLog.id <= hi)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        frame = _frame(rows, GRAIN_KEYS + SUMS)
        frame["collections"] = frame["collections"].fillna("null")
        return frame.astype({c: float for c in SUMS})

    def _grain(self) -> pd.DataFrame:
        return self._cached("grain", (), self._update_grain)

    def _fresh_grain(self) -> pd.DataFrame:
        """The grain with nothing to start from (a first render). From the trigger-kept daily sums when the
        window is most of the log: those sums, less the rows older than the window; otherwise (or if a query
        was logged since this view read the generation) from the window's rows."""
        gen, min_id = self.generation, self.min_id
        if min_id is None or gen.count - self.queries < self.queries:
            max_id, count, rows = cost_reports.daily_sums(self.engine, GRAIN_KEYS)
            if Generation(max_id, count) == gen:
                daily = _frame(rows, GRAIN_KEYS + SUMS).astype({c: float for c in SUMS})
                if min_id is None:
                    return daily
                older = self._grain_rows(None, min_id - 1)
                older[SUMS] = -older[SUMS]
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
                appended = conn.execute(select(func.count(QueryLog.id)).where(QueryLog.id > old.max_id)).scalar()
            # Only appends since (no row deleted): add the new rows, take away those that left the window.
            if gen.count - old.count == appended and (min_id or 0) >= (old.min_id or 0):
                parts = [old.frame]
                if gen.max_id > old.max_id:
                    parts.append(self._grain_rows(old.max_id + 1, gen.max_id))
                if (min_id or 0) > (old.min_id or 0):
                    gone = self._grain_rows(old.min_id, min_id - 1)
                    gone[SUMS] = -gone[SUMS]
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
        """Totals (as `sparsity_summary`) plus query count, energy and how many queries per energy source."""
        return self._cached("summary", (), self._summary)

    def _summary(self) -> dict[str, Any]:
        grain = self._grain()
        flops, dense = float(grain["flops"].sum()), float(grain["dense_flops"].sum())
        per_source = grain.groupby("energy_source")["queries"].sum()
        sources = sorted(((str(k), int(v)) for k, v in per_source.items()), key=lambda kv: (-kv[1], kv[0]))
        return {
            "queries": int(grain["queries"].sum()),
            "flops": flops, "dense_flops": dense, "saving": (1 - flops / dense) if dense else 0.0,
            "cost_usd": float(grain["cost_usd"].sum()),
            "cloud_cost_usd": float(grain["cloud_cost_usd"].sum()),
            "energy_joules": float(grain["energy_joules"].sum()),
            "energy_sources": dict(sources),
        }

    def timeline(self, freq: str = "day") -> pd.DataFrame:
        """As `over_time`: per UTC day or hour, sums of cost, energy, tokens; mean latency; query count."""
        return self._cached("timeline", (freq,), lambda: self._timeline(freq))

    def _timeline(self, freq: str) -> pd.DataFrame:
        if freq == "day":
            out = _metrics_frame(self._grain(), "day").rename(columns={"day": "period"})
        else:
            key = cost_reports.period(self.engine, freq)
            query = self._window(select(key.label("period"), *cost_reports.totals_columns()).group_by(key))
            with self.engine.connect() as conn:
                rows = conn.execute(query).all()
            out = _metrics_frame(_frame(rows, ["period", *SUMS]), "period")
        out["period"] = pd.to_datetime(out["period"], utc=True)
        out = out.sort_values("period", ignore_index=True)
        return out[["period", "cost_usd", "energy_joules", "tokens", "total_ms", "queries"]]

    def breakdown(self, dimension: str) -> pd.DataFrame:
        """As `by_dimension`: totals per user_name, collection (a query over two counts for each) or model,
        most expensive first."""
        if dimension not in DIMENSIONS:
            raise ValueError(f"break down by one of {', '.join(DIMENSIONS)}, not {dimension!r}")
        return self._cached("breakdown", (dimension,), lambda: self._breakdown(dimension))

    def _breakdown(self, dimension: str) -> pd.DataFrame:
        grain = self._grain()
        if dimension == "collection":
            names = {text: _collection_names(text) for text in grain["collections"].unique()}
            grain = grain.assign(collection=grain["collections"].map(names)).explode("collection")
        out = _metrics_frame(grain, dimension)
        out = out[[dimension, "queries", "cost_usd", "energy_joules", "tokens", "total_ms"]]
        return out.sort_values(["cost_usd", dimension], ascending=[False, True], ignore_index=True)

    def _newest(self, query, n: int):  # noqa: ANN001, ANN202 - a Select
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
        model = func.coalesce(QueryLog.model, cost_reports.NO_MODEL).label("model")
        query = self._newest(select(QueryLog.id, QueryLog.created_at, model, saving)
                             .where(QueryLog.dense_flops > 0).order_by(QueryLog.id.desc()), n)
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
        return self._cached("expensive", (order, page, page_size), lambda: self._expensive(order, page, page_size))

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
        if old is not None and complete and old.max_id is not None and gen.max_id is not None \
                and gen.max_id >= old.max_id:
            kept = old.frame if min_id is None else old.frame[old.frame["id"] >= min_id]
            with self.engine.connect() as conn:
                appended = conn.execute(select(func.count(QueryLog.id)).where(QueryLog.id > old.max_id)).scalar()
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
        backwards gives DESC NULLS FIRST, so one `DESC NULLS LAST` query sorted the whole log."""
        costed = select(QueryLog.id, QueryLog.cost_usd).where(QueryLog.cost_usd.is_not(None)) \
            .order_by(QueryLog.cost_usd.desc(), QueryLog.id.desc()).limit(k)
        uncosted = select(QueryLog.id, QueryLog.cost_usd).where(QueryLog.cost_usd.is_(None)).order_by(QueryLog.id.desc())
        if lo is not None:
            costed, uncosted = costed.where(QueryLog.id >= lo), uncosted.where(QueryLog.id >= lo)
        with self.engine.connect() as conn:
            rows = list(conn.execute(costed).all())
            if len(rows) < k:
                rows += conn.execute(uncosted.limit(k - len(rows))).all()
        return _frame(rows, ["id", "cost_usd"]).astype({"cost_usd": float})

    def _expensive(self, order: str, page: int, page_size: int) -> pd.DataFrame:
        columns = [QueryLog.id, QueryLog.created_at, QueryLog.user_name, QueryLog.collections, QueryLog.model,
                   QueryLog.status, QueryLog.question, QueryLog.prompt_tokens, QueryLog.completion_tokens,
                   QueryLog.total_ms, QueryLog.energy_joules, QueryLog.energy_source, QueryLog.cost_usd,
                   QueryLog.cloud_cost_usd]
        if order == "cost":
            wanted = (page + 1) * page_size
            ids = self._top_by_cost(max(TOP_KEPT, wanted))["id"].tolist()[page * page_size:wanted]
            query = select(*columns).where(QueryLog.id.in_(ids))
        else:
            query = self._window(select(*columns).order_by(QueryLog.id.desc())
                                 .offset(page * page_size).limit(page_size))
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        if order == "cost":
            position = {i: n for n, i in enumerate(ids)}
            rows = sorted(rows, key=lambda r: position[r["id"]])
        records = [{
            "id": r["id"], "created_at": r["created_at"], "user_name": r["user_name"],
            "collection": ", ".join(r["collections"] or []) or cost_reports.NO_COLLECTION,
            "model": r["model"] or cost_reports.NO_MODEL, "status": r["status"], "question": r["question"],
            "tokens": (r["prompt_tokens"] or 0) + (r["completion_tokens"] or 0), "total_ms": r["total_ms"] or 0.0,
            "energy_joules": r["energy_joules"] or 0.0, "energy_source": r["energy_source"] or "",
            "cost_usd": r["cost_usd"] or 0.0, "cloud_cost_usd": r["cloud_cost_usd"] or 0.0,
        } for r in rows]
        out = pd.DataFrame(records, columns=EXPENSIVE_COLUMNS)
        if not out.empty:
            out["created_at"] = pd.to_datetime(out["created_at"], utc=True)
        return out

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
    frame = pd.concat(parts, ignore_index=True).groupby(GRAIN_KEYS, as_index=False)[SUMS].sum()
    return frame[frame["queries"] > 0].reset_index(drop=True)


def _sorted_top(frame: pd.DataFrame, k: int) -> pd.DataFrame:
    """Most expensive first (no cost last), newest first among equals; the first `k`."""
    ordered = frame.sort_values(["cost_usd", "id"], ascending=[False, False], na_position="last")
    return ordered.head(k).reset_index(drop=True)


def _collection_names(text: str) -> list[str]:
    """The grain's JSON text of a query's collections, as the names it counts for ('(all)' for none)."""
    names = json.loads(text) if text else None
    return [str(n) for n in names] if isinstance(names, list) and names else [cost_reports.NO_COLLECTION]


def _metrics_frame(sums: pd.DataFrame, key: str) -> pd.DataFrame:
    """SQL totals regrouped by `key` as a chart frame: tokens summed, total_ms as the mean latency."""
    grouped = sums.groupby(key, as_index=False)[SUMS].sum()
    queries = grouped["queries"]
    return pd.DataFrame({
        key: grouped[key], "queries": queries.astype(int), "cost_usd": grouped["cost_usd"],
        "energy_joules": grouped["energy_joules"],
        "tokens": (grouped["prompt_tokens"] + grouped["completion_tokens"]).astype(int),
        "total_ms": (grouped["total_ms"] / queries.where(queries > 0)).fillna(0.0),
    })
