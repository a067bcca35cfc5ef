"""Post-generation attribution: give each answer sentence that carries no citation the passage that bears it
out, so an answer names its sources even when a small model forgets to cite.

Runs after `prompting.check_citations` (which keeps only the model's citations that their passage supports).
A sentence is attributed only when a passage contains its words: at least `ATTRIBUTION_MIN_SUPPORT` of its
content terms (words cut to a stem, numbers, CJK bigrams: the same terms `prompting.support` compares) and
every number it states (number words read as digits). A short, elliptical sentence ("Denver Broncos.") must be
contained whole, by a passage that also holds a fair share of what the question asks. A sentence no passage
supports gets no citation; nothing is guessed.
When several passages support a sentence about equally, terms that few passages share weigh more, then
embedding similarity (when the caller passes an embedder) and the question's terms break the tie.

The model package knows nothing of the store: the caller passes the passages' texts and, optionally,
`embed(texts) -> array` (the store's embedding model, so sentences and passages are compared in the space
retrieval ranks them in).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from model.prompting import _CITATION, _CJK_RUN, MIN_SUPPORT, _script, _terms, is_supported, sentences

# The share of a sentence's content terms a passage must contain to be cited for it. Higher than the bar a
# model's own citation must clear (MIN_SUPPORT): there the model chose the passage, here sparq does.
ATTRIBUTION_MIN_SUPPORT = 0.5
# Sentences with fewer content terms than this are elliptical answers ("1998.", "Santa Clara, California"):
# the passage must contain all of them, and (when the question is given) QUESTION_MIN_SUPPORT of the question.
SHORT_CLAIM_TERMS = 3
# The share of the question's terms a passage must contain to be cited for a short claim.
QUESTION_MIN_SUPPORT = 0.3
# Candidates whose lexical scores are this close are ambiguous: embeddings (when given) decide.
AMBIGUITY_MARGIN = 0.15
EMBEDDING_WEIGHT = 0.5
QUESTION_WEIGHT = 0.1

Embed = Callable[[list[str]], np.ndarray]

# A full stop that ends an abbreviation or an initial ("U.S.", "Dr.", "e.g."), not a sentence.
_ABBREVIATION_END = re.compile(
    r"(?:^|[\s(.])(?:[A-Za-z]|Mr|Mrs|Ms|Dr|St|Jr|Sr|No|vs|etc|Inc|Ltd|Co|Mt|Ft|Gen|Col|Lt|Sgt|Jan|Feb|Mar|Apr|"
    r"Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec)\.$"
)
_SENTENCE_PUNCT = ".!?。！？"
# "According to passage 3", "在第3段落中": the model naming a passage in words, not a claim about the world.
_PASSAGE_MENTION = re.compile(
    r"\b(?:passages?|paragraphs?)\s+\d+(?:\s*(?:,|and|&)\s*\d+)*|第\s*\d+\s*(?:个)?段(?:落)?", re.IGNORECASE
)
# Words that ask rather than tell: left out of the question's terms.
_QUESTION_WORDS = re.compile(
    r"什么|哪一?[个种位年里些国家天座条所]?|多少|几[个次年号座趟代位种岁名天届]?|谁|怎么样?|如何|为什么|是否|吗|呢"
)
_QUESTION_ONLY = frozenset(
    {
        "many",
        "much",
        "long",
        "often",
        "far",
        "old",
        "calle",
        "named",
        "name",
        "kind",
        "type",
        "sort",
        "year",
        "numbe",
    }
)
# Number words read as the numbers they name, so "five solo tackles" supports "5 solo tackles" ("one" is left
# alone: it is a pronoun as often as a number).
_UNITS = {
    w: i
    for i, w in enumerate(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])
}
_TEENS = {
    w: 10 + i
    for i, w in enumerate(
        [
            "ten",
            "eleven",
            "twelve",
            "thirteen",
            "fourteen",
            "fifteen",
            "sixteen",
            "seventeen",
            "eighteen",
            "nineteen",
        ]
    )
}
_TENS = {
    w: 10 * (i + 2)
    for i, w in enumerate(["twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"])
}
_NUMBER_WORD = re.compile(
    rf"\b(?:({'|'.join(_TENS)})(?:[- ]({'|'.join(w for w in _UNITS if w != 'zero')}))?"
    rf"|({'|'.join(w for w in [*_UNITS, *_TEENS] if w != 'one')}))\b",
    re.IGNORECASE,
)


def _number_value(m: re.Match[str]) -> str:
    if m.group(3):
        word = m.group(3).lower()
        return str(_UNITS.get(word, _TEENS.get(word)))
    return str(_TENS[m.group(1).lower()] + (_UNITS[m.group(2).lower()] if m.group(2) else 0))


def content_terms(text: str) -> set[str]:
    """`prompting._terms` with number words as digits (what attribution compares)."""
    return _terms(_NUMBER_WORD.sub(_number_value, text))


def _passage_terms(text: str) -> set[str]:
    """A passage's terms, plus each CJK character alone, so a one-character claim term ("号") can match."""
    return content_terms(text) | {ch for run in _CJK_RUN.findall(text) for ch in run}


