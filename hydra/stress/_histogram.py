"""A latency histogram with fixed buckets, so histograms from many processes
merge exactly (bucket by bucket) into the one the report reads percentiles from.

Values are whole microseconds. Below 128 µs every value has its own bucket;
above, each power of two is cut into 64 equal buckets, so a bucket is at most
1/64 (1.6 %) of its values wide. A percentile is reported as the upper edge of
its bucket (never more than the largest value seen): it errs high, by less
than 1.6 %, never low.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

_EXACT_BITS = 7
_EXACT = 1 << _EXACT_BITS  # 128 values with a bucket each
_HALF = _EXACT >> 1  # 64 buckets per power of two above them
_SHIFTS = 40  # up to 2**46 µs (two years): anything longer is clamped
SIZE = _EXACT + _SHIFTS * _HALF
_TOP = (1 << (_EXACT_BITS + _SHIFTS)) - 1


def bucket_of(us: int) -> int:
    if us < _EXACT:
        return max(us, 0)
    us = min(us, _TOP)
    shift = us.bit_length() - _EXACT_BITS
    return _EXACT + (shift - 1) * _HALF + ((us >> shift) - _HALF)


def upper_edge(index: int) -> int:
    """The largest value that falls in bucket ``index``."""
    if index < _EXACT:
        return index
    shift, top = divmod(index - _EXACT, _HALF)
    shift += 1
    return ((top + _HALF + 1) << shift) - 1


@dataclass(slots=True)
class Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * SIZE)
    count: int = 0
    total_us: int = 0
    min_us: int = 0
    max_us: int = 0

    def record(self, seconds: float) -> None:
        us = int(seconds * 1_000_000)
        self.counts[bucket_of(us)] += 1
        if not self.count or us < self.min_us:
            self.min_us = us
        self.max_us = max(self.max_us, us)
        self.count += 1
        self.total_us += us

    def merge(self, other: Histogram) -> None:
        if other.count:
            if not self.count or other.min_us < self.min_us:
                self.min_us = other.min_us
            self.max_us = max(self.max_us, other.max_us)
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        self.count += other.count
        self.total_us += other.total_us

    def percentile_us(self, q: float) -> int:
        """The value at or below which a fraction ``q`` of the samples fall."""
        if not self.count:
            return 0
        rank = max(1, math.ceil(q * self.count))
        seen = 0
        for index, n in enumerate(self.counts):
            seen += n
            if seen >= rank:
                return min(upper_edge(index), self.max_us)
        return self.max_us  # pragma: no cover - counts add up to count

    def summary_ms(self) -> dict[str, float | int]:
        def ms(us: float) -> float:
            return round(us / 1000, 3)

        return {
            "count": self.count,
            "mean": ms(self.total_us / self.count) if self.count else 0.0,
            "min": ms(self.min_us),
            "p50": ms(self.percentile_us(0.50)),
            "p90": ms(self.percentile_us(0.90)),
            "p99": ms(self.percentile_us(0.99)),
            "max": ms(self.max_us),
        }
