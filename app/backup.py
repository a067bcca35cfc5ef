"""Backup and restore of everything sparq stores: the database (as portable JSON lines, so a SQLite backup
restores into PostgreSQL and back), the FAISS index files and uploaded documents.

A backup holds the ingest lock, so no ingest runs while it reads; the database is read in one read-only
snapshot transaction (REPEATABLE READ on PostgreSQL), so writers that do not take the lock (the query log,
users) cannot make one table newer than another; readers are unaffected.
"""

from __future__ import annotations

import base64
import gzip
import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Column, Connection, Engine, LargeBinary, Table, func, insert, inspect, select, text
from sqlalchemy.sql.sqltypes import Date, DateTime

from retrieval.schema import Base

FORMAT = "sparq-backup/1"


class BackupError(RuntimeError):
    """A backup or restore that cannot be done (target not empty, other format or schema); says why."""


def _encode(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$b64": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def _decode(value: Any, column: Column[Any]) -> Any:
    if isinstance(value, dict) and "$b64" in value and isinstance(column.type, LargeBinary):
        return base64.b64decode(value["$b64"])
    if value is not None and isinstance(column.type, DateTime):
        return datetime.fromisoformat(value)
    if value is not None and isinstance(column.type, Date):
        return date.fromisoformat(value)
    return value


def _tables() -> list[Table]:
    import app.models  # noqa: F401 - registers the application's tables

    return Base.metadata.sorted_tables


@contextmanager
def _snapshot(engine: Engine) -> Iterator[Connection]:
    """One read-only transaction that sees the database as of its first read, for every table: a row
    committed while the dump runs is in no table of the backup (no chunk without its document)."""
    if engine.dialect.name == "postgresql":
        # READ COMMITTED (the default) would let each SELECT see what committed before it.
        options = {"isolation_level": "REPEATABLE READ", "postgresql_readonly": True}
        with engine.connect().execution_options(**options) as conn, conn.begin():
            yield conn
    elif engine.dialect.name == "sqlite":
        # pysqlite opens no transaction for a SELECT (each would read the latest commit): begin one, so
        # WAL keeps this connection on the snapshot of its first read until the end.
        with engine.connect() as conn, conn.begin():
            conn.exec_driver_sql("BEGIN DEFERRED")
            yield conn
    else:
        raise BackupError(f"backups support SQLite and PostgreSQL, not {engine.dialect.name}")


def dump(engine: Engine, index_dir: Path, uploads_dir: Path | None, target: Path) -> dict[str, Any]:
    """Write the database, index and uploads into the empty folder `target` and return its manifest, so the
    install can be restored elsewhere, even on the other database."""
    target = Path(target)
    if target.exists() and any(target.iterdir()):
        raise BackupError(f"{target} is not empty; back up into a new folder")
    (target / "tables").mkdir(parents=True)
    counts: dict[str, int] = {}
    with _snapshot(engine) as conn:
        revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        for table in _tables():
            n = 0
            with gzip.open(target / "tables" / f"{table.name}.jsonl.gz", "wt", encoding="utf-8") as fh:
                for row in conn.execute(select(table).execution_options(yield_per=2000)).mappings():
                    fh.write(json.dumps({k: _encode(v) for k, v in row.items()}, ensure_ascii=False) + "\n")
                    n += 1
            counts[table.name] = n
    if index_dir.is_dir():
        shutil.copytree(index_dir, target / "index")
    if uploads_dir is not None and uploads_dir.is_dir():
        shutil.copytree(uploads_dir, target / "uploads")
    manifest = {
        "format": FORMAT,
        "created_at": datetime.now(UTC).isoformat(),
        "alembic_revision": revision,
        "dialect": engine.dialect.name,
        "rows": counts,
    }
    (target / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def restore(engine: Engine, index_dir: Path, uploads_dir: Path | None, source: Path) -> dict[str, Any]:
    """Restore into an empty, migrated database (see app.database.upgrade)."""
    source = Path(source)
    manifest_file = source / "manifest.json"
    if not manifest_file.is_file():
        raise BackupError(f"{source} is not a sparq backup (no manifest.json)")
    manifest = json.loads(manifest_file.read_text())
    if manifest.get("format") != FORMAT:
        raise BackupError(f"unsupported backup format {manifest.get('format')!r}")
    tables = _tables()
    with engine.connect() as conn:
        current = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        if current != manifest["alembic_revision"]:
            raise BackupError(
                f"backup schema revision {manifest['alembic_revision']} differs from this database's {current}"
            )
        for table in tables:
            if (
                table.name != "alembic_version"
                and conn.execute(select(func.count()).select_from(table)).scalar()
            ):
                raise BackupError(f"the target database is not empty (table {table.name} has rows)")
    with engine.begin() as conn:
        for table in tables:
            path = source / "tables" / f"{table.name}.jsonl.gz"
            if not path.exists():
                continue
            batch: list[dict[str, Any]] = []
            with gzip.open(path, "rt", encoding="utf-8") as fh:
                for line in fh:
                    raw = json.loads(line)
                    batch.append(
                        {c.name: _decode(raw.get(c.name), c) for c in table.columns if c.name in raw}
                    )
                    if len(batch) >= 2000:
                        conn.execute(insert(table), batch)
                        batch = []
            if batch:
                conn.execute(insert(table), batch)
        if engine.dialect.name == "postgresql":
            # Explicit ids bypassed the sequences; move them past the restored ids.
            for table in tables:
                pk = list(table.primary_key.columns)
                if len(pk) == 1 and pk[0].autoincrement and pk[0].type.python_type is int:
                    seq = conn.execute(
                        text("SELECT pg_get_serial_sequence(:t, :c)"), {"t": table.name, "c": pk[0].name}
                    ).scalar()
                    if seq:
                        conn.execute(
                            text(
                                f"SELECT setval('{seq}', COALESCE((SELECT MAX({pk[0].name}) "
                                f"FROM {table.name}), 0) + 1, false)"
                            )
                        )
    if index_dir.exists():
        shutil.rmtree(index_dir)
    if (source / "index").is_dir():
        shutil.copytree(source / "index", index_dir)
    if uploads_dir is not None and (source / "uploads").is_dir():
        shutil.copytree(source / "uploads", uploads_dir, dirs_exist_ok=True)
    inspect(engine).clear_cache()
    return manifest
