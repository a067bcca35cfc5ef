"""Answer scoring: SQuAD v1.1's official normalisation for English, CMRC 2018's for Chinese.

CMRC's scorer segments Chinese by character and other text with nltk's word tokenizer; we use a regex
word tokenizer in its place (nltk is not a dependency), which splits words and punctuation the same way
for the plain answers these datasets contain.
"""

from __future__ import annotations

import re
import string
from collections import Counter

_CITATION = re.compile(r"\s*\[\d+(?:\s*,\s*\d+)*\]")
_CJK = re.compile(r"[\u4e00-\u9fa5]")
CMRC_PUNCT = set("-:_*^/\\~`+=，。：？！“”；’《》·、「」（）－～『』") | {"……"}


def strip_citations(text: str) -> str:
    """The answer without its [n] citation markers, which no gold answer contains."""
    return _CITATION.sub("", text).strip()


# --- SQuAD ------------------------------------------------------------------------------------------
def squad_normalize(text: str) -> str:
    """Text as SQuAD's official script normalises it (lower case, no punctuation or articles)."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def squad_f1(prediction: str, gold: str) -> float:
    """SQuAD's token F1 between a prediction and one gold answer."""
    pred = squad_normalize(prediction).split()
    ref = squad_normalize(gold).split()
    common = Counter(pred) & Counter(ref)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


def squad_em(prediction: str, gold: str) -> float:
    """SQuAD's exact match (1.0 or 0.0) after normalisation."""
    return float(squad_normalize(prediction) == squad_normalize(gold))


# --- CMRC 2018 --------------------------------------------------------------------------------------
def cmrc_segments(text: str, rm_punc: bool = True) -> list[str]:
    """CMRC 2018's segmentation: each CJK character a token, other runs split into words."""
    text = text.lower().strip()
    out: list[str] = []
    buffer = ""
    for ch in text:
        if rm_punc and ch in CMRC_PUNCT:
            continue
        if _CJK.match(ch) or ch in CMRC_PUNCT:
            if buffer:
                out.extend(re.findall(r"\w+|[^\w\s]", buffer))
                buffer = ""
            out.append(ch)
        else:
            buffer += ch
    if buffer:
        out.extend(re.findall(r"\w+|[^\w\s]", buffer))
    return out


def _lcs_len(a: list[str], b: list[str]) -> int:
    best = 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0] * (len(b) + 1)
        for j, y in enumerate(b):
            if x == y:
                cur[j + 1] = prev[j] + 1
                best = max(best, cur[j + 1])
        prev = cur
    return best


def cmrc_f1(prediction: str, gold: str) -> float:
    """CMRC 2018's F1 over the longest common subsequence of segments, as its official script scores."""
    ans, pred = cmrc_segments(gold), cmrc_segments(prediction)
    lcs = _lcs_len(ans, pred)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(ans)
    return 2 * precision * recall / (precision + recall)


def cmrc_remove_punct(text: str) -> str:
    """Text lower-cased without CMRC punctuation, for exact match."""
    return "".join(ch for ch in text.lower().strip() if ch not in CMRC_PUNCT)


def cmrc_em(prediction: str, gold: str) -> float:
    """CMRC 2018's exact match (1.0 or 0.0) after removing punctuation."""
    return float(cmrc_remove_punct(prediction) == cmrc_remove_punct(gold))


def score(prediction: str, golds: list[str], language: str) -> dict[str, float]:
    """Best EM, F1 and containment over the gold answers (as both official scorers do)."""
    prediction = strip_citations(prediction)
    if language == "zh":
        em = max(cmrc_em(prediction, g) for g in golds)
        f1 = max(cmrc_f1(prediction, g) for g in golds)
        contains = max(float(cmrc_remove_punct(g) in cmrc_remove_punct(prediction)) for g in golds)
    else:
        em = max(squad_em(prediction, g) for g in golds)
        f1 = max(squad_f1(prediction, g) for g in golds)
        contains = max(float(squad_normalize(g) in squad_normalize(prediction)) for g in golds)
    return {"exact_match": em, "f1": f1, "contains": contains}
