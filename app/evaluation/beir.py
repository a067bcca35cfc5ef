"""Reading a BEIR-format folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv) into plain Python objects.

Kept separate from the runner so the CMRC builder and tests can produce and check the same format.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path


class BeirFormatError(ValueError):
    """The folder is not a usable BEIR set; the message names the file and what is wrong."""


@dataclass(frozen=True)
class CorpusDoc:
    """One corpus document of a BEIR set."""

    doc_id: str
    text: str
    title: str | None = None


@dataclass
class BeirSet:
    """A BEIR folder read for evaluation: queries and qrels kept, the corpus streamed from disk when asked."""

    root: Path
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    split: str = "test"
    corpus_size: int = 0
    notes: list[str] = field(default_factory=list)

    def corpus(self) -> Iterator[CorpusDoc]:
        """Streams corpus.jsonl so that a large corpus never sits in memory twice."""
        yield from read_corpus(self.root / "corpus.jsonl")


def read_corpus(path: Path) -> Iterator[CorpusDoc]:
    """The corpus one document at a time, so a large corpus never sits in memory whole."""
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                yield CorpusDoc(str(row["_id"]), row.get("text") or "", row.get("title") or None)
            except (ValueError, KeyError) as exc:
                raise BeirFormatError(f"{path}:{n}: not a BEIR corpus line ({exc})") from exc


def read_queries(path: Path) -> dict[str, str]:
    """Query id -> text from queries.jsonl; a malformed line names the file and line."""
    queries: dict[str, str] = {}
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                queries[str(row["_id"])] = row["text"]
            except (ValueError, KeyError) as exc:
                raise BeirFormatError(f"{path}:{n}: not a BEIR query line ({exc})") from exc
    return queries


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    """Query id -> {document id: grade} from a qrels TSV (header optional)."""
    qrels: dict[str, dict[str, int]] = {}
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh, delimiter="\t")
        for n, row in enumerate(reader, start=1):
            if not row or (n == 1 and row[0] == "query-id"):
                continue
            if len(row) < 3:
                raise BeirFormatError(f"{path}:{n}: expected query-id, corpus-id, score")
            qrels.setdefault(row[0], {})[row[1]] = int(row[2])
    return qrels


def load_beir(root: Path, *, split: str = "test") -> BeirSet:
    """A BEIR folder with only the queries that have a relevant document, so each query can be scored."""
    root = Path(root)
    for name in ("corpus.jsonl", "queries.jsonl", f"qrels/{split}.tsv"):
        if not (root / name).is_file():
            raise BeirFormatError(f"{root} is not a BEIR folder: {name} is missing")
    queries = read_queries(root / "queries.jsonl")
    qrels = read_qrels(root / "qrels" / f"{split}.tsv")
    missing = [q for q in qrels if q not in queries]
    if missing:
        raise BeirFormatError(f"{len(missing)} qrels queries are not in queries.jsonl (e.g. {missing[0]!r})")
    relevant = {q: {d: s for d, s in docs.items() if s > 0} for q, docs in qrels.items()}
    relevant = {q: docs for q, docs in relevant.items() if docs}
    with open(root / "corpus.jsonl", encoding="utf-8") as fh:
        size = sum(1 for line in fh if line.strip())
    return BeirSet(root, {q: queries[q] for q in relevant}, relevant, split, size)
