"""A queue between the ingest's reader and its encoder, bounded by the chunks it holds, not by documents.

Bounded by documents (64), the reader stopped after about 140 short chunks while the encoder worked on a
window, so the next window started with less than a window ready and the encoder ran windows a quarter full
(more padding, more calls). Bounded by chunks, the reader keeps up to two windows ready. An item larger than
the bound still goes in, alone, so one huge document cannot block the ingest; the item cap bounds the memory
of many chunkless items (unchanged files).
"""

from __future__ import annotations

import collections
import queue
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class ChunkQueue(Generic[T]):
    """FIFO whose `put` blocks while it holds `max_units` (as `size` counts them) or `max_items` items."""

    def __init__(self, max_units: int, size: Callable[[T], int], max_items: int = 4096) -> None:
        if max_units < 1 or max_items < 1:
            raise ValueError(f"a chunk queue needs positive bounds, got {max_units} units, {max_items} items")
        self.max_units = max_units
        self.max_items = max_items
        self._size = size
        self._items: collections.deque[tuple[T, int]] = collections.deque()
        self._units = 0
        self._changed = threading.Condition()

    def _full_for(self, units: int) -> bool:
        if not self._items:
            return False  # an item over the bound goes in alone
        return self._units + units > self.max_units or len(self._items) >= self.max_items

    def put(self, item: T) -> None:
        """Add `item`, waiting while the queue is full for it."""
        units = max(0, self._size(item))
        with self._changed:
            while self._full_for(units):
                self._changed.wait()
            self._items.append((item, units))
            self._units += units
            self._changed.notify_all()

    def get(self, timeout: float | None = None) -> T:
        """The oldest item, waiting for one (`queue.Empty` after `timeout` seconds, if given)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            while not self._items:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise queue.Empty
                self._changed.wait(left)
            item, units = self._items.popleft()
            self._units -= units
            self._changed.notify_all()
            return item

    def empty(self) -> bool:
        """Whether nothing is waiting (a snapshot, as `queue.Queue.empty`)."""
        with self._changed:
            return not self._items

    @property
    def units(self) -> int:
        """The units (chunks) held now."""
        with self._changed:
            return self._units
