"""Turning text into what the keyword index matches on, the same way at ingest and at query time.

Word tokenizers split on spaces and punctuation, which leaves a Chinese sentence as one giant token; CJK
runs are therefore segmented into words with jieba (loaded lazily, once) before the keyword index sees them.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from typing import Protocol


class _Segmenter(Protocol):
    """What sparq uses of jieba (the package ships no types)."""

    def cut_for_search(self, sentence: str) -> Iterator[str]: ...


_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff]+")
_jieba_lock = threading.Lock()
_jieba: _Segmenter | None = None


def has_cjk(text: str) -> bool:
    """Whether `text` holds a Chinese or Japanese run, which has no spaces and needs word segmentation."""
    return _CJK.search(text) is not None


def _segmenter() -> _Segmenter:
    global _jieba
    with _jieba_lock:
        if _jieba is None:
            import logging

            import jieba

            jieba.setLogLevel(logging.WARNING)
            jieba.initialize()
            _jieba = jieba
    return _jieba


def segment_cjk(run: str) -> list[str]:
    """A CJK run cut into words (jieba, search mode), so the keyword index has terms to match."""
    return [w for w in _segmenter().cut_for_search(run) if w.strip()]


def search_text(text: str) -> str:
    """Text for the keyword index: unchanged outside CJK runs, space-separated words inside them."""
    if not has_cjk(text):
        return text
    return _CJK.sub(lambda m: " " + " ".join(segment_cjk(m.group(0))) + " ", text)
