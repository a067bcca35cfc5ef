"""query_cost_daily: the query log summed per UTC day, user, model, energy source, status and collection list,
kept exact by triggers on query_log and filled from the rows already logged

The Costs page and `sparq costs` read these sums instead of scanning every logged query (at 200,000 rows
that scan was half of the page's first render on SQLite, which took 1.3 s on a loaded CI run). Triggers, not
application code, keep them, so that every writer counts: the assistant's log, a restore (the table is left
out of backups and rebuilt as the rows are inserted again), bulk loads, retention deletes. SQLite has row
triggers (an upsert per row); PostgreSQL gets statement triggers over the transition tables (one grouped
upsert per statement). A later migration that recreates query_log (SQLite batch mode copies and drops the
table, and its triggers with it) must create these triggers again.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

KEYS = ("day", "user_name", "model", "energy_source", "status", "collections")
# Summed with NULL as zero, as app.costs.reports.ledger_sums() sums them.
SUMS = ("prompt_tokens", "completion_tokens", "cost_usd", "cloud_cost_usd", "energy_joules", "flops",
        "dense_flops", "total_ms")
COLUMNS = ", ".join((*KEYS, "queries", *SUMS))
SQLITE_TRIGGERS = ("query_log_cost_daily_insert", "query_log_cost_daily_delete", "query_log_cost_daily_update")
PG_FUNCTIONS = {
    "query_log_cost_daily_insert": "INSERT",
    "query_log_cost_daily_delete": "DELETE",
    "query_log_cost_daily_update": "UPDATE",
}


def _keys(dialect: str, row: str = "") -> list[str]:
    """The summary's key of a query_log row (`row.` prefixes the columns, as NEW. in a SQLite trigger);
    the same expressions as app.costs.reports.created_period and the page's grain."""
    p = f"{row}." if row else ""
    day = (f"substr({p}created_at, 1, 10)" if dialect == "sqlite"
           else f"to_char(timezone('UTC', {p}created_at), 'YYYY-MM-DD')")
    return [day, f"{p}user_name", f"coalesce({p}model, '(none)')", f"coalesce({p}energy_source, '')",
            f"{p}status", f"coalesce(CAST({p}collections AS TEXT), 'null')"]


def _conflict(dialect: str) -> str:
    # PostgreSQL's b-tree keys are at most ~2.7 kB: a long model name or collection list is hashed.
    return ", ".join(KEYS) if dialect == "sqlite" else \
        "day, user_name, energy_source, status, md5(model), md5(collections)"


def _add(dialect: str, target: str) -> str:
    return ", ".join(f"{c} = {target}{c} + excluded.{c}" for c in ("queries", *SUMS))


def _sqlite_row(row: str, sign: int) -> str:
    """Add (sign 1) or take away (-1) one row, then drop its group if no query is left in it."""
    values = [*_keys("sqlite", row), str(sign), *(f"{sign} * coalesce({row}.{c}, 0)" for c in SUMS)]
    upsert = (f"INSERT INTO query_cost_daily ({COLUMNS}) VALUES ({', '.join(values)}) "
              f"ON CONFLICT ({_conflict('sqlite')}) DO UPDATE SET {_add('sqlite', '')};")
    if sign > 0:
        return upsert
    match = " AND ".join(f"{k} = {e}" for k, e in zip(KEYS, _keys("sqlite", row), strict=True))
    return f"{upsert} DELETE FROM query_cost_daily WHERE {match} AND queries = 0;"


def _pg_upsert(source: str) -> str:
    """One grouped upsert of signed rows (`sign` 1 added, -1 taken away) from `source`."""
    keys = _keys("postgresql")
    sums = [f"sum(sign * coalesce({c}, 0))" for c in SUMS]
    groups = ", ".join(str(i + 1) for i in range(len(KEYS)))
    return (f"INSERT INTO query_cost_daily AS s ({COLUMNS}) "
            f"SELECT {', '.join(keys)}, sum(sign), {', '.join(sums)} FROM ({source}) AS r "
            f"GROUP BY {groups} ORDER BY {groups} "
            f"ON CONFLICT ({_conflict('postgresql')}) DO UPDATE SET {_add('postgresql', 's.')};")


