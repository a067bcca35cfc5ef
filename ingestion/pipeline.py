"""The ingest pipeline: load and chunk on one thread, embed on the main one, write on a third.

The embedder is the bottleneck, so everything else runs beside it: a reader thread prepares documents
(stat, hash, load, chunk) ahead of the encoder, and a writer thread commits embedded batches while the
next batch encodes. Each written batch is one SQL transaction, so a crash loses at most the batch in
flight; the next run finds those files not yet stored and does them again.

A file that cannot be read again keeps its last good chunks (status "stale", with the error). A duplicate
reads through its original's chunks only while it has the same content: when the original changes, fails
or is deleted, the store sets its duplicates "pending", and the run reads them from their own files.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import func, select, update

from ingestion.chunk_queue import ChunkQueue
from ingestion.chunker import Chunker
from ingestion.connectors.base import is_under
from ingestion.embedder import Embedder
from ingestion.isolation import LoaderPool
from ingestion.loaders import load_file, mime_for, supported_extensions
from ingestion.loaders.base import LoadedDocument, LoaderError, UnsupportedFormat
from ingestion.sources import SourceItem, TextRecord, file_items, record_items, walk_files
from retrieval.schema import Document, DocumentGroup, IngestRun
from retrieval.store import ChunkRecord, DocumentMeta, DocumentStore, DocumentWrite
from retrieval.text_analysis import search_text

log = logging.getLogger(__name__)

_DONE = object()
LoadOutcome = LoadedDocument | Exception


def _load(item: SourceItem) -> LoadOutcome:
    """Parse one item; its error is returned, not raised, so that it is reported in listing order."""
    try:
        return item.load()
    except Exception as exc:  # reported by IngestPipeline._complete as this file's failure
        return exc


HEADER_CHARS = 200


@dataclass
class Failure:
    """A file that could not be ingested and why, listed in the summary."""

    path: str
    error: str


@dataclass
class IngestSummary:
    """What one ingest run did, file by file outcome counts and chunk counts, for the CLI, UI and run row."""

    files_new: int = 0
    files_updated: int = 0
    files_unchanged: int = 0
    files_failed: int = 0
    files_skipped: int = 0
    files_removed: int = 0
    chunks_added: int = 0
    chunks_removed: int = 0
    seconds: float = 0.0
    failures: list[Failure] = field(default_factory=list)
    skipped: list[Failure] = field(default_factory=list)
    run_id: int | None = None
    collection: str = ""

    def to_dict(self) -> dict:
        """The summary as plain data (seconds rounded), for JSON output and the run record."""
        data = asdict(self)
        data["seconds"] = round(self.seconds, 3)
        return data


@dataclass(frozen=True)
class FileEvent:
    """Reported once per source item, when its outcome is final: new, updated, unchanged, duplicate,
    failed, skipped or removed."""

    path: str
    status: str
    done: int
    total: int | None
    error: str | None = None
    chunks: int = 0


ProgressCallback = Callable[[FileEvent], None]
# A source's way to hand over one stored document again by its key (see IngestPipeline.ingest_items).
Reread = Callable[[str], SourceItem | None]


@dataclass
class _Prepared:
    item: SourceItem
    status: str  # new | updated | unchanged | duplicate | failed | still_failed | skipped
    sha256: str = ""
    mime: str = "application/octet-stream"
    title: str | None = None
    chunks: list[ChunkRecord] = field(default_factory=list)
    embed_texts: list[str] = field(default_factory=list)
    error: str | None = None
    existing_id: int | None = None
    existing_groups: frozenset[str] | None = None
    mtime_changed: bool = False  # unchanged content under a newer mtime: record it, so next time is fast


@dataclass
class _ToLoad:
    """An item that passed every check that needs no parsing; what `_complete` needs once it is loaded."""

    item: SourceItem
    status: str  # new | updated
    sha256: str
    mime: str
    existing_id: int | None


@dataclass
class _Known:
    id: int
    sha256: str
    size: int
    mtime: float
    status: str
    error: str | None = None
    groups: frozenset[str] = frozenset()


# Stored states whose size, mtime or sha256 can say "nothing to do" (stale and pending must be read again).
_SETTLED = ("ready", "duplicate")
REREAD_ROUNDS = 3
RECORD_NOT_REREADABLE = (
    "the identical document it was stored with changed, failed or was deleted, and a record cannot be read "
    "again from a file: ingest it again"
)


def _item_groups(item: SourceItem, groups: list[str] | None) -> list[str] | None:
    """Who may read this item: its own groups (a source's permissions) when it has them, else the run's."""
    if item.groups is None:
        return groups
    return sorted({g.strip() for g in item.groups if g.strip()})


def _header(title: str | None, heading: str | None) -> str:
    parts = [p for p in (title, heading) if p]
    header = " > ".join(parts)
    return header[:HEADER_CHARS]


def _queued_chunks(item: object) -> int:
    """What a prepared item weighs in the reader's queue: the chunks it brings to encode."""
    return len(item.embed_texts) if isinstance(item, _Prepared) else 0


@dataclass
class _PassState:
    """What the three threads of one pass share: the run's target, what is stored already, the queues
    between the stages, and the first errors (any stage's error stops the others)."""

    cid: int
    groups: list[str] | None
    summary: IngestSummary
    report: Callable[..., None]
    requeue: dict[str, SourceItem]
    known: dict[str, _Known]
    ready_shas: dict[str, str]
    prepared_q: ChunkQueue[Any]  # _Prepared items, then _DONE
    write_q: queue.Queue = field(default_factory=lambda: queue.Queue(maxsize=2))
    errors: list[BaseException] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)


