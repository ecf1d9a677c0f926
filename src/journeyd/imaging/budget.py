"""How many decoded pixels may be in memory at once, across every request in the process.

A 40-megapixel PNG is a few hundred kilobytes on the wire and 160 MB once decoded. Each decode holds
its share of the budget while its full-size pixels exist; others wait their turn, so memory stays
bounded however many such requests arrive together.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class PixelBudget:
    def __init__(self, pixels: int) -> None:
        self.total = pixels
        self._free = pixels
        self._changed = threading.Condition()

    @contextmanager
    def hold(self, pixels: int) -> Iterator[None]:
        """Wait until `pixels` (at most the whole budget) are free, and hold them for the block."""
        share = max(0, min(pixels, self.total))
        with self._changed:
            self._changed.wait_for(lambda: self._free >= share)
            self._free -= share
        try:
            yield
        finally:
            with self._changed:
                self._free += share
                self._changed.notify_all()
