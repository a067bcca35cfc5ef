"""The reader-to-encoder queue is bounded by chunks: small documents queue up to a window's worth, a huge one
still passes alone, and a waiting reader resumes when the encoder takes items."""

from __future__ import annotations

import queue
import threading
import time

import pytest

from ingestion.chunk_queue import ChunkQueue


def test_many_small_items_queue_up_to_the_chunk_bound_not_a_fixed_count() -> None:
    q: ChunkQueue[int] = ChunkQueue(1024, size=lambda n: n)
    for _ in range(500):  # 500 two-chunk documents: far more than the 64 documents the old queue held
        q.put(2)
    assert q.units == 1000
    blocked = threading.Thread(target=q.put, args=(30,), daemon=True)
    blocked.start()
    blocked.join(0.3)
    assert blocked.is_alive(), "a put past the bound must wait"
    for _ in range(15):
        q.get()
    blocked.join(5)
    assert not blocked.is_alive() and q.units == 1000


def test_an_item_over_the_bound_goes_in_alone_and_order_is_kept() -> None:
    q: ChunkQueue[int] = ChunkQueue(10, size=lambda n: n)
    q.put(50)  # bigger than the whole bound: accepted into an empty queue
    later = threading.Thread(target=q.put, args=(1,), daemon=True)
    later.start()
    later.join(0.3)
    assert later.is_alive()
    assert q.get() == 50
    later.join(5)
    assert q.get() == 1 and q.empty()


def test_the_item_cap_bounds_chunkless_items_and_get_times_out() -> None:
    q: ChunkQueue[int] = ChunkQueue(100, size=lambda n: 0, max_items=3)
    for i in range(3):
        q.put(i)
    late = threading.Thread(target=q.put, args=(3,), daemon=True)
    late.start()
    late.join(0.3)
    assert late.is_alive()
    assert [q.get(), q.get(), q.get()] == [0, 1, 2]
    late.join(5)
    assert q.get() == 3
    start = time.monotonic()
    with pytest.raises(queue.Empty):
        q.get(timeout=0.2)
    assert time.monotonic() - start >= 0.19


def test_bounds_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive bounds"):
        ChunkQueue(0, size=len)