def _backfill(dialect: str) -> str:
    keys = _keys(dialect)
    sums = [f"coalesce(sum({c}), 0)" for c in SUMS]
    groups = ", ".join(str(i + 1) for i in range(len(KEYS)))
    return (f"INSERT INTO query_cost_daily ({COLUMNS}) SELECT {', '.join(keys)}, count(*), {', '.join(sums)} "
            f"FROM query_log GROUP BY {groups}")


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        # No row may be logged between the backfill and the triggers (released at the commit).
        op.execute("LOCK TABLE query_log IN SHARE ROW EXCLUSIVE MODE")
    op.create_table(
        "query_cost_daily",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("user_name", sa.String(length=200), nullable=False),
        sa.Column("model", sa.String(length=500), nullable=False),
        sa.Column("energy_source", sa.String(length=20), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("collections", sa.Text(), nullable=False),
        sa.Column("queries", sa.BigInteger(), nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger(), nullable=False),
        sa.Column("completion_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=False),
        sa.Column("cloud_cost_usd", sa.Float(), nullable=False),
        sa.Column("energy_joules", sa.Float(), nullable=False),
        sa.Column("flops", sa.Float(), nullable=False),
        sa.Column("dense_flops", sa.Float(), nullable=False),
        sa.Column("total_ms", sa.Float(), nullable=False),
    )
    op.execute(f"CREATE UNIQUE INDEX uq_query_cost_daily_key ON query_cost_daily ({_conflict(dialect)})")
    op.execute(_backfill(dialect))
    if dialect == "sqlite":
        op.execute(f"CREATE TRIGGER query_log_cost_daily_insert AFTER INSERT ON query_log FOR EACH ROW "
                   f"BEGIN {_sqlite_row('NEW', 1)} END")
        op.execute(f"CREATE TRIGGER query_log_cost_daily_delete AFTER DELETE ON query_log FOR EACH ROW "
                   f"BEGIN {_sqlite_row('OLD', -1)} END")
        op.execute(f"CREATE TRIGGER query_log_cost_daily_update AFTER UPDATE ON query_log FOR EACH ROW "
                   f"BEGIN {_sqlite_row('OLD', -1)} {_sqlite_row('NEW', 1)} END")
        return
    if dialect != "postgresql":
        raise RuntimeError(f"sparq supports SQLite and PostgreSQL, not {dialect}")
    added, removed = "SELECT 1 AS sign, * FROM new_rows", "SELECT -1 AS sign, * FROM old_rows"
    bodies = {
        "INSERT": _pg_upsert(added),
        "DELETE": _pg_upsert(removed) + " DELETE FROM query_cost_daily WHERE queries = 0;",
        "UPDATE": _pg_upsert(f"{added} UNION ALL {removed}") + " DELETE FROM query_cost_daily WHERE queries = 0;",
    }
    for name, event in PG_FUNCTIONS.items():
        op.execute(f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN {bodies[event]} "
                   f"RETURN NULL; END $$")
        tables = {"INSERT": "NEW TABLE AS new_rows", "DELETE": "OLD TABLE AS old_rows",
                  "UPDATE": "OLD TABLE AS old_rows NEW TABLE AS new_rows"}[event]
        op.execute(f"CREATE TRIGGER {name} AFTER {event} ON query_log REFERENCING {tables} "
                   f"FOR EACH STATEMENT EXECUTE FUNCTION {name}()")
    op.execute("CREATE FUNCTION query_log_cost_daily_truncate() RETURNS trigger LANGUAGE plpgsql AS "
               "$$ BEGIN DELETE FROM query_cost_daily; RETURN NULL; END $$")
    op.execute("CREATE TRIGGER query_log_cost_daily_truncate AFTER TRUNCATE ON query_log "
               "FOR EACH STATEMENT EXECUTE FUNCTION query_log_cost_daily_truncate()")


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for name in SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    else:
        for name in (*PG_FUNCTIONS, "query_log_cost_daily_truncate"):
            op.execute(f"DROP TRIGGER IF EXISTS {name} ON query_log")
            op.execute(f"DROP FUNCTION IF EXISTS {name}()")
    op.drop_table("query_cost_daily")
