"""Pure parts of ranking: RRF and duplicate suppression / MMR."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.diversity import diversify
from retrieval.fusion import reciprocal_rank_fusion


def test_rrf_matches_the_formula_and_honours_weights():
    fused = dict(reciprocal_rank_fusion([([1, 2, 3], 1.0), ([3, 1], 1.0)], rrf_k=60))
    assert fused[1] == pytest.approx(1 / 61 + 1 / 62)
    assert fused[3] == pytest.approx(1 / 63 + 1 / 61)
    assert fused[2] == pytest.approx(1 / 62)
    heavy_keyword = [i for i, _ in reciprocal_rank_fusion([([1, 2], 1.0), ([2, 1], 3.0)], rrf_k=60)]
    assert heavy_keyword[0] == 2
    only_dense = [i for i, _ in reciprocal_rank_fusion([([5, 6], 1.0), ([6, 5], 0.0)])]
    assert only_dense == [5, 6]
    with pytest.raises(ValueError):
        reciprocal_rank_fusion([([1], 1.0)], rrf_k=-1)


def test_duplicates_are_dropped_and_order_kept():
    v = np.eye(4, dtype=np.float32)
    vecs = np.stack([v[0], v[0], v[1], v[0] * 0.99 + v[2] * 0.01, v[2]])
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    keep = diversify(np.array([5, 4, 3, 2, 1], dtype=np.float32), vecs, 3)
    assert keep == [0, 2, 4]


def test_mmr_prefers_novelty_when_asked():
    a, b = np.array([1, 0], np.float32), np.array([0, 1], np.float32)
    near_a = np.array([0.9, 0.436], np.float32)
    vecs = np.stack([a, near_a, b])
    assert diversify(np.array([1.0, 0.95, 0.5], np.float32), vecs, 2) == [0, 1]
    assert diversify(np.array([1.0, 0.95, 0.5], np.float32), vecs, 2, mmr_lambda=0.3) == [0, 2]