class IngestPipeline:
    """Loads, chunks, embeds and stores documents of a source into a collection (see the module)."""

    def __init__(
        self,
        store: DocumentStore,
        embedder: Embedder,
        *,
        chunk_tokens: int = 200,
        overlap_tokens: int = 32,
        max_bytes: int = 200 * 1024 * 1024,
        encode_window: int = 512,
        flush_seconds: float = 30.0,
        loaders: LoaderPool | None = None,
    ) -> None:
        """`loaders`: parse files in worker processes with time and memory limits (the product passes one);
        None parses in this process, as tests of the pipeline's own logic may."""
        if embedder.dim != store.dim:
            raise ValueError(f"embedder dimension {embedder.dim} != store dimension {store.dim}")
        self.store = store
        self.embedder = embedder
        self.chunker = Chunker(embedder.count_tokens, max_tokens=chunk_tokens, overlap_tokens=overlap_tokens)
        self.max_bytes = max_bytes
        self.encode_window = encode_window
        self.flush_seconds = flush_seconds
        self.loaders = loaders

    # --- entry points --------------------------------------------------------------------------------
    def ingest_path(
        self,
        path: str | Path,
        *,
        collection: str,
        groups: list[str] | None = None,
        sync: bool = False,
        progress: ProgressCallback | None = None,
        exclude: Iterable[Path] = (),
    ) -> IngestSummary:
        """Ingest a file or folder tree; symbolic links leaving it and folders in `exclude` (the data dir)
        are reported as skipped, never read."""
        root = Path(path).expanduser()
        listing = walk_files(root, exclude=exclude)
        items = listing.items(self.load_file)
        root_key = str(root.resolve())
        present = {str(p) for p in listing.files} if sync else None
        keep = [str(p) for p in listing.unreadable_folders]
        return self._run(
            items, len(listing), collection, groups, root_key, progress, sync_present=present, keep_under=keep
        )

    def ingest_items(
        self,
        items: Iterable[SourceItem],
        *,
        collection: str,
        source: str,
        present: set[str] | None = None,
        keep_under: Iterable[str] = (),
        groups: list[str] | None = None,
        total: int | None = None,
        progress: ProgressCallback | None = None,
        reread: Reread | None = None,
    ) -> IngestSummary:
        """Ingest items a source listed (an item's own `groups` override `groups`). With `present`, stored
        documents of the collection under the key prefix `source` that are not in it are removed, except
        those under a prefix in `keep_under` (parts of the source that could not be listed this time).
        `reread(key)`: the item for a stored document the listing did not offer but whose content must be
        read again (a duplicate whose original changed); None when the source cannot give it."""
        return self._run(
            items,
            total,
            collection,
            groups,
            source,
            progress,
            sync_present=present,
            keep_under=list(keep_under),
            reread=reread,
        )

    def ingest_records(
        self,
        records: Iterable[TextRecord],
        *,
        collection: str,
        groups: list[str] | None = None,
        total: int | None = None,
        progress: ProgressCallback | None = None,
    ) -> IngestSummary:
        """Ingest records that are already text (a benchmark corpus), keyed by their own keys."""
        return self._run(
            record_items(iter(records)), total, collection, groups, f"records:{collection}", progress
        )

    # --- the run -------------------------------------------------------------------------------------
    def _run(
        self,
        items: Iterable[SourceItem],
        total: int | None,
        collection: str,
        groups: list[str] | None,
        source: str,
        progress: ProgressCallback | None,
        *,
        sync_present: set[str] | None = None,
        keep_under: list[str] | None = None,
        reread: Reread | None = None,
    ) -> IngestSummary:
        started = time.perf_counter()
        cid = self.store.collection_id(collection, create=True)
        assert cid is not None
        # None: keep the groups stored documents already have (new documents get none: admins only).
        groups = None if groups is None else sorted({g.strip() for g in groups if g.strip()})
        summary = IngestSummary(collection=collection)
        summary.run_id = self._start_run(cid, source)
        counter = {"done": 0}
        lock = threading.Lock()

        def report(p: _Prepared, status: str, chunks: int = 0) -> None:
            with lock:
                counter["done"] += 1
                done = counter["done"]
            if progress is not None:
                progress(FileEvent(p.item.key, status, done, total, p.error, chunks))

        error: BaseException | None = None
        requeue: dict[str, SourceItem] = {}
        try:
            self._pass(items, cid, groups, summary, report, requeue)
            if sync_present is not None:
                self._sync(summary, cid, source, sync_present, progress, total or 0, keep_under or [])
            self._reread_pending(cid, summary, report, requeue, reread)
            self.store.flush()
        except BaseException as exc:
            error = exc
        summary.seconds = time.perf_counter() - started
        self._finish_run(summary, "failed" if error else "completed", repr(error) if error else None)
        if error is not None:
            raise error
        return summary

    def _pass(
        self,
        items: Iterable[SourceItem],
        cid: int,
        groups: list[str] | None,
        summary: IngestSummary,
        report: Callable[..., None],
        requeue: dict[str, SourceItem],
    ) -> None:
        """Prepare, embed and write `items`: a reader thread (precheck, parse), this thread (embed) and a
        writer thread (store), joined by bounded queues; raises the first error any of them hit."""
        known = self._known_documents(cid)
        run = _PassState(
            cid=cid,
            groups=groups,
            summary=summary,
            report=report,
            requeue=requeue,
            known=known,
            ready_shas={k.sha256: path for path, k in known.items() if k.status == "ready"},
            # two windows ready when the encoder turns to the next, so its windows stay full
            prepared_q=ChunkQueue(2 * self.encode_window, _queued_chunks),
        )
        reader_thread = threading.Thread(
            target=self._read_stage, args=(items, run), name="sparq-ingest-reader", daemon=True
        )
        writer_thread = threading.Thread(
            target=self._write_stage, args=(run,), name="sparq-ingest-writer", daemon=True
        )
        reader_thread.start()
        writer_thread.start()
        try:
            self._encode_loop(run.prepared_q, run.write_q, run.stop)
        except BaseException as exc:
            run.errors.append(exc)
        finally:
            if run.errors:
                run.stop.set()
            run.write_q.put(_DONE)
            writer_thread.join()
            # A reader blocked on a full queue (the encoder stopped early) is released by draining it.
            while reader_thread.is_alive():
                with contextlib.suppress(queue.Empty):
                    run.prepared_q.get(timeout=0.1)
            reader_thread.join()
        if run.errors:
            raise run.errors[0]

    def _read_stage(self, items: Iterable[SourceItem], run: _PassState) -> None:
        """The reader thread: precheck each item and parse what must be read. With worker processes, up to
        2 x workers files are parsed ahead, in parallel; results are taken in listing order, so duplicates
        and progress read as in a sequential run."""
        parallel = self.loaders.size if self.loaders is not None else 0
        pool = ThreadPoolExecutor(parallel, thread_name_prefix="sparq-load") if parallel > 1 else None
        window: collections.deque[tuple[_Prepared | _ToLoad, Future[LoadOutcome] | None]] = (
            collections.deque()
        )
        seen_sha: set[str] = set()

        def finish(entry: tuple[_Prepared | _ToLoad, Future[LoadOutcome] | None]) -> _Prepared:
            pre, future = entry
            if isinstance(pre, _Prepared):
                return pre
            outcome = future.result() if future is not None else _load(pre.item)
            return self._complete(pre, outcome, seen_sha)

        try:
            for item in items:
                if run.stop.is_set():
                    return
                pre = self._precheck(item, run.known, run.ready_shas, seen_sha)
                if isinstance(pre, _Prepared) and item.release is not None:
                    item.release()  # settled unread: a fetched copy need not wait for the run's end
                future = (
                    pool.submit(_load, pre.item) if pool is not None and isinstance(pre, _ToLoad) else None
                )
                window.append((pre, future))
                while window and (pool is None or len(window) > 2 * parallel):
                    run.prepared_q.put(finish(window.popleft()))
            while window and not run.stop.is_set():
                run.prepared_q.put(finish(window.popleft()))
        except BaseException as exc:  # surfaced in the encoding thread by _pass
            run.errors.append(exc)
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
            run.prepared_q.put(_DONE)

    def _write_stage(self, run: _PassState) -> None:
        """The writer thread: store each embedded batch, flushing the index every `flush_seconds`."""
        last_flush = time.monotonic()
        try:
            while True:
                batch = run.write_q.get()
                if batch is _DONE:
                    return
                self._write(batch, run.cid, run.groups, run.summary, run.report, run.requeue)
                if time.monotonic() - last_flush > self.flush_seconds:
                    self.store.flush()
                    last_flush = time.monotonic()
        except BaseException as exc:
            run.errors.append(exc)
            run.stop.set()
            # Drain so the encoder never blocks on a dead writer.
            while run.write_q.get() is not _DONE:
                pass

    def _reread_pending(
        self,
        cid: int,
        summary: IngestSummary,
        report: Callable[..., None],
        requeue: dict[str, SourceItem],
        reread: Reread | None,
    ) -> None:
        """Read the collection's "pending" documents (duplicates whose original changed, failed or was
        deleted) from their own files (or, for a source's remote documents, from the source through
        `reread`), keeping their own groups, so that none of them is left reading content that is no
        longer its own, nor left unsearchable."""
        loader = self.load_file
        for _ in range(REREAD_ROUNDS):
            with self.store.sessions() as session:
                rows = session.execute(
                    select(Document.id, Document.path).where(
                        Document.collection_id == cid, Document.status == "pending"
                    )
                ).all()
            if not rows:
                return
            again: list[SourceItem] = []
            unreadable: dict[int, Failure] = {}
            for doc_id, path in rows:
                if path in requeue:
                    again.append(requeue[path])
                elif Path(path).is_absolute():
                    again.extend(file_items([Path(path)], loader))
                elif reread is None:
                    unreadable[doc_id] = Failure(path, RECORD_NOT_REREADABLE)
                else:
                    try:
                        item = reread(path)
                    except OSError as exc:  # that one document only; the source said why
                        unreadable[doc_id] = Failure(path, f"could not be read again from its source: {exc}")
                        continue
                    if item is None:
                        unreadable[doc_id] = Failure(path, RECORD_NOT_REREADABLE)
                    else:
                        again.append(item)
            for doc_id, failure in unreadable.items():
                with self.store.sessions() as session, session.begin():
                    session.execute(
                        update(Document)
                        .where(Document.id == doc_id)
                        .values(status="failed", error=failure.error)
                    )
            summary.files_failed += len(unreadable)
            summary.failures.extend(unreadable.values())
            if again:
                self._pass(again, cid, None, summary, report, requeue)
        with self.store.sessions() as session:
            left = session.scalar(
                select(func.count(Document.id)).where(
                    Document.collection_id == cid, Document.status == "pending"
                )
            )
        if left:
            log.warning(
                "%d documents are still pending a re-read; the next ingest of the collection retries them",
                left,
            )

    def _encode_loop(self, prepared_q: ChunkQueue[Any], write_q: queue.Queue, stop: threading.Event) -> None:
        batch: list[_Prepared] = []
        pending_chunks = 0
        finished = False
        while not finished:
            item = prepared_q.get()
            if item is _DONE:
                finished = True
            else:
                batch.append(item)
                pending_chunks += len(item.chunks)
            window_full = pending_chunks >= self.encode_window
            idle = prepared_q.empty() and pending_chunks > 0 and len(batch) >= 1 and not window_full
            if batch and (finished or window_full or (idle and pending_chunks >= self.encode_window // 4)):
                if stop.is_set():
                    return
                texts = [t for p in batch for t in p.embed_texts]
                vectors = self.embedder.encode(texts)
                write_q.put((batch, vectors))
                batch, pending_chunks = [], 0

    # --- stages --------------------------------------------------------------------------------------
    def load_file(self, path: Path) -> LoadedDocument:
        """Parse one file the way this pipeline does: in an isolated worker when it has a loader pool."""
        if self.loaders is not None:
            return self.loaders.load(path, max_bytes=self.max_bytes)
        return load_file(path, max_bytes=self.max_bytes)

    def _precheck(
        self, item: SourceItem, known: dict[str, _Known], ready_shas: dict[str, str], seen_sha: set[str]
    ) -> _Prepared | _ToLoad:
        """Everything decided without parsing: skipped, unchanged, too large, duplicate; else what to load."""
        existing = known.get(item.key)
        if item.skip_reason is not None:  # refused by the folder walk (e.g. a symbolic link leaving the root)
            return _Prepared(item, "skipped", error=item.skip_reason)
        if item.extension and item.extension not in supported_extensions():
            return _Prepared(item, "skipped", error=f"no loader for {item.extension} files")
        if not item.extension and item.key.startswith("/"):
            return _Prepared(item, "skipped", error="file has no extension; format unknown")
        if (
            existing
            and existing.size == item.size
            and existing.mtime == item.mtime
            and item.mtime
            and existing.status not in ("stale", "pending")
        ):
            if existing.status == "failed":
                # Still broken: reported again (the summary is the folder's state), but nothing is written.
                return _Prepared(
                    item,
                    "still_failed",
                    sha256=existing.sha256,
                    error=existing.error,
                    existing_id=existing.id,
                )
            return _Prepared(
                item,
                "unchanged",
                sha256=existing.sha256,
                existing_id=existing.id,
                existing_groups=existing.groups,
            )
        if item.size > self.max_bytes:
            return _Prepared(
                item,
                "failed",
                error=f"file too large: {item.size} bytes (limit {self.max_bytes})",
                existing_id=existing.id if existing else None,
            )
        try:
            sha = item.digest()
        except OSError as exc:
            return _Prepared(
                item,
                "failed",
                error=f"cannot read file: {exc}",
                existing_id=existing.id if existing else None,
            )
        if existing and existing.sha256 == sha and existing.status in _SETTLED:
            return _Prepared(
                item,
                "unchanged",
                sha256=sha,
                existing_id=existing.id,
                existing_groups=existing.groups,
                mtime_changed=bool(item.mtime),
            )
        status = "updated" if existing else "new"
        mime = mime_for(Path(item.key)) if item.key.startswith("/") else "text/plain"
        if sha in seen_sha or ready_shas.get(sha, item.key) != item.key:
            seen_sha.add(sha)
            return _Prepared(
                item, "duplicate", sha256=sha, mime=mime, existing_id=existing.id if existing else None
            )
        return _ToLoad(item, status, sha, mime, existing.id if existing else None)

    def _complete(self, pre: _ToLoad, outcome: LoadOutcome, seen_sha: set[str]) -> _Prepared:
        """The loaded (or failed) item, chunked; in listing order, so an identical file parsed at the same
        time as an earlier one is still recorded as its duplicate."""
        item, status, sha, mime = pre.item, pre.status, pre.sha256, pre.mime
        existing_id = pre.existing_id
        if sha in seen_sha:
            return _Prepared(item, "duplicate", sha256=sha, mime=mime, existing_id=existing_id)
        try:
            if isinstance(outcome, BaseException):
                raise outcome
            loaded = outcome
            records, texts = self._chunk(loaded)
        except UnsupportedFormat as exc:
            return _Prepared(item, "skipped", error=str(exc))
        except (LoaderError, OSError) as exc:
            return _Prepared(item, "failed", sha256=sha, mime=mime, error=str(exc), existing_id=existing_id)
        except Exception as exc:  # a loader bug must not stop the folder; it is reported, never hidden
            log.exception("unexpected error loading %s", item.key)
            return _Prepared(
                item,
                "failed",
                sha256=sha,
                mime=mime,
                error=f"unexpected {type(exc).__name__}: {exc}",
                existing_id=existing_id,
            )
        if not records:
            return _Prepared(
                item,
                "failed",
                sha256=sha,
                mime=mime,
                error="no text found in the document",
                existing_id=existing_id,
            )
        seen_sha.add(sha)
        # A loader's warnings (e.g. scanned pages OCR could not read) stay on the document, not in a log.
        return _Prepared(
            item,
            status,
            sha256=sha,
            mime=loaded.mime or mime,
            title=loaded.title,
            chunks=records,
            embed_texts=texts,
            existing_id=existing_id,
            error=loaded.metadata.get("warnings"),
        )

    def _chunk(self, loaded: LoadedDocument) -> tuple[list[ChunkRecord], list[str]]:
        records: list[ChunkRecord] = []
        texts: list[str] = []
        for chunk in self.chunker.chunk(loaded):
            header = _header(loaded.title, chunk.heading)
            embed_text = f"{header}\n{chunk.text}" if header else chunk.text
            records.append(
                ChunkRecord(
                    text=chunk.text,
                    search_text=search_text(embed_text),
                    position=chunk.position,
                    token_count=chunk.token_count,
                    page=chunk.page,
                    slide=chunk.slide,
                    sheet=chunk.sheet,
                    heading_path=chunk.heading,
                    ocr_confidence=chunk.ocr_confidence,
                )
            )
            texts.append(embed_text)
        return records, texts

    def _write(
        self,
        payload: tuple[list[_Prepared], np.ndarray],
        cid: int,
        groups: list[str] | None,
        summary: IngestSummary,
        report: Callable[..., None],
        requeue: dict[str, SourceItem],
    ) -> None:
        batch, vectors = payload
        writes: list[DocumentWrite] = []
        offset = 0
        for p in batch:
            n = len(p.chunks)
            vecs = vectors[offset : offset + n]
            offset += n
            if p.status in ("unchanged", "skipped", "still_failed"):
                continue
            meta = DocumentMeta(p.item.key, p.sha256, p.item.size, p.item.mtime, p.mime, p.title)
            readers = _item_groups(p.item, groups)
            if p.status == "failed":
                # A stored document keeps its last good chunks (the store writes "failed" when it has none).
                status = "failed" if p.existing_id is None else "stale"
                writes.append(DocumentWrite(cid, meta, status=status, groups=readers, error=p.error))
            elif p.status == "duplicate":
                writes.append(DocumentWrite(cid, meta, status="duplicate", groups=readers))
            else:
                writes.append(
                    DocumentWrite(cid, meta, chunks=p.chunks, vectors=vecs, groups=readers, error=p.error)
                )
        results = iter(self.store.write_documents(writes)) if writes else iter(())
        for p in batch:
            if p.status == "unchanged":
                summary.files_unchanged += 1
                if p.existing_id is not None and p.mtime_changed:
                    self.store.touch(p.existing_id, p.item.mtime)
                readers = _item_groups(p.item, groups)
                if (
                    readers is not None
                    and p.existing_id is not None
                    and p.existing_groups is not None
                    and set(readers) != p.existing_groups
                ):
                    # Same content, new --groups or new permissions at the source: only who may read it
                    # changes (no re-embedding).
                    self.store.set_document_groups(p.existing_id, readers)
                report(p, "unchanged")
                continue
            if p.status == "still_failed":
                summary.files_failed += 1
                summary.failures.append(Failure(p.item.key, p.error or "failed"))
                report(p, "failed")
                continue
            if p.status == "skipped":
                summary.files_skipped += 1
                summary.skipped.append(Failure(p.item.key, p.error or "skipped"))
                report(p, "skipped")
                continue
            result = next(results)
            summary.chunks_added += result.chunks_added
            summary.chunks_removed += result.chunks_removed
            if result.status in ("duplicate", "pending"):
                # Kept so the re-read of pending documents can use this item (a record has no file).
                requeue[p.item.key] = p.item
            if result.status == "pending":
                continue  # its original changed meanwhile: read on its own below, and reported then
            if result.status in ("failed", "stale"):
                p.error = result.error or p.error
                summary.files_failed += 1
                note = (
                    " (the last good version is kept and still searched)" if result.status == "stale" else ""
                )
                summary.failures.append(Failure(p.item.key, (p.error or "failed") + note))
                report(p, "failed")
            elif result.created:
                summary.files_new += 1
                report(p, "duplicate" if result.status == "duplicate" else "new", result.chunks_added)
            else:
                summary.files_updated += 1
                report(p, "duplicate" if result.status == "duplicate" else "updated", result.chunks_added)

    def _sync(
        self,
        summary: IngestSummary,
        cid: int,
        root_key: str,
        present: set[str],
        progress: ProgressCallback | None,
        total: int,
        keep_under: list[str],
    ) -> None:
        gone = [
            (i, p)
            for i, p in self.store.documents_under(cid, root_key)
            if p not in present and not any(is_under(p, k) for k in keep_under)
        ]
        if not gone:
            return
        with self.store.sessions() as session:
            removed_chunks = session.execute(  # an aggregate: always exactly one row, never NULL (coalesce)
                select(func.coalesce(func.sum(Document.n_chunks), 0)).where(
                    Document.id.in_([i for i, _ in gone])
                )
            ).scalar_one()
        self.store.delete_documents([i for i, _ in gone])
        summary.files_removed += len(gone)
        summary.chunks_removed += removed_chunks
        self._update_run_counts(summary)
        for n, (_, path) in enumerate(gone, start=1):
            if progress is not None:
                progress(FileEvent(path, "removed", total + n, total + len(gone)))

    # --- bookkeeping ---------------------------------------------------------------------------------
    def _known_documents(self, cid: int) -> dict[str, _Known]:
        with self.store.sessions() as session:
            rows = session.execute(
                select(
                    Document.id,
                    Document.path,
                    Document.sha256,
                    Document.size,
                    Document.mtime,
                    Document.status,
                    Document.error,
                ).where(Document.collection_id == cid)
            ).all()
            group_rows = session.execute(
                select(DocumentGroup.document_id, DocumentGroup.group)
                .join(Document, Document.id == DocumentGroup.document_id)
                .where(Document.collection_id == cid)
            ).all()
        groups: dict[int, set[str]] = {}
        for doc_id, group in group_rows:
            groups.setdefault(doc_id, set()).add(group)
        return {
            r.path: _Known(
                r.id, r.sha256, r.size, r.mtime, r.status, r.error, frozenset(groups.get(r.id, ()))
            )
            for r in rows
        }

    def _start_run(self, cid: int, source: str) -> int:
        with self.store.sessions() as session, session.begin():
            # Runs whose process died (SIGKILL, power loss) are marked so the history stays truthful.
            for run in session.scalars(select(IngestRun).where(IngestRun.status == "running")):
                if run.pid is None or not _pid_alive(run.pid):
                    run.status = "interrupted"
                    run.finished_at = datetime.now(UTC)
            run = IngestRun(collection_id=cid, source=source, status="running", pid=os.getpid())
            session.add(run)
            session.flush()
            return run.id

    def _finish_run(self, summary: IngestSummary, status: str, error: str | None) -> None:
        with self.store.sessions() as session, session.begin():
            session.execute(
                update(IngestRun)
                .where(IngestRun.id == summary.run_id)
                .values(status=status, finished_at=datetime.now(UTC), error=error, **self._counts(summary))
            )

    def _update_run_counts(self, summary: IngestSummary) -> None:
        with self.store.sessions() as session, session.begin():
            session.execute(
                update(IngestRun).where(IngestRun.id == summary.run_id).values(**self._counts(summary))
            )

    @staticmethod
    def _counts(summary: IngestSummary) -> dict[str, int]:
        keys = (
            "files_new",
            "files_updated",
            "files_unchanged",
            "files_failed",
            "files_skipped",
            "files_removed",
            "chunks_added",
            "chunks_removed",
        )
        return {k: getattr(summary, k) for k in keys}


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
