"""Token buckets and the adaptive (AIMD) share of a stream's quota. Time is passed in."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

from ..quota import Quota

#: Client buckets hold half a second of quota. The service's budget (inferred: about one
#: second) then has half a second of room for timing jitter between our clock and its.
BURST_SECONDS = 0.5


class TokenBucket:
    """A classic token bucket; a request larger than the bucket may go when the bucket is
    full, leaving it in debt, so one oversized record is slowed down rather than stuck."""

    __slots__ = ("_stamp", "capacity", "rate", "tokens")

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self.tokens = capacity
        self._stamp = now

    def _refill(self, now: float) -> None:
        if now > self._stamp:
            self.tokens = min(self.capacity, self.tokens + (now - self._stamp) * self.rate)
            self._stamp = now

    def wait_time(self, amount: float, now: float) -> float:
        """Seconds until ``amount`` can be taken (0.0 if now)."""
        self._refill(now)
        need = min(amount, self.capacity)
        if self.tokens >= need:
            return 0.0
        return (need - self.tokens) / self.rate

    def available(self, now: float) -> float:
        self._refill(now)
        return self.tokens

    def take(self, amount: float, now: float) -> None:
        self._refill(now)
        self.tokens -= amount

    def set_rate(self, rate: float, now: float) -> None:
        self._refill(now)
        self.rate = rate


class SlidingWindow:
    """At most ``limit`` taken within any ``span`` seconds, counted from what was taken.

    A bucket of capacity C refilled at rate R lets C + R pass in one second: with half a
    second of burst, 1.5 times the quota. The service counts per second, so each bucket is
    paired with this window: the bucket smooths, the window caps every one-second span.
    """

    __slots__ = ("_entries", "_total", "limit", "span")

    def __init__(self, limit: float, span: float = 1.0) -> None:
        self.limit = limit
        self.span = span
        self._entries: deque[tuple[float, float]] = deque()
        self._total = 0.0

    def _expire(self, now: float) -> None:
        entries = self._entries
        while entries and entries[0][0] <= now - self.span:
            self._total -= entries.popleft()[1]
        if not entries:
            self._total = 0.0  # no float residue once the window is empty

    def room(self, now: float) -> float:
        self._expire(now)
        return self.limit - self._total

    def wait_time(self, amount: float, now: float) -> float:
        """Seconds until ``amount`` fits (one amount above ``limit`` fits an empty window)."""
        self._expire(now)
        excess = self._total + min(amount, self.limit) - self.limit
        if excess <= 0.0 or not self._entries:
            return 0.0
        freed = 0.0
        for stamp, taken in self._entries:
            freed += taken
            if freed >= excess:
                return max(0.0, stamp + self.span - now)
        return max(0.0, self._entries[-1][0] + self.span - now)

    def take(self, amount: float, now: float) -> None:
        self._expire(now)
        self._entries.append((now, amount))
        self._total += amount


class AdaptiveShare:
    """The fraction of the quota a stream may use: halved on throttling (at most once per
    ``cooldown``, since one burst of throttling shows up in several responses), regained
    linearly over time, because other producers we cannot see share the same quota."""

    __slots__ = (
        "_last_change", "_last_decrease", "cooldown", "decrease", "floor",
        "increase_per_second", "share",
    )

    def __init__(
        self,
        now: float,
        *,
        floor: float = 0.05,
        decrease: float = 0.5,
        increase_per_second: float = 0.05,
        cooldown: float = 1.0,
    ) -> None:
        self.share = 1.0
        self.floor = floor
        self.decrease = decrease
        self.increase_per_second = increase_per_second
        self.cooldown = cooldown
        self._last_change = now
        self._last_decrease = -math.inf

    def current(self, now: float) -> float:
        if self.share < 1.0 and now > self._last_change:
            grown = self.share + (now - self._last_change) * self.increase_per_second
            self.share = min(1.0, grown)
            self._last_change = now
        return self.share

    def throttled(self, now: float) -> bool:
        """Register a throttle; return True if the share went down."""
        self.current(now)
        if now - self._last_decrease < self.cooldown:
            return False
        self.share = max(self.floor, self.share * self.decrease)
        self._last_change = self._last_decrease = now
        return True


class StreamLimiter:
    """Requests, bytes and records per second for one stream, scaled by the adaptive share."""

    __slots__ = ("_share_applied", "adaptive", "base", "buckets", "windows")

    def __init__(self, quota: Quota, quota_share: float, now: float) -> None:
        self.base = (
            quota.requests_per_second * quota_share,
            quota.bytes_per_second * quota_share,
            quota.records_per_second * quota_share,
        )
        self.buckets = tuple(TokenBucket(r, r * BURST_SECONDS, now) for r in self.base)
        self.windows = tuple(SlidingWindow(r) for r in self.base)
        self.adaptive = AdaptiveShare(now)
        self._share_applied = 1.0

    def _sync(self, now: float) -> None:
        share = self.adaptive.current(now)
        if share != self._share_applied:
            for bucket, window, rate in zip(self.buckets, self.windows, self.base, strict=True):
                bucket.set_rate(rate * share, now)
                window.limit = rate * share
            self._share_applied = share

    def wait_time(self, nbytes: int, nrecords: int, now: float) -> float:
        self._sync(now)
        amounts = (1, nbytes, nrecords)
        return max(
            max(b.wait_time(a, now), w.wait_time(a, now))
            for b, w, a in zip(self.buckets, self.windows, amounts, strict=True)
        )

    def grantable(self, sizes: Sequence[int], now: float) -> int:
        """How many of these records (sizes in bytes, in order) one request may carry now."""
        self._sync(now)
        req, byt, rec = self.buckets
        wreq, wbyt, wrec = self.windows
        if req.wait_time(1, now) > 0.0 or wreq.wait_time(1, now) > 0.0:
            return 0
        avail_bytes = min(byt.available(now), wbyt.room(now))
        avail_records = min(rec.available(now), wrec.room(now))
        count = 0
        total = 0
        for size in sizes:
            if count + 1 > avail_records or total + size > avail_bytes:
                break
            count += 1
            total += size
        if not count and sizes and max(
            byt.wait_time(sizes[0], now), wbyt.wait_time(sizes[0], now),
            rec.wait_time(1, now), wrec.wait_time(1, now),
        ) == 0.0:
            return 1  # larger than the bucket, which is full: let it go, in debt
        return count

    def take(self, nbytes: int, nrecords: int, now: float) -> None:
        for bucket, window, amount in zip(
            self.buckets, self.windows, (1, nbytes, nrecords), strict=True
        ):
            bucket.take(amount, now)
            window.take(amount, now)

    def affordable_bytes(self, now: float) -> float:
        """Bytes that could be sent right now (for routing: the stream's headroom)."""
        self._sync(now)
        return min(self.buckets[1].available(now), self.windows[1].room(now))

    def throttled(self, now: float) -> bool:
        changed = self.adaptive.throttled(now)
        self._sync(now)
        return changed

    @property
    def share(self) -> float:
        return self._share_applied

    @property
    def bytes_per_second(self) -> float:
        return self.buckets[1].rate