@dataclass(frozen=True)
class SentenceAttribution:
    """One answer sentence: the citations it already carried, and what attribution gave it."""

    sentence: str  # as the answer had it, before any citation was added
    cited: tuple[int, ...]  # numbers the sentence carried (the model's, after the check)
    ref: int | None  # the passage attribution cited for it; None when cited already or nothing supports it
    support: float | None  # the lexical support of `ref`, or of the best passage when none was chosen
    claims: bool = True  # False for a sentence with no content words (nothing to attribute)


@dataclass(frozen=True)
class Attribution:
    """An answer with citations added where a passage bears a sentence out, and what stayed unsupported."""

    text: str  # the answer with "[n]" added to each attributed sentence
    attributed: list[int]  # passage numbers attribution cited, in order of first appearance
    sentences: list[SentenceAttribution] = field(default_factory=list)

    @property
    def unsupported(self) -> list[str]:
        """Sentences that claim something, carry no citation, and that no passage bears out."""
        return [s.sentence.strip() for s in self.sentences if s.claims and not s.cited and s.ref is None]


def _units(answer: str) -> list[str]:
    """The answer's sentences (`prompting.sentences`), with a piece that ends in an abbreviation or is
    followed by a lower-case word joined to the next, so "the U.S. Army" is one sentence."""
    units: list[str] = []
    for piece in sentences(answer):
        if units and _continues(units[-1], piece):
            units[-1] += piece
        else:
            units.append(piece)
    return units


def _continues(previous: str, piece: str) -> bool:
    if _CITATION.search(previous) or previous.endswith("\n"):
        return False
    head = piece.lstrip(" \t")
    return bool(_ABBREVIATION_END.search(previous.rstrip())) or bool(head[:1].islower())


def _numbers(terms: set[str]) -> set[str]:
    return {t for t in terms if t.isdigit()}


def _comparable(claim: set[str], passage: set[str]) -> set[str]:
    """The claim's terms in a script the passage uses (numbers always), as `prompting.support` compares."""
    scripts = {_script(t) for t in passage} | {"number"}
    return {t for t in claim if _script(t) in scripts}


def attribution_support(claim: set[str], passage: set[str]) -> float | None:
    """How far the passage bears out a claim (its content terms): the share of them it contains; 0 when it
    lacks a number the claim states, and for a short claim 0 unless it contains all of them. None when
    nothing is comparable."""
    comparable = _comparable(claim, passage)
    if not comparable:
        return None
    if not _numbers(comparable) <= passage:
        return 0.0
    share = len(comparable & passage) / len(comparable)
    if len(comparable) < SHORT_CLAIM_TERMS and share < 1.0:
        return 0.0
    return share


def question_terms(question: str) -> set[str]:
    """The question's content terms without its question words ("how many", "什么", "哪个"), which the
    passage that answers it does not contain."""
    return {t for t in content_terms(_QUESTION_WORDS.sub(" ", question)) if t not in _QUESTION_ONLY}


def _cite(sentence: str, ref: int) -> str:
    """The sentence with "[ref]" before its closing punctuation (and any trailing space kept after it)."""
    body = sentence.rstrip()
    tail = sentence[len(body) :]
    stripped = body.rstrip(_SENTENCE_PUNCT)
    punct = body[len(stripped) :]
    space = "" if stripped and _CJK_RUN.match(stripped[-1]) else " "
    return f"{stripped}{space}[{ref}]{punct}{tail}"


def _unit_vectors(vectors: np.ndarray) -> np.ndarray:
    v = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return v / np.where(norms > 0, norms, 1.0)


@dataclass
class _Unit:
    text: str
    cited: tuple[int, ...]
    claims: bool
    supports: list[float | None] = field(default_factory=list)
    scores: dict[int, float] = field(default_factory=dict)  # passage index -> rank score, eligible ones only


