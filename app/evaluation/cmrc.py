"""CMRC 2018 (Chinese machine reading comprehension) turned into a BEIR-format retrieval set.

Each paragraph (its `context`, titled with its article's title) is a corpus document; each question is
a query whose one relevant document is the paragraph it was asked about. Built, not downloaded, so the
derivation is reproducible from the official dev file.
"""

from __future__ import annotations

import json
from pathlib import Path


def build_cmrc_beir(source: Path, out_dir: Path) -> dict[str, int]:
    """Write corpus.jsonl, queries.jsonl and qrels/test.tsv under out_dir; returns the counts."""
    with open(source, encoding="utf-8") as fh:
        raw = json.load(fh)
    articles = raw["data"] if isinstance(raw, dict) else raw
    out_dir = Path(out_dir)
    (out_dir / "qrels").mkdir(parents=True, exist_ok=True)
    corpus: list[dict] = []
    queries: list[dict] = []
    qrels: list[tuple[str, str]] = []
    seen_queries: set[str] = set()
    for article in articles:
        title = article.get("title") or None
        for n, paragraph in enumerate(article["paragraphs"]):
            doc_id = str(paragraph.get("id") or f"{article.get('id', len(corpus))}_{n}")
            corpus.append({"_id": doc_id, "title": title or "", "text": paragraph["context"]})
            for qa in paragraph["qas"]:
                qid = str(qa["id"])
                if qid in seen_queries:
                    raise ValueError(f"{source}: question id {qid} appears twice")
                seen_queries.add(qid)
                queries.append({"_id": qid, "text": qa["question"]})
                qrels.append((qid, doc_id))
    with open(out_dir / "corpus.jsonl", "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(d, ensure_ascii=False) + "\n" for d in corpus)
    with open(out_dir / "queries.jsonl", "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(q, ensure_ascii=False) + "\n" for q in queries)
    with open(out_dir / "qrels" / "test.tsv", "w", encoding="utf-8") as fh:
        fh.write("query-id\tcorpus-id\tscore\n")
        fh.writelines(f"{q}\t{d}\t1\n" for q, d in qrels)
    return {"documents": len(corpus), "queries": len(queries), "qrels": len(qrels)}
