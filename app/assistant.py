"""The Python query API: the composition root that wires configuration, database, store, embedder and model."""

from __future__ import annotations

import errno
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast, overload

from sqlalchemy import Engine, func, select

from app.ask import Answer
from app.config import Settings
from app.container import AskContainer
from app.database import open_database
from app.locks import advisory_lock, file_lock
from app.model_loader import ModelLoad, ModelLoader
from ingestion.embedder import Embedder
from ingestion.isolation import LoaderPool
from ingestion.ocr import OcrSettings
from ingestion.pipeline import IngestPipeline, IngestSummary, ProgressCallback
from ingestion.sources import TextRecord
from model.base import LLMEngine
from retrieval.access import Principal
from retrieval.schema import Collection, Document
from retrieval.store import DocumentStore, StoreError

if TYPE_CHECKING:
    from app.costs.budgets import Budgets
    from app.models import QueryLog
    from app.users import UserDirectory
    from retrieval.filters import SearchFilters
    from retrieval.search import Hit, HybridSearcher, SearchMode

log = logging.getLogger(__name__)


class SparqError(RuntimeError):
    """An error meant for the person at the keyboard: the message says what to do."""


@dataclass(frozen=True)
class CollectionInfo:
    """A collection with its document and chunk counts, as listings show it."""

    name: str
    documents: int
    chunks: int
    created_at: datetime


@dataclass(frozen=True)
class DocumentInfo:
    """A document as listings show it: where it is, its ingest status, chunks and the groups that read it."""

    id: int
    collection: str
    path: str
    title: str | None
    mime: str
    size: int
    status: str
    error: str | None
    chunks: int
    groups: list[str]
    duplicate_of: int | None
    updated_at: datetime