def attribute(
    answer: str,
    passages: Sequence[str],
    *,
    question: str | None = None,
    embed: Embed | None = None,
    min_support: float = ATTRIBUTION_MIN_SUPPORT,
) -> Attribution:
    """Cite, for each sentence of `answer` without a citation, the passage (numbered from 1 in the order
    given) that supports it; sentences already cited, claiming nothing, or supported by no passage are left
    as they are. `embed` is called at most once, and only when two passages support a sentence about
    equally."""
    if min_support < MIN_SUPPORT:
        raise ValueError(
            f"min_support={min_support} is below the bar a model's own citation must clear "
            f"({MIN_SUPPORT}); an attributed citation would not survive check_citations"
        )
    texts = list(passages)
    passage_terms = [_passage_terms(p) for p in texts]
    asked_terms = question_terms(question) if question else set()
    df: dict[str, int] = {}
    for terms in passage_terms:
        for t in terms:
            df[t] = df.get(t, 0) + 1
    n = max(len(texts), 1)

    def weight(term: str) -> float:
        """Terms few passages share tell them apart: inverse document frequency over the passages held."""
        return 1.0 + math.log(n / df[term]) if term in df else 1.0 + math.log(n + 1)

    units: list[_Unit] = []
    for text in _units(answer):
        cited = tuple(
            int(x) for m in _CITATION.finditer(text) for x in re.split(r"\s*[,，;；]\s*", m.group(1))
        )
        words = _PASSAGE_MENTION.sub(" ", _CITATION.sub(" ", text))
        claim = content_terms(words)
        if not claim:
            above = next((u for u in reversed(units) if u.claims), None)
            if cited and above is not None and not above.cited:
                # "... euros.\n[1]": a line of citations cites the sentence above it, which needs no other.
                above.cited, above.scores = cited, {}
            units.append(_Unit(text, cited, claims=False))
            continue
        unit = _Unit(text, cited, claims=True)
        units.append(unit)
        if cited:
            continue
        unit.supports = [attribution_support(claim, terms) for terms in passage_terms]
        for i, share in enumerate(unit.supports):
            # ... and the bar check_citations holds a citation to, so a later check never removes one of ours.
            if share is None or share < min_support or not is_supported(words, texts[i]):
                continue
            asked = len(asked_terms & passage_terms[i]) / len(asked_terms) if asked_terms else 0.0
            if asked_terms and len(claim) < SHORT_CLAIM_TERMS and asked < QUESTION_MIN_SUPPORT:
                continue  # an elliptical answer ("1995.") needs the passage that has it and what was asked
            lexical = sum(weight(t) for t in claim & passage_terms[i]) / sum(weight(t) for t in claim)
            unit.scores[i] = lexical + QUESTION_WEIGHT * asked

    def close_call(u: _Unit) -> bool:
        ranked = sorted(u.scores.values(), reverse=True)
        return len(ranked) > 1 and ranked[0] - ranked[1] < AMBIGUITY_MARGIN

    ambiguous = [u for u in units if close_call(u)] if embed is not None else []
    if ambiguous and embed is not None:
        needed = sorted({i for u in ambiguous for i in u.scores})
        claims = [_CITATION.sub(" ", u.text).strip() for u in ambiguous]
        vectors = _unit_vectors(embed(claims + [texts[i] for i in needed]))
        if vectors.shape[0] != len(claims) + len(needed):
            raise ValueError(
                f"embed returned {vectors.shape[0]} vectors for {len(claims) + len(needed)} texts"
            )
        passage_vectors = dict(zip(needed, vectors[len(claims) :], strict=True))
        for row, u in enumerate(ambiguous):
            for i in u.scores:
                u.scores[i] += EMBEDDING_WEIGHT * float(vectors[row] @ passage_vectors[i])

    out: list[str] = []
    attributed: list[int] = []
    result: list[SentenceAttribution] = []
    for u in units:
        known = [x for x in u.supports if x is not None]
        if not u.scores:
            out.append(u.text)
            result.append(SentenceAttribution(u.text, u.cited, None, max(known) if known else None, u.claims))
            continue
        best = max(u.scores, key=lambda i: (u.scores[i], -i))
        out.append(_cite(u.text, best + 1))
        if best + 1 not in attributed:
            attributed.append(best + 1)
        result.append(SentenceAttribution(u.text, u.cited, best + 1, u.supports[best], u.claims))
    return Attribution("".join(out), attributed, result)
