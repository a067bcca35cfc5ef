"""The FAISS mirror on its own: a real FAISS index following rows written straight into a real database.

No DocumentStore here: the tests write chunks and bump `index_state.generation` themselves, as the store (or
another process) would, and check that the mirror catches up, saves, follows a write, and rebuilds while
writes keep coming, with the rebuild's builder passed in so a test can hold it or make it fail.
"""

from __future__ import annotations

import threading
from pathlib import Path

import faiss
import numpy as np
import pytest
from sqlalchemy import Engine, delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from retrieval.ann import IndexKind, IndexPolicy, build_index
from retrieval.errors import StoreError
from retrieval.schema import Chunk, Collection, Document, IndexState
from retrieval.vector_index import VectorIndex
from retrieval.vector_mirror import IndexBuilder, VectorMirror

DIM = 16


class Database:
    """Just enough of a writer: sessions, the generation, and rows added the way the store adds them."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.sessions = sessionmaker(engine, expire_on_commit=False)
        self.rng = np.random.default_rng(0)
        with self.sessions() as session, session.begin():
            session.add(Collection(name="c"))
        with self.sessions() as session:
            self.collection_id = session.scalar(select(Collection.id))

    def generation(self, session: Session | None = None) -> int:
        query = select(IndexState.generation).where(IndexState.id == 1)
        if session is None:
            with self.engine.connect() as conn:
                return int(conn.scalar(query) or 0)
        return int(session.scalar(query) or 0)

    def bump(self, session: Session) -> int:
        if session.get(IndexState, 1) is None:
            session.add(IndexState(id=1, generation=1))
            session.flush()
        else:
            session.execute(update(IndexState).values(generation=IndexState.generation + 1))
        return self.generation(session)

    def add_document(self, session: Session, name: str, n: int) -> tuple[int, np.ndarray, np.ndarray]:
        """A document with `n` chunks (in `session`'s transaction): its id, chunk ids and vectors."""
        doc = Document(collection_id=self.collection_id, path=name, sha256="0" * 64, size=1, mtime=0.0)
        session.add(doc)
        session.flush()
        vecs = self.rng.normal(size=(n, DIM)).astype(np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        rows = [
            Chunk(
                document_id=doc.id,
                position=i,
                text="t",
                search_text="t",
                token_count=1,
                embedding=v.tobytes(),
            )
            for i, v in enumerate(vecs)
        ]
        session.add_all(rows)
        session.flush()
        return doc.id, np.array([r.id for r in rows], dtype=np.int64), vecs

    def write_elsewhere(self, name: str, n: int) -> np.ndarray:
        """Another process's committed write, unseen by the mirror: returns the new chunk ids."""
        with self.sessions() as session, session.begin():
            _, ids, _ = self.add_document(session, name, n)
            self.bump(session)
        return ids

    def chunk_ids(self) -> np.ndarray:
        with self.sessions() as session:
            return np.array(sorted(session.scalars(select(Chunk.id))), dtype=np.int64)


@pytest.fixture
def db(engine: Engine) -> Database:
    return Database(engine)


def make_mirror(
    db: Database, index_dir: Path, policy: IndexPolicy | None = None, build: IndexBuilder = build_index
) -> VectorMirror:
    return VectorMirror(
        VectorIndex(index_dir, DIM), db.sessions, db.generation, threading.Lock(), policy, build=build
    )


def test_load_catch_up_and_flush_follow_sql(db: Database, tmp_path: Path) -> None:
    mirror = make_mirror(db, tmp_path / "index")
    assert mirror.load().generation == 0
    assert mirror.mirrored == 0 and mirror.vectors.read_pointer() is not None

    added = db.write_elsewhere("a.txt", 10)
    assert mirror.catch_up() == 1
    assert np.array_equal(np.sort(mirror.vectors.ids()), added)
    assert mirror.vectors.read_pointer().generation == 0  # catching up does not save

    with db.sessions() as session, session.begin():
        session.execute(delete(Chunk).where(Chunk.id.in_(added[:3].tolist())))
        db.bump(session)
    assert mirror.catch_up() == 2
    assert np.array_equal(np.sort(mirror.vectors.ids()), db.chunk_ids())
    mirror.flush()
    assert mirror.vectors.read_pointer().generation == 2

    reader = make_mirror(db, tmp_path / "index")
    report = reader.load()  # the saved file already mirrors generation 2: nothing to repair
    assert (report.added, report.removed, reader.mirrored) == (0, 0, 2)
    assert np.array_equal(np.sort(reader.vectors.ids()), db.chunk_ids())


def test_a_followed_write_is_mirrored_without_reading_sql_back(db: Database, tmp_path: Path) -> None:
    lock = threading.Lock()
    mirror = VectorMirror(VectorIndex(tmp_path / "index", DIM), db.sessions, db.generation, lock)
    mirror.load()
    with lock:
        with db.sessions() as session, session.begin():
            doc_id, ids, vecs = db.add_document(session, "a.txt", 4)
            mirror.follow(db.bump(session))
        mirror.apply(np.empty(0, dtype=np.int64), (ids, vecs, np.full(len(ids), doc_id, dtype=np.int64)))
    assert mirror.mirrored == 1
    assert mirror.vectors.document_map()[ids].tolist() == [doc_id] * 4

    db.write_elsewhere("b.txt", 3)  # unseen here: the next followed write cannot claim to mirror it
    with lock:
        with db.sessions() as session, session.begin():
            mirror.follow(db.bump(session))
        mirror.apply(np.empty(0, dtype=np.int64))
    assert mirror.mirrored is None
    mirror.flush()  # catches up from SQL before saving, instead of labelling a state it lacks
    assert mirror.mirrored == 3 and mirror.vectors.read_pointer().generation == 3
    assert np.array_equal(np.sort(mirror.vectors.ids()), db.chunk_ids())


def test_a_rebuild_replays_the_writes_made_while_it_built(db: Database, tmp_path: Path) -> None:
    building, release = threading.Event(), threading.Event()

    def held_build(kind: IndexKind, dim: int, ids: np.ndarray, vectors: np.ndarray) -> faiss.Index:
        building.set()
        assert release.wait(30)
        return build_index(kind, dim, ids, vectors)

    mirror = make_mirror(db, tmp_path / "index", IndexPolicy(choice="hnsw"), held_build)
    mirror.load()
    db.write_elsewhere("a.txt", 40)
    mirror.catch_up()  # a replica that only reads still follows the policy: this starts the rebuild
    assert building.wait(30)
    assert mirror.rebuild_needed() == "hnsw" and not mirror.start_rebuild()  # one at a time
    late = db.write_elsewhere("b.txt", 5)
    mirror.catch_up()  # into the live flat index, then replayed onto the one being built
    release.set()
    assert mirror.wait_for_rebuild()
    assert mirror.vectors.kind == "hnsw"
    assert set(late.tolist()) <= set(mirror.vectors.ids().tolist())
    assert np.array_equal(np.sort(mirror.vectors.ids()), db.chunk_ids())
    assert mirror.vectors.read_pointer().generation == 2  # the installed index saved itself


def test_a_failed_rebuild_is_raised_once_by_the_next_wait(db: Database, tmp_path: Path) -> None:
    def failing(kind: IndexKind, dim: int, ids: np.ndarray, vectors: np.ndarray) -> faiss.Index:
        raise MemoryError("no room")

    mirror = make_mirror(db, tmp_path / "index", IndexPolicy(choice="hnsw"), failing)
    mirror.load()
    db.write_elsewhere("a.txt", 8)
    assert mirror.start_rebuild()
    with pytest.raises(StoreError, match="background index rebuild failed: MemoryError"):
        mirror.wait_for_rebuild()
    assert not mirror.wait_for_rebuild()
    assert mirror.vectors.kind == "flat"
