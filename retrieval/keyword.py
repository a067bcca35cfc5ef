"""Keyword (BM25-style) search over the chunks, inside the database so it changes with every write.

SQLite: the FTS5 table `chunks_fts` (porter stemming, unicode61) ranked with bm25(). PostgreSQL: the
generated `search_tsv` column ranked with ts_rank_cd. Both take the access-control and filter condition
in the same statement, so an unreadable chunk is never even ranked.

User text is never handed to a query language: it is reduced to word terms (CJK segmented the same way
as at ingest), each term is quoted (FTS5) or bound as a parameter (PostgreSQL), and the terms are ORed.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine, Select, column, func, literal_column, select, table, text
from sqlalchemy.orm import Session

from retrieval.schema import Chunk
from retrieval.text_analysis import query_terms

MAX_TERMS = 32
_ENGLISH = literal_column("'english'::regconfig")

# Function words that match most chunks: they cost time and add nothing to BM25 (their IDF is near zero).
STOPWORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being below between
    both but by can could did do does doing down during each few for from further had has have having he her here
    hers herself him himself his how i if in into is it its itself just me more most my myself no nor not of off on
    once only or other our ours ourselves out over own same she should so some such than that the their theirs them
    themselves then there these they this those through to too under until up very was we were what when where which
    while who whom why will with would you your yours yourself yourselves""".split()  # noqa: SIM905
)


def keyword_terms(query: str) -> list[str]:
    """Distinct query terms without stopwords (all terms, if the query is only stopwords)."""
    terms = query_terms(query)
    kept = [t for t in terms if t not in STOPWORDS]
    return (kept or terms)[:MAX_TERMS]


def fts5_match_expression(terms: list[str]) -> str:
    """An FTS5 MATCH string in which every term is a quoted string: no operator, column filter or
    prefix syntax can come from user text."""
    return " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)


@dataclass(frozen=True)
class KeywordHit:
    chunk_id: int
    score: float  # higher is better


class KeywordIndex:
    """Ranks chunk ids for a query; `visible` is a SELECT of readable document ids (None: no restriction)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        if self.dialect not in ("sqlite", "postgresql"):
            raise ValueError(f"keyword search supports SQLite and PostgreSQL, not {self.dialect}")

    def search(self, session: Session, query: str, k: int, visible: Select | None = None) -> list[KeywordHit]:
        terms = keyword_terms(query)
        if not terms or k <= 0:
            return []
        stmt = self._sqlite(terms, joined=visible is not None) if self.dialect == "sqlite" else self._postgres(terms)
        if visible is not None:
            stmt = stmt.where(Chunk.document_id.in_(visible))
        rows = session.execute(stmt.limit(k)).all()
        if self.dialect == "sqlite":
            # bm25() is "lower is better" (a negated BM25); sparq scores are all higher-is-better.
            return [KeywordHit(int(r[0]), -float(r[1])) for r in rows]
        return [KeywordHit(int(r[0]), float(r[1])) for r in rows]

    @staticmethod
    def _sqlite(terms: list[str], *, joined: bool) -> Select:
        """FTS5 ranking; joined to `chunks` only when an ACL/filter condition needs the document id
        (the per-match join costs as much as the bm25() scoring itself)."""
        fts = table("chunks_fts", column("rowid"))
        score = literal_column("bm25(chunks_fts)").label("score")
        match = text("chunks_fts MATCH :match").bindparams(match=fts5_match_expression(terms))
        source = fts.join(Chunk.__table__, Chunk.id == fts.c.rowid) if joined else fts
        return select(fts.c.rowid, score).select_from(source).where(match).order_by(literal_column("score"))

    @staticmethod
    def _postgres(terms: list[str]) -> Select:
        query = func.plainto_tsquery(_ENGLISH, terms[0])
        for term in terms[1:]:
            query = query.op("||")(func.plainto_tsquery(_ENGLISH, term))
        tsv = literal_column("chunks.search_tsv")
        score = func.ts_rank_cd(tsv, query).label("score")
        return select(Chunk.id, score).where(tsv.op("@@")(query)).order_by(score.desc())
