"""Keyword search: Okapi BM25 over exactly the chunks the vector index holds, kept in memory.

Why not the database's full-text index: SQLite FTS5 and PostgreSQL score every chunk that matches any
query term before the limit (a ten-term claim matches ~40% of a 100k-chunk corpus), which made keyword
search the slow half of hybrid search, and PostgreSQL's ts_rank_cd is not BM25. Here each term's postings
are numpy arrays; a query touches only its own terms' postings, and both databases rank identically.

In step with the store: the searchable chunk set is the vector index's chunk->document map (the same
generation readers of FAISS see). On every change of that map the index reads the text of chunks it has
not seen from SQL and stops counting chunks the map no longer holds (a row is live only while the map
still gives it the document it was read under). N, avgdl and document frequencies count live rows only,
so scores are exact BM25 over what is searchable. The snapshot on disk is only a cache: loading it and
catching up gives the same index as building from SQL.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Protocol

import numpy as np

from retrieval.text_analysis import search_text

log = logging.getLogger(__name__)

MAX_TERMS = 32
MAX_TERM_CHARS = 64  # longer "words" are hashes, base64 and the like: noise for BM25, and unbounded memory
K1 = 1.2
B = 0.75
SNAPSHOT_VERSION = 2
SNAPSHOT_MIN_NEW_ROWS = 20_000  # catching up on fewer rows than this is cheaper than rewriting the cache
MAX_SEGMENTS = 8
_COMPACT_MIN_DEAD = 10_000  # dead rows are dropped once there are this many and more dead than live

# Function words that match most chunks: they cost time and add nothing to BM25 (their IDF is near zero).
STOPWORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being below between
    both but by can could did do does doing down during each few for from further had has have having he her here
    hers herself him himself his how i if in into is it its itself just me more most my myself no nor not of off on
    once only or other our ours ourselves out over own same she should so some such than that the their theirs them
    themselves then there these they this those through to too under until up very was we were what when where which
    while who whom why will with would you your yours yourself yourselves""".split()  # noqa: SIM905
)
_WORD = re.compile(r"\w+", re.UNICODE)
_stemmer_lock = threading.Lock()


class _Stemmer(Protocol):
    """What sparq uses of a PyStemmer stemmer (the package ships no types)."""

    def stemWords(self, words: list[str]) -> list[str]: ...


_stemmers: dict[int, _Stemmer] = {}


def _stem_words(words: list[str]) -> list[str]:
    """English Porter stems (PyStemmer); CJK and other scripts pass through unchanged. One stemmer per
    thread: PyStemmer objects are not thread-safe."""
    key = threading.get_ident()
    stemmer = _stemmers.get(key)
    if stemmer is None:
        import Stemmer

        with _stemmer_lock:
            stemmer = _stemmers.setdefault(key, Stemmer.Stemmer("porter"))
    return stemmer.stemWords(words)


def analyze(segmented: str) -> list[str]:
    """Index terms of a chunk's `search_text` (CJK already segmented at ingest): lower-cased words,
    stopwords dropped, English words stemmed. Query and chunks go through the same function."""
    words = [w for w in _WORD.findall(segmented.lower()) if w not in STOPWORDS and len(w) <= MAX_TERM_CHARS]
    return _stem_words(words) if words else []


def keyword_terms(query: str) -> list[str]:
    """Distinct index terms of a query, in order of first appearance (at most MAX_TERMS). Query syntax of
    any search engine is just words here: nothing in user text is ever interpreted."""
    seen: dict[str, None] = {}
    for term in analyze(search_text(query)):
        seen.setdefault(term, None)
    return list(seen)[:MAX_TERMS]


@dataclass(frozen=True)
class KeywordHit:
    """A chunk that the keyword (BM25) ranking found, with its score, before fusion with the dense ranking."""

    chunk_id: int
    score: float  # BM25, higher is better