def check_writable(directory: Path) -> None:
    """Fail early and clearly on a read-only or full data dir instead of mid-write."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = (
            directory / f".write-probe-{os.getpid()}-{threading.get_ident()}"
        )  # one per thread: no shared unlink
        with open(probe, "wb") as fh:
            fh.write(b"x" * 4096)
            fh.flush()
            os.fsync(fh.fileno())
        probe.unlink()
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise SparqError(f"the data dir {directory} is full (no space left on device)") from exc
        if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise SparqError(f"the data dir {directory} is not writable ({exc.strerror})") from exc
        raise SparqError(f"the data dir {directory} cannot be used: {exc}") from exc


class Assistant:
    """`Assistant().ingest(...)`, `.search(...)`, `.ask(...)`: everything sparq does, from Python."""

    def __init__(
        self, settings: Settings | None = None, *, llm: LLMEngine | None = None, **overrides: Any
    ) -> None:
        self.settings = settings or Settings(**overrides)
        self._lock = threading.RLock()
        self._engine_lock = threading.Lock()
        self._embedder_lock = threading.Lock()
        self._engine: Engine | None = None
        self._embedder: Embedder | None = None
        self._store: DocumentStore | None = None
        self._loaders: LoaderPool | None = None
        self._searcher: HybridSearcher | None = None
        self._model = ModelLoader(self._create_llm, llm)
        # Wall-clock time for budgets' periods; tests inject another to cross a period boundary.
        self.clock: Callable[[], datetime] = lambda: datetime.now(UTC)
        # The ask's steps, given what they need as providers (nothing loads until an ask needs it).
        self._asking = AskContainer(
            self.settings,
            search=self.search,
            principal=self.principal,
            budgets=lambda: self.budgets,
            llm=lambda: self.llm,
            loaded_llm=lambda: self.loaded_llm,
            encoder=lambda: self.embedder,
            database=lambda: self.engine,
        )

    # --- wiring (lazy, so `sparq collections` never loads a neural network) -----------------------------
    # Each part has its own lock, so signing in (users -> engine) never waits for the embedder or an index
    # being opened, and nothing waits for the LLM (app/model_loader.py). Order when nested: _lock, then the others.
    @property
    def engine(self) -> Engine:
        """The database, opened and migrated on first use (a SQLite data dir checked writable first)."""
        with self._engine_lock:
            if self._engine is None:
                if self.settings.database_url is None:
                    check_writable(self.settings.data_dir)
                self._engine = open_database(self.settings.resolved_database_url)
            return self._engine

    @property
    def embedder(self) -> Embedder:
        """The embedding model, loaded on first use so commands that need none never load it."""
        with self._embedder_lock:
            if self._embedder is None:
                self._embedder = Embedder(
                    self.settings.embedding_model, batch_size=self.settings.embedding_batch_size
                )
            return self._embedder

    @property
    def store(self) -> DocumentStore:
        """The document store, its index opened on first use; a broken index is a SparqError saying why."""
        with self._lock:
            if self._store is None:
                from retrieval.ann import IndexPolicy

                embedder = self.embedder
                store = DocumentStore(
                    self.engine, self.settings.index_dir, embedder.dim, embedding_model=embedder.model_id
                )
                store.index_policy = IndexPolicy(
                    choice=self.settings.index_type, threshold=self.settings.ann_threshold
                )
                try:
                    store.open()
                except StoreError as exc:
                    raise SparqError(str(exc)) from exc
                self._store = store
            return self._store

    def pipeline(self) -> IngestPipeline:
        """An ingest pipeline over this store, embedder and loader pool, configured from the settings."""
        s = self.settings
        return IngestPipeline(
            self.store,
            self.embedder,
            chunk_tokens=s.chunk_tokens,
            overlap_tokens=s.chunk_overlap_tokens,
            max_bytes=s.max_file_mb * 1024 * 1024,
            encode_window=s.ingest_batch_chunks,
            loaders=self._loader_pool(),
        )

    def _loader_pool(self) -> LoaderPool:
        """One pool of parser processes per Assistant, shared by concurrent ingests, started on first use."""
        with self._lock:
            if self._loaders is None:
                s = self.settings
                self._loaders = LoaderPool(
                    s.loader_workers,
                    timeout_s=s.loader_timeout_s,
                    memory_mb=s.loader_memory_mb,
                    nice=s.loader_nice,
                    ocr=OcrSettings(languages=s.ocr_languages, dpi=s.ocr_dpi),
                )
            return self._loaders

    @property
    def users(self) -> UserDirectory:
        """The user directory on this database."""
        from app.users import UserDirectory

        return UserDirectory(self.engine)

    @property
    def budgets(self) -> Budgets:
        """Spending limits, checked by every ask before the model is called."""
        from app.costs.budgets import Budgets

        return Budgets(self.engine, self.users, clock=self.clock)

    def principal(self, user: str | Principal | None) -> Principal:
        """Resolve who is asking: None is the server operator (sees all), a name is looked up, and an
        unknown name is refused rather than silently given access."""
        if user is None:
            return Principal.system()
        if isinstance(user, Principal):
            return user
        info = self.users.get(user)
        if info is None:
            raise SparqError(f"unknown user {user!r}; create it with `sparq users add {user} --groups ...`")
        if info.disabled:
            raise SparqError(f"the account {user!r} is disabled (gone from the company directory)")
        return info.principal()

    @property
    def loaded_llm(self) -> LLMEngine | None:
        """The engine if one is loaded already; never loads or builds a model."""
        return self._model.loaded

    def use_llm(self, engine: LLMEngine | None) -> None:
        """Answer with `engine` from now on (a model the caller loaded itself; None: the configured one)."""
        self._model.use(engine)

    @property
    def llm(self) -> LLMEngine:
        """The answer model: the configured engine, or the embedded default MoE (built on first use; see
        app/model_loader.py for why a load never blocks the rest)."""
        return self._model.get()

    def _create_llm(self, progress: Callable[[str, float], None]) -> LLMEngine:
        from model.factory import configured_engine

        s = self.settings
        return configured_engine(
            s.llm_backend,
            s.llm_model,
            base_url=s.llm_base_url,
            api_key=s.llm_api_key.get_secret_value() if s.llm_api_key else None,
            timeout_s=s.llm_timeout_s,
            n_threads=s.llm_threads,
            context_window=s.llm_context_window,
            top_k=s.llm_top_k,
            data_dir=s.data_dir,
            progress=progress,
        )

    @property
    def llm_status(self) -> ModelLoad:
        """Where loading the answer model stands (what the UI shows while a first build runs)."""
        return self._model.status

    def load_llm_in_background(self, *, retry: bool = False) -> ModelLoad:
        """Start loading the answer model on a background thread (once) and return where it stands."""
        return self._model.load_in_background(retry=retry)

    def close(self) -> None:
        """Save the index and release the searcher, loader processes and database connections."""
        with self._lock:
            if self._store is not None:
                self._store.flush()
            searcher = getattr(self, "_searcher", None)
            if searcher is not None:
                searcher.close()
                self._searcher = None
            self._store = None
            if self._loaders is not None:
                self._loaders.close()
                self._loaders = None
            with self._engine_lock:
                if self._engine is not None:
                    self._engine.dispose()
                self._engine = None

    def __enter__(self) -> Assistant:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- ingestion ------------------------------------------------------------------------------------
    @contextmanager
    def _ingest_lock(self) -> Iterator[None]:
        """Every writer holds both, taken in this order: the data dir's flock (the processes of this machine;
        all SQLite needs) and, on PostgreSQL, an advisory lock (app processes on other machines, each with
        its own data dir, sharing the database)."""
        with file_lock(self.settings.data_dir / "ingest.lock"), advisory_lock(self.engine, "ingest"):
            yield

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """Hold the ingest lock over a store brought up to date with whatever another process wrote. Every
        write (ingest, delete) goes through here: a write applied to a stale in-memory index would be saved
        under the new generation without the other process's chunks."""
        check_writable(self.settings.data_dir)
        from app.costs.meter import work_in_flight  # queries in flight share the process's CPU with it

        with self._ingest_lock(), work_in_flight():
            self.store.reconcile()  # loads a newer index saved here, catches up with SQL, saves
            yield
            self.store.sync_keyword()  # tokenise new chunks now, not inside the next user's query

    def ingest(
        self,
        path: str | Path,
        *,
        collection: str,
        groups: Iterable[str] | None = None,
        sync: bool = False,
        progress: ProgressCallback | None = None,
    ) -> IngestSummary:
        """Ingest a server file or folder: inside SPARQ_INGEST_ROOTS when set, never the data dir, symbolic
        links leaving the folder skipped (see app.ingest_roots)."""
        from sqlalchemy.orm import sessionmaker

        from app.ingest_roots import check_ingest_path
        from app.sources import refuse_synced_path

        s = self.settings
        target = check_ingest_path(path, data_dir=s.data_dir, roots=s.ingest_roots)
        refuse_synced_path(sessionmaker(self.engine), target, collection)  # its source's groups would be lost
        with self._writing():
            return self.pipeline().ingest_path(
                target,
                collection=collection,
                groups=None if groups is None else list(groups),
                sync=sync,
                progress=progress,
                exclude=[s.data_dir],
            )

    def ingest_records(
        self,
        records: Iterable[TextRecord],
        *,
        collection: str,
        groups: Iterable[str] | None = None,
        total: int | None = None,
        progress: ProgressCallback | None = None,
    ) -> IngestSummary:
        """Ingest records that are not files (a mail, a web page, a benchmark corpus), under the ingest lock."""
        with self._writing():
            return self.pipeline().ingest_records(
                records,
                collection=collection,
                groups=None if groups is None else list(groups),
                total=total,
                progress=progress,
            )

    def ingest_upload(
        self,
        filename: str,
        data: bytes,
        *,
        collection: str,
        groups: Iterable[str] | None = None,
        progress: ProgressCallback | None = None,
    ) -> IngestSummary:
        """Store an uploaded file under data_dir/uploads/<collection id>/ and ingest it, both under the ingest
        lock, so concurrent uploads never overwrite each other (see app.uploads)."""
        from app.uploads import save_upload

        with self._writing():
            cid = self.store.collection_id(collection, create=True)
            if cid is None:  # create=True gives the id of the collection it found or made
                raise SparqError(f"the collection {collection!r} could not be created")
            saved = save_upload(self.settings.data_dir, cid, filename, data)
            return self.pipeline().ingest_path(
                saved,
                collection=collection,
                groups=None if groups is None else list(groups),
                progress=progress,
            )

    # --- listing and deleting -------------------------------------------------------------------------
    def collections(self) -> list[CollectionInfo]:
        """Every collection with its document and chunk counts, by name."""
        with self.store.sessions() as session:
            # Document.n_chunks is kept by the store on every write: no join over the chunks table.
            counts = {
                cid: (docs, int(chunks))
                for cid, docs, chunks in session.execute(
                    select(
                        Document.collection_id,
                        func.count(Document.id),
                        func.coalesce(func.sum(Document.n_chunks), 0),
                    ).group_by(Document.collection_id)
                ).all()
            }
            doc_counts = {cid: docs for cid, (docs, _) in counts.items()}
            chunk_counts = {cid: chunks for cid, (_, chunks) in counts.items()}
            return [
                CollectionInfo(c.name, doc_counts.get(c.id, 0), chunk_counts.get(c.id, 0), c.created_at)
                for c in session.scalars(select(Collection).order_by(Collection.name))
            ]

    def documents(self, collection: str | None = None) -> list[DocumentInfo]:
        """Every document (or `collection`'s), by collection and path."""
        with self.store.sessions() as session:
            query = (
                select(Document, Collection.name).join(Collection).order_by(Collection.name, Document.path)
            )
            if collection is not None:
                query = query.where(Collection.name == collection)
            return [
                DocumentInfo(
                    d.id,
                    name,
                    d.path,
                    d.title,
                    d.mime,
                    d.size,
                    d.status,
                    d.error,
                    d.n_chunks,
                    d.group_names,
                    d.duplicate_of,
                    d.updated_at,
                )
                for d, name in session.execute(query).all()
            ]

    def delete_document(self, document_id: int) -> None:
        """Delete a document; its stored upload goes with it (a server-folder file is never touched)."""
        from app.uploads import remove_upload

        with self._writing():
            with self.store.sessions() as session:
                path = session.scalar(select(Document.path).where(Document.id == document_id))
            if not self.store.delete_documents([document_id]):
                raise SparqError(f"no document with id {document_id}")
            if path is not None:
                remove_upload(self.settings.data_dir, path)

    def delete_collection(self, name: str) -> int:
        """Delete a collection with its documents and its uploads folder."""
        from app.uploads import remove_collection_uploads, remove_upload

        with self._writing():
            cid = self.store.collection_id(name)
            if cid is None:
                raise SparqError(f"no collection named {name!r}")
            with self.store.sessions() as session:
                paths = list(session.scalars(select(Document.path).where(Document.collection_id == cid)))
            removed = self.store.delete_collection(name)
            for path in paths:  # uploads stored before the per-id folders, in uploads/<name>/
                remove_upload(self.settings.data_dir, path)
            remove_collection_uploads(self.settings.data_dir, cid)
            return removed

    # --- backup ----------------------------------------------------------------------------------------
    def backup(self, target: str | Path) -> dict[str, Any]:
        """Database, FAISS index and uploads into `target` (a new folder), while no ingest runs."""
        from app.backup import dump

        with self._ingest_lock():
            if self._store is not None:
                self._store.flush()
            return dump(
                self.engine, self.settings.index_dir, self.settings.data_dir / "uploads", Path(target)
            )

    def restore(self, source: str | Path) -> dict[str, Any]:
        """Restore a backup into this (empty) installation; the index is verified against SQL after."""
        from app.backup import restore

        with self._ingest_lock():
            with self._lock:
                self._store = None
            manifest = restore(
                self.engine, self.settings.index_dir, self.settings.data_dir / "uploads", Path(source)
            )
            self.store.reconcile()  # still under the lock: no ingest may write before the index is verified
        return manifest

    # --- search (retrieval) ----------------------------------------------------------------------------
    # Assistant.search lives below this line.
    @property
    def searcher(self) -> HybridSearcher:
        """Built on first use, configured from settings; one instance serves every user and thread."""
        from retrieval.ann import IndexPolicy
        from retrieval.search import HybridSearcher

        with self._lock:
            searcher = getattr(self, "_searcher", None)
            if searcher is None or searcher.store is not self.store:
                if searcher is not None:
                    searcher.close()
                s = self.settings
                store = self.store
                store.index_policy = IndexPolicy(choice=s.index_type, threshold=s.ann_threshold)
                embedder = self.embedder
                threads = s.query_threads
                searcher = HybridSearcher(
                    store,
                    # Timed per thread, so ask can report the embed stage apart from the search.
                    self._asking.embed_timer.timed(
                        lambda query: embedder.encode_query(query, threads=threads)
                    ),
                    dense_weight=s.dense_weight,
                    keyword_weight=s.keyword_weight,
                    rrf_k=s.rrf_k,
                )
                self._searcher = searcher
            return searcher

    def search(
        self,
        query: str,
        *,
        user: str | Principal | None = None,
        k: int | None = None,
        filters: SearchFilters | None = None,
        mode: str = "hybrid",
    ) -> list[Hit]:
        """The k best passages `user` may read (None: the operator, who sees all); access is enforced in
        retrieval itself, so no caller can forget it."""
        from retrieval.search import SearchError

        principal = self.principal(user)
        try:
            # `mode` is as the caller typed it: the searcher refuses anything but its SearchMode words.
            return self.searcher.search(
                query,
                principal=principal,
                k=k or self.settings.search_k,
                filters=filters,
                mode=cast("SearchMode", mode),
            )
        except SearchError as exc:
            raise SparqError(str(exc)) from exc

    # --- ask -------------------------------------------------------------------------------------------
    # Assistant.ask lives below this line.
    @overload
    def ask(
        self,
        question: str,
        *,
        user: str | Principal | None = None,
        collections: Iterable[str] | None = None,
        history: list[dict[str, str]] | None = None,
        stream: Literal[False] = False,
    ) -> Answer: ...

    @overload
    def ask(
        self,
        question: str,
        *,
        user: str | Principal | None = None,
        collections: Iterable[str] | None = None,
        history: list[dict[str, str]] | None = None,
        stream: Literal[True],
    ) -> Iterator[str | Answer]: ...

    @overload
    def ask(
        self,
        question: str,
        *,
        user: str | Principal | None = None,
        collections: Iterable[str] | None = None,
        history: list[dict[str, str]] | None = None,
        stream: bool = False,
    ) -> Answer | Iterator[str | Answer]: ...

    def ask(
        self,
        question: str,
        *,
        user: str | Principal | None = None,
        collections: Iterable[str] | None = None,
        history: list[dict[str, str]] | None = None,
        stream: bool = False,
    ) -> Answer | Iterator[str | Answer]:
        """Answer from the documents `user` may read, with citations and the query's cost.

        With stream=True, yields text pieces as they are generated and then the final Answer (whose text
        has citations to nothing removed)."""
        events = self._asking.pipeline().run(
            question, user=user, collections=list(collections or []) or None, history=history
        )
        if stream:
            return events
        answer: str | Answer | None = None
        for event in events:
            answer = event
        if not isinstance(answer, Answer):  # the pipeline's last event is its Answer
            raise SparqError(f"the ask ended without an answer (last event: {type(answer).__name__})")
        return answer

    def query_log(self, limit: int = 100) -> list[QueryLog]:
        """The newest `limit` ledger rows, newest first."""
        from sqlalchemy.orm import Session

        from app.models import QueryLog

        with Session(self.engine) as session:
            return list(session.scalars(select(QueryLog).order_by(QueryLog.id.desc()).limit(limit)))
