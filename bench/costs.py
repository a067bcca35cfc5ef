"""Cost reports over a large query log: the SQL rollups (Costs page figures, `sparq costs`) against the old
row-by-row Python aggregation they replaced.

    .venv/bin/python bench/costs.py [--rows 200000] [--database-url postgresql+psycopg://...] [--old-rows 20000]

Prints the figures and writes bench/results/costs.json. The old way (every row loaded through the ORM, summed
in Python / pandas) is timed over the newest --old-rows only: at 200,000 rows it takes minutes.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import Engine, insert, select, text  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from app.costs import ledger, reports  # noqa: E402
from app.costs.reports import GROUPINGS, rollup  # noqa: E402
from app.database import open_database  # noqa: E402
from app.models import QueryLog  # noqa: E402
from tests.app import cost_frames  # noqa: E402 - the old page's pandas figures

COLLECTIONS: list[list[str]] = [[], ["hr"], ["hr", "it"], ["it"], ["legal", "hr"]]


def synthetic_rows(n: int) -> list[dict[str, Any]]:
    start = datetime(2026, 11, 1, tzinfo=UTC)
    return [
        {
            "created_at": start + timedelta(minutes=7 * i),
            "user_name": f"user{i % 17}",
            "collections": COLLECTIONS[i % 5],
            "question": f"question {i}",
            "status": "ok",
            "model": (None, "moe-a", "dense-b")[i % 3],
            "backend": "llamacpp",
            "prompt_tokens": 100 + i % 50,
            "completion_tokens": 20 + i % 13,
            "total_ms": 500.0 + i % 997,
            "timings_ms": {},
            "energy_joules": 3.0 + (i % 7) / 10,
            "energy_source": ("modelled", "measured")[i % 2],
            "cost_usd": 1e-6 * (1 + (i * 7919) % 100_003),
            "cloud_cost_usd": 2e-6 * (1 + i % 41),
            "flops": 1e9 * (1 + i % 5),
            "dense_flops": 4e9,
            "details": {"expert_histogram": [[1, 2, 0, 1], [0, 3, 1, 0]]} if i % 10 == 1 else {},
        }
        for i in range(n)
    ]


def timed(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return round(time.perf_counter() - t, 4)


def page_figures(engine: Engine, limit: int) -> None:
    """Everything the Costs page reads on one run (default radio choices, plus the other breakdowns)."""
    view = reports.CostView(engine, limit)
    view.summary()
    view.timeline("day")
    for dimension in reports.BREAKDOWNS:
        view.breakdown(dimension)
    view.sparsity_points()
    view.heatmap()
    view.expensive("cost", 0, 20)


def old_page(engine: Engine, limit: int) -> None:
    """What the page did before: load the rows as a frame, then pandas."""
    frame, histograms = ledger.load_queries(engine, limit)
    cost_frames.sparsity_summary(frame)
    cost_frames.over_time(frame, "D")
    for dimension in reports.BREAKDOWNS:
        cost_frames.by_dimension(frame, dimension)
    reports.expert_heatmap(histograms)
    cost_frames.most_expensive(frame)


def old_rollup(engine: Engine, by: str, rows: int) -> dict[str, float]:
    """The old `sparq costs`: every row through the ORM, summed in Python (here the newest `rows`)."""
    sums: dict[str, float] = defaultdict(float)
    query = select(QueryLog).order_by(QueryLog.id.desc()).limit(rows).execution_options(yield_per=1000)
    with Session(engine) as session:
        for row in session.scalars(query):
            keys = (list(row.collections) or ["(all)"]) if by == "collection" else [row.user_name]
            for key in keys:
                sums[key] += row.cost_usd or 0.0
    return sums


def slowdown() -> float:
    """This machine's plain-Python speed now against an idle core (3M additions ~ 0.15 s), for reading the
    seconds on a shared machine."""
    t = time.perf_counter()
    x = 0
    for i in range(3_000_000):
        x += i
    return round((time.perf_counter() - t) / 0.15, 1)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--database-url", help="default: a new SQLite file in a temporary folder")
    parser.add_argument(
        "--old-rows",
        type=int,
        default=20_000,
        help="time the old row-by-row aggregation over the newest this many rows",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "costs.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite:///{Path(tmp) / 'costs.db'}"
        engine = open_database(url)
        with engine.connect() as conn:
            if conn.execute(select(QueryLog.id).limit(1)).first() is not None:
                raise SystemExit("the query_log of --database-url is not empty; use an empty database")
        t = time.perf_counter()
        base = min(args.rows, 1_000)
        columns = [c for c in QueryLog.__table__.columns if c.name != "id"]
        with engine.begin() as conn:
            conn.execute(insert(QueryLog), synthetic_rows(base))
            # the rest as copies made by the database: the figures only need the volume
            for done in range(base, args.rows, base):
                n = min(base, args.rows - done)
                conn.execute(
                    insert(QueryLog).from_select(
                        [c.name for c in columns], select(*columns).where(QueryLog.id <= n)
                    )
                )
            if engine.dialect.name == "postgresql":
                conn.execute(text("ANALYZE query_log"))  # as autovacuum would after a bulk load
        insert_s = round(time.perf_counter() - t, 2)

        reports.clear_cache()
        result: dict[str, Any] = {
            "rows": args.rows,
            "dialect": engine.dialect.name,
            "python": platform.python_version(),
            "insert_seconds": insert_s,
            "slowdown_vs_idle_core": slowdown(),
            "page_figures_uncached_s": timed(lambda: page_figures(engine, args.rows)),
            "page_figures_cached_s": timed(lambda: page_figures(engine, args.rows)),
            "cli_rollup_s": {by: timed(lambda by=by: rollup(engine, by)) for by in GROUPINGS},
        }
        # The old way over the newest --old-rows only (it takes ~0.5 ms a row), against the new on the same.
        n = min(args.old_rows, args.rows)
        result[f"page_figures_newest_{n}_s"] = timed(lambda: (reports.clear_cache(), page_figures(engine, n)))
        result[f"old_page_figures_newest_{n}_s"] = timed(lambda: old_page(engine, n))
        result[f"old_cli_rollup_newest_{n}_s"] = {
            by: timed(lambda by=by: old_rollup(engine, by, n)) for by in ("user", "collection")
        }
        engine.dispose()

    for key, value in result.items():
        print(f"{key:30} {value}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