@dataclass(frozen=True)
class _Segment:
    """Postings of a block of rows, sorted by term: term_ids[i]'s postings are rows/tfs[starts[i]:starts[i+1]]."""

    term_ids: np.ndarray  # int32, sorted, unique
    starts: np.ndarray  # int64, len(term_ids) + 1
    rows: np.ndarray  # int32
    tfs: np.ndarray  # uint16

    @property
    def postings(self) -> int:
        return len(self.rows)

    def lookup(self, term_id: int) -> tuple[np.ndarray, np.ndarray] | None:
        i = int(np.searchsorted(self.term_ids, term_id))
        if i >= len(self.term_ids) or self.term_ids[i] != term_id:
            return None
        a, b = int(self.starts[i]), int(self.starts[i + 1])
        return self.rows[a:b], self.tfs[a:b]


def _segment(terms: np.ndarray, rows: np.ndarray, tfs: np.ndarray) -> _Segment:
    """A segment from (term, row, tf) triples already sorted by term."""
    if len(terms) == 0:
        empty = np.empty(0, dtype=np.int32)
        return _Segment(empty, np.zeros(1, dtype=np.int64), empty, np.empty(0, dtype=np.uint16))
    boundaries = np.flatnonzero(np.diff(terms)) + 1
    starts = np.concatenate(([0], boundaries, [len(terms)])).astype(np.int64)
    return _Segment(terms[starts[:-1]].astype(np.int32), starts, rows.astype(np.int32), tfs.astype(np.uint16))


def _merge(segments: Iterable[_Segment], row_map: np.ndarray | None = None) -> _Segment:
    """One segment from many; with `row_map` (old row -> new row, -1 = drop) rows are renumbered."""
    terms, rows, tfs = [], [], []
    for seg in segments:
        counts = np.diff(seg.starts)
        terms.append(np.repeat(seg.term_ids, counts))
        rows.append(seg.rows)
        tfs.append(seg.tfs)
    t = np.concatenate(terms) if terms else np.empty(0, dtype=np.int32)
    r = np.concatenate(rows) if rows else np.empty(0, dtype=np.int32)
    f = np.concatenate(tfs) if tfs else np.empty(0, dtype=np.uint16)
    if row_map is not None:
        r = row_map[r]
        keep = r >= 0
        t, r, f = t[keep], r[keep], f[keep]
    order = np.lexsort((r, t))
    return _segment(t[order], r[order], f[order])


@dataclass(frozen=True)
class _State:
    """An immutable view searches read without locks; a sync builds the next one and swaps it in."""

    segments: tuple[_Segment, ...]
    chunk_ids: np.ndarray  # row -> chunk id (int64)
    row_docs: np.ndarray  # row -> the document id the text was read under (int64)
    lengths: np.ndarray  # row -> number of index terms (float32)
    live: np.ndarray  # row -> still in the vector index under the same document (bool)
    n_live: int
    avgdl: float

    @property
    def rows(self) -> int:
        return len(self.chunk_ids)

    @cached_property
    def _norms(self) -> dict[tuple[float, float], np.ndarray]:
        return {}

    def norm(self, k1: float, b: float) -> np.ndarray:
        """Per row, BM25's length normalisation k1 * (1 - b + b * dl / avgdl): computed once per state,
        so a query only gathers it for its postings."""
        found = self._norms.get((k1, b))
        if found is None:
            found = (k1 * (1.0 - b + b * self.lengths / max(self.avgdl, 1e-9))).astype(np.float32)
            self._norms[(k1, b)] = found
        return found


def _empty_state() -> _State:
    i64 = np.empty(0, dtype=np.int64)
    return _State((), i64, i64, np.empty(0, dtype=np.float32), np.empty(0, dtype=bool), 0, 0.0)


TextFetcher = Callable[[np.ndarray], Iterable[tuple[int, str]]]
"""chunk ids -> (chunk id, search_text) rows, from SQL (ids SQL no longer has are simply left out)."""


