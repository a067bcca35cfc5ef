"""Assistant.search and `sparq search` / `sparq eval retrieval` end to end, on real SciFact and CMRC data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from app.assistant import Assistant, SparqError
from app.cli import cli
from app.config import Settings
from app.evaluation.beir import load_beir, read_corpus, read_qrels, read_queries
from app.evaluation.cmrc import build_cmrc_beir
from app.evaluation.metrics import mrr_at_k, ndcg_at_k, recall_at_k
from ingestion.sources import TextRecord
from retrieval.filters import SearchFilters

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
SCIFACT = DATA / "beir_scifact"
CMRC = DATA / "cmrc2018_dev" / "cmrc2018_dev.json"
EVAL_KEYS = {
    "ndcg_at_10",
    "recall_at_10",
    "recall_at_100",
    "mrr_at_10",
    "latency_ms_p50",
    "latency_ms_p95",
    "mode",
}

needs_scifact = pytest.mark.skipif(not SCIFACT.is_dir(), reason="SciFact not present in ../shared/data")


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SPARQ_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("SPARQ_DATABASE_URL", raising=False)
    return tmp_path / "data"


@pytest.fixture
def mini_beir(tmp_path: Path) -> Path:
    """A 40-document slice of SciFact holding the relevant documents of its first 8 test queries."""
    qrels = read_qrels(SCIFACT / "qrels" / "test.tsv")
    queries = read_queries(SCIFACT / "queries.jsonl")
    chosen = dict(list(qrels.items())[:8])
    wanted = {d for docs in chosen.values() for d in docs}
    docs = []
    for doc in read_corpus(SCIFACT / "corpus.jsonl"):
        if doc.doc_id in wanted or len(docs) < 40 - len(wanted):
            docs.append(doc)
    out = tmp_path / "mini"
    (out / "qrels").mkdir(parents=True)
    (out / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": d.doc_id, "title": d.title or "", "text": d.text}) + "\n" for d in docs)
    )
    (out / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": q, "text": queries[q]}) + "\n" for q in chosen)
    )
    (out / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t1\n" for q, ds in chosen.items() for d in ds)
    )
    return out


def test_metrics_match_hand_computed_values():
    rel = {"a": 1, "b": 1}
    assert ndcg_at_k(["a", "x", "b"], rel, 10) == pytest.approx((1 + 1 / 2) / (1 + 1 / 1.5849625))
    assert recall_at_k(["x", "a"], rel, 1) == 0 and recall_at_k(["x", "a"], rel, 2) == 0.5
    assert mrr_at_k(["x", "y", "b"], rel, 10) == pytest.approx(1 / 3)


@needs_scifact
def test_assistant_search_enforces_users_and_filters(data_dir: Path):
    corpus = list(read_corpus(SCIFACT / "corpus.jsonl"))[:12]
    with Assistant(Settings(data_dir=data_dir)) as a:
        a.ingest_records(
            [TextRecord(d.doc_id, d.text, d.title) for d in corpus[:6]], collection="bio", groups=["bio"]
        )
        a.ingest_records(
            [TextRecord(d.doc_id, d.text, d.title) for d in corpus[6:]], collection="med", groups=["med"]
        )
        a.users.add("alice", groups=["bio"])
        a.users.add("root", role="admin")
        q = corpus[7].title or corpus[7].text[:80]
        as_admin = a.search(q, k=3)
        assert as_admin[0].path == corpus[7].doc_id and as_admin[0].collection == "med"
        assert all(h.collection == "bio" for h in a.search(q, user="alice", k=5))
        assert a.search(q, user="root", k=1)[0].path == corpus[7].doc_id
        only_bio = a.search(q, k=5, filters=SearchFilters(collections=("bio",)))
        assert only_bio and {h.collection for h in only_bio} == {"bio"}
        with pytest.raises(SparqError, match="unknown user"):
            a.search(q, user="mallory")
        with pytest.raises(SparqError):
            a.search(q, mode="semantic")


@needs_scifact
def test_cli_search_json_and_text(data_dir: Path):
    corpus = list(read_corpus(SCIFACT / "corpus.jsonl"))[:5]
    with Assistant(Settings(data_dir=data_dir)) as a:
        a.ingest_records(
            [TextRecord(d.doc_id, d.text, d.title) for d in corpus], collection="sci", groups=["s"]
        )
    runner = CliRunner()
    res = runner.invoke(cli, ["search", corpus[2].title, "--k", "2", "--json"])
    assert res.exit_code == 0, res.output
    hits = json.loads(res.stdout)
    assert hits[0]["path"] == corpus[2].doc_id
    assert {"score_dense", "score_keyword", "score_fused", "text", "collection", "page"} <= set(hits[0])
    res = runner.invoke(cli, ["search", corpus[2].title, "--collection", "sci", "-k", "1"])
    assert res.exit_code == 0 and corpus[2].doc_id in res.output and "fused=" in res.output


@needs_scifact
def test_cli_eval_retrieval_prints_exactly_the_documented_keys(mini_beir: Path, tmp_path: Path):
    store = tmp_path / "store"
    runner = CliRunner()
    reports = {}
    for mode in ("hybrid", "keyword", "dense"):
        res = runner.invoke(
            cli,
            ["eval", "retrieval", "--beir", str(mini_beir), "--mode", mode, "--json", "--store", str(store)],
        )
        assert res.exit_code == 0, res.output
        reports[mode] = json.loads(res.stdout)
        assert set(reports[mode]) == EVAL_KEYS and reports[mode]["mode"] == mode
    # 40 documents, every relevant one among them: recall@100 is complete and rankings are good.
    assert reports["hybrid"]["recall_at_100"] == 1.0
    assert reports["hybrid"]["ndcg_at_10"] > 0.6
    limited = runner.invoke(
        cli,
        [
            "eval",
            "retrieval",
            "--beir",
            str(mini_beir),
            "--limit-queries",
            "2",
            "--json",
            "--store",
            str(store),
        ],
    )
    assert limited.exit_code == 0 and set(json.loads(limited.stdout)) == EVAL_KEYS


@pytest.mark.skipif(not CMRC.is_file(), reason="CMRC 2018 dev not present in ../shared/data")
def test_cmrc_builder_writes_a_loadable_beir_set(tmp_path: Path):
    counts = build_cmrc_beir(CMRC, tmp_path / "cmrc")
    assert counts == {"documents": 848, "queries": 3219, "qrels": 3219}
    data = load_beir(tmp_path / "cmrc")
    assert data.corpus_size == 848 and len(data.queries) == 3219
    first = next(data.corpus())
    assert first.doc_id == "DEV_0" and first.title == "战国无双3"
    assert data.qrels["DEV_0_QUERY_0"] == {"DEV_0": 1}