class KeywordIndex:
    """BM25 over the chunks of a vector index's chunk->document map. Thread-safe: searches read an
    immutable state; `sync` (serialised by a lock) builds the next state."""

    def __init__(self, snapshot: Path | None = None, *, k1: float = K1, b: float = B) -> None:
        if k1 < 0 or not 0 <= b <= 1:
            raise ValueError("BM25 needs k1 >= 0 and 0 <= b <= 1")
        self.snapshot = Path(snapshot) if snapshot is not None else None
        self.k1, self.b = k1, b
        self._vocab: dict[str, int] = {}
        self._state = _empty_state()
        self._row_of = np.full(0, -1, dtype=np.int64)  # chunk id -> its newest row
        self._lock = threading.Lock()
        self._synced_to: object = None
        self._snapshot_tried = False

    # --- keeping in step -------------------------------------------------------------------------------
    @property
    def rows(self) -> int:
        """Rows the index holds, dead ones (replaced or removed chunks) included until a compaction."""
        return self._state.rows

    @property
    def live_rows(self) -> int:
        """Rows of chunks still present: the corpus size the BM25 statistics use."""
        return self._state.n_live

    @property
    def nbytes(self) -> int:
        """Memory held by the postings and per-row arrays (the vocabulary dict not counted)."""
        state = self._state
        arrays = [state.chunk_ids, state.row_docs, state.lengths, state.live, self._row_of]
        arrays += [a for seg in state.segments for a in (seg.term_ids, seg.starts, seg.rows, seg.tfs)]
        return int(sum(a.nbytes for a in arrays))

    def sync(self, doc_map: np.ndarray, fetch: TextFetcher, version: object = None) -> int:
        """Follow the vector index's chunk->document map (chunk id -> document id, < 0 = absent). Returns
        the number of rows read from SQL. `version` identifies the map: an unchanged version is a no-op."""
        if version is not None and version == self._synced_to:
            return 0
        with self._lock:
            if version is not None and version == self._synced_to:
                return 0
            if not self._snapshot_tried:
                self._snapshot_tried = True
                self._load_snapshot()
            state = self._state
            live_ids = np.flatnonzero(doc_map >= 0).astype(np.int64)
            row_of = self._row_of
            known = np.full(len(live_ids), -1, dtype=np.int64)
            in_range = live_ids < len(row_of)
            known[in_range] = row_of[live_ids[in_range]]
            has_row = known >= 0
            same_doc = np.zeros(len(live_ids), dtype=bool)
            same_doc[has_row] = state.row_docs[known[has_row]] == doc_map[live_ids[has_row]]
            fresh = live_ids[~same_doc]
            added = self._add_rows(fresh, doc_map, fetch) if len(fresh) else 0
            self._refresh_live(doc_map)
            self._synced_to = version
            if added >= SNAPSHOT_MIN_NEW_ROWS:
                self.save_snapshot()
            return added

    def _add_rows(self, chunk_ids: np.ndarray, doc_map: np.ndarray, fetch: TextFetcher) -> int:
        """Tokenise the given chunks into one new segment (term ids, then one vectorised sort)."""
        state = self._state
        vocab = self._vocab
        base = state.rows
        ids: list[int] = []
        docs: list[int] = []
        lengths: list[int] = []
        term_ids: list[np.ndarray] = []
        for start in range(0, len(chunk_ids), 5_000):
            for chunk_id, text in fetch(chunk_ids[start : start + 5_000]):
                terms = analyze(text or "")
                tids = np.fromiter(
                    (vocab.setdefault(t, len(vocab)) for t in terms), dtype=np.int64, count=len(terms)
                )
                ids.append(int(chunk_id))
                docs.append(
                    int(doc_map[chunk_id])
                )  # the map's view, so the row is live exactly while it holds
                lengths.append(len(terms))
                term_ids.append(tids)
        if not ids:
            return 0
        rows_local = np.repeat(np.arange(len(ids), dtype=np.int64), [len(t) for t in term_ids])
        flat_terms = np.concatenate(term_ids) if term_ids else np.empty(0, dtype=np.int64)
        width = len(ids) + 1
        keys, tfs = np.unique(flat_terms * width + rows_local, return_counts=True)  # sorted by term, then row
        segment = _segment(keys // width, (keys % width) + base, np.minimum(tfs, 65_535))
        chunk_arr = np.array(ids, dtype=np.int64)
        segments = (*state.segments, segment)
        if len(segments) > MAX_SEGMENTS:
            segments = (_merge(segments),)
        self._state = _State(
            segments,
            np.concatenate([state.chunk_ids, chunk_arr]),
            np.concatenate([state.row_docs, np.array(docs, dtype=np.int64)]),
            np.concatenate([state.lengths, np.array(lengths, dtype=np.float32)]),
            np.concatenate([state.live, np.ones(len(ids), dtype=bool)]),
            state.n_live,
            state.avgdl,
        )
        top = int(chunk_arr.max())
        if top >= len(self._row_of):
            grown = np.full(max(top + 1, 2 * len(self._row_of)), -1, dtype=np.int64)
            grown[: len(self._row_of)] = self._row_of
            self._row_of = grown
        self._row_of[chunk_arr] = np.arange(base, base + len(ids), dtype=np.int64)
        return len(ids)

    def _refresh_live(self, doc_map: np.ndarray) -> None:
        """Mark which rows are searchable, and compact when most rows are dead."""
        state = self._state
        ids = state.chunk_ids
        in_map = ids < len(doc_map)
        live = np.zeros(len(ids), dtype=bool)
        live[in_map] = doc_map[ids[in_map]] == state.row_docs[in_map]
        # A chunk re-read under a new document leaves its old row behind: only the newest row counts.
        newest = np.zeros(len(ids), dtype=bool)
        if len(ids):
            newest[self._row_of[ids]] = True
        live &= newest
        n_live = int(np.count_nonzero(live))
        dead = len(ids) - n_live
        if dead >= _COMPACT_MIN_DEAD and dead > n_live:
            self._compact(live)
            return
        avgdl = float(state.lengths[live].mean()) if n_live else 0.0
        self._state = replace(state, live=live, n_live=n_live, avgdl=avgdl)

    def _compact(self, live: np.ndarray) -> None:
        state = self._state
        row_map = np.full(len(live), -1, dtype=np.int64)
        row_map[live] = np.arange(int(np.count_nonzero(live)))
        segment = _merge(state.segments, row_map)
        ids = state.chunk_ids[live]
        self._row_of[:] = -1
        self._row_of[ids] = np.arange(len(ids))
        lengths = state.lengths[live]
        self._state = _State(
            (segment,),
            ids,
            state.row_docs[live],
            lengths,
            np.ones(len(ids), dtype=bool),
            len(ids),
            float(lengths.mean()) if len(ids) else 0.0,
        )

    # --- the snapshot cache ----------------------------------------------------------------------------
    def save_snapshot(self) -> None:
        """Write the cache atomically. Callers hold sync's lock (or no sync can run, as in a benchmark)."""
        if self.snapshot is None:
            return
        state = self._state
        segment = _merge(state.segments)
        self._state = replace(state, segments=(segment,))
        tmp = None
        try:
            self.snapshot.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.snapshot.parent, prefix=".keyword-", suffix=".npz")
            with os.fdopen(fd, "wb") as fh:
                np.savez(
                    fh,
                    version=np.array([SNAPSHOT_VERSION]),
                    vocab=np.frombuffer("\n".join(self._vocab).encode("utf-8"), dtype=np.uint8),  # id order
                    chunk_ids=state.chunk_ids,
                    row_docs=state.row_docs,
                    lengths=state.lengths,
                    term_ids=segment.term_ids,
                    starts=segment.starts,
                    rows=segment.rows,
                    tfs=segment.tfs,
                )
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.snapshot)
        except OSError as exc:  # a cache: searching goes on, the next process rebuilds from SQL
            log.warning("could not write the keyword index cache %s: %s", self.snapshot, exc)
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)

    def _load_snapshot(self) -> None:
        if self.snapshot is None or not self.snapshot.exists():
            return
        try:
            with np.load(self.snapshot, allow_pickle=False) as raw:
                if int(raw["version"][0]) != SNAPSHOT_VERSION:
                    return
                blob = raw["vocab"].tobytes().decode("utf-8")
                vocab = blob.split("\n") if blob else []
                segment = _Segment(raw["term_ids"], raw["starts"], raw["rows"], raw["tfs"])
                ids, docs, lengths = raw["chunk_ids"], raw["row_docs"], raw["lengths"]
        except (OSError, ValueError, KeyError) as exc:
            log.warning(
                "ignoring unreadable keyword index cache %s (rebuilding from the database): %s",
                self.snapshot,
                exc,
            )
            return
        self._vocab = {t: i for i, t in enumerate(vocab)}
        self._row_of = np.full(int(ids.max()) + 1 if len(ids) else 0, -1, dtype=np.int64)
        self._row_of[ids] = np.arange(len(ids))
        self._state = _State(
            (segment,),
            ids,
            docs,
            lengths,
            np.ones(len(ids), dtype=bool),
            len(ids),
            float(lengths.mean()) if len(ids) else 0.0,
        )

    # --- searching ------------------------------------------------------------------------------------
    def search(self, query: str, k: int, allowed: np.ndarray | None = None) -> list[KeywordHit]:
        """The k best live chunks by BM25. `allowed` is a chunk-id-indexed mask (access control and
        filters, None = every live chunk); unreadable chunks never take a place in the k."""
        if k <= 0:
            return []
        terms = [t for t in keyword_terms(query) if t in self._vocab]
        state = self._state
        if not terms or state.n_live == 0:
            return []
        rows_parts, weight_parts = [], []
        norm = state.norm(self.k1, self.b)
        all_live = state.n_live == state.rows
        for term in terms:
            tid = self._vocab[term]
            found = [p for p in (seg.lookup(tid) for seg in state.segments) if p is not None]
            if not found:
                continue
            rows = np.concatenate([r for r, _ in found]) if len(found) > 1 else found[0][0]
            tfs = np.concatenate([f for _, f in found]) if len(found) > 1 else found[0][1]
            if not all_live:
                live = state.live[rows]
                rows, tfs = rows[live], tfs[live]
            df = len(rows)
            if df == 0:
                continue
            tf = tfs.astype(np.float32)
            idf = np.float32(np.log1p((state.n_live - df + 0.5) / (df + 0.5)) * (self.k1 + 1.0))
            rows_parts.append(rows)
            weight_parts.append(idf * tf / (tf + norm[rows]))
        if not rows_parts:
            return []
        rows = np.concatenate(rows_parts)
        weights = np.concatenate(weight_parts)
        # Accumulate over the whole row space: linear in postings + rows, no sort (np.unique sorted ~1M
        # postings per query at 1M chunks). Every weight is > 0, so a matched row has a score > 0.
        totals = np.bincount(rows, weights=weights, minlength=state.rows)
        candidates = np.flatnonzero(totals)
        scores = totals[candidates]
        chunk_ids = state.chunk_ids[candidates]
        if allowed is not None:
            ok = np.zeros(len(chunk_ids), dtype=bool)
            inside = chunk_ids < len(allowed)
            ok[inside] = allowed[chunk_ids[inside]]
            chunk_ids, scores = chunk_ids[ok], scores[ok]
        top = np.argpartition(-scores, k - 1)[:k] if len(scores) > k else np.arange(len(scores))
        top = top[np.lexsort((chunk_ids[top], -scores[top]))]  # best first; ties by chunk id, deterministic
        return [KeywordHit(int(chunk_ids[i]), float(scores[i])) for i in top]
