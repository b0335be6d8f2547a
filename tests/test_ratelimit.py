"""Token buckets and the adaptive share, with simulated time."""

from __future__ import annotations

import copy

from hypothesis import given, settings
from hypothesis import strategies as st

from firehose_buffer._core.ratelimit import AdaptiveShare, StreamLimiter, TokenBucket
from firehose_buffer.quota import Quota

PROPS = settings(max_examples=200, deadline=None)

# (time step, amount wanted) pairs: a greedy caller that takes whenever the bucket allows.
steps = st.lists(
    st.tuples(st.floats(min_value=0.0, max_value=0.7), st.floats(min_value=0.1, max_value=40.0)),
    min_size=1, max_size=80,
)


@PROPS
@given(
    st.floats(min_value=1.0, max_value=1000.0),
    st.floats(min_value=1.0, max_value=200.0),
    steps,
)
def test_bucket_never_grants_more_than_rate_times_t_plus_capacity(
    rate: float, capacity: float, plan: list[tuple[float, float]],
) -> None:
    now = 0.0
    bucket = TokenBucket(rate, capacity, now)
    taken: list[tuple[float, float]] = []
    for dt, amount in plan:
        now += dt
        if bucket.wait_time(amount, now) == 0.0:
            bucket.take(amount, now)
            taken.append((now, amount))
        else:
            # The wait it announces is enough, and not more than needed.
            wait = bucket.wait_time(amount, now)
            probe = copy.copy(bucket)  # looking ahead must not move the real bucket's clock
            assert probe.wait_time(amount, now + wait + 1e-9) == 0.0
    # Every window [a, b] holds at most rate * (b - a) + capacity, plus one request
    # larger than the bucket that may go when the bucket is full (it leaves it in debt).
    oversize = max((a for _, a in taken if a > capacity), default=0.0)
    for i, (start, _) in enumerate(taken):
        total = 0.0
        for t, amount in taken[i:]:
            total += amount
            bound = rate * (t - start) + max(capacity, oversize)
            assert total <= bound + 1e-6 * max(1.0, bound)


@PROPS
@given(st.lists(st.floats(min_value=0.0, max_value=3.0), min_size=1, max_size=100),
       st.floats(min_value=0.1, max_value=5.0))
def test_throttle_halves_the_share_at_most_once_per_cooldown(
    gaps: list[float], cooldown: float,
) -> None:
    share = AdaptiveShare(0.0, cooldown=cooldown, floor=0.05)
    now = 0.0
    last_decrease = None
    for gap in gaps:
        now += gap
        before = share.current(now)
        changed = share.throttled(now)
        after = share.current(now)
        if changed:
            assert last_decrease is None or now - last_decrease >= cooldown
            assert after == max(0.05, before * 0.5)
            last_decrease = now
        else:
            assert last_decrease is not None
            assert now - last_decrease < cooldown
            assert after == before
        assert 0.05 <= after <= 1.0


@PROPS
@given(st.integers(min_value=1, max_value=6), st.floats(min_value=0.01, max_value=0.2))
def test_share_recovers_linearly_to_one(throttles: int, increase: float) -> None:
    share = AdaptiveShare(0.0, increase_per_second=increase, cooldown=0.0)
    for _ in range(throttles):
        share.throttled(0.0)
    low = share.current(0.0)
    assert low == max(0.05, 0.5**throttles)
    for t in (0.5, 1.0, 2.0, 4.0):
        expected = min(1.0, low + t * increase)
        assert abs(share.current(t) - expected) < 1e-9
    assert share.current((1.0 - low) / increase + 1e-6) == 1.0
    assert share.current(10_000.0) == 1.0


def test_limiter_scales_every_bucket_with_the_share_and_restores_it() -> None:
    quota = Quota(requests_per_second=100.0, bytes_per_second=10_000.0, records_per_second=500.0)
    limiter = StreamLimiter(quota, quota_share=0.5, now=0.0)
    assert limiter.bytes_per_second == 5_000.0
    assert limiter.throttled(0.0)
    assert limiter.share == 0.5
    assert [b.rate for b in limiter.buckets] == [25.0, 2_500.0, 125.0]
    assert not limiter.throttled(0.5), "a second throttle inside the cooldown changes nothing"
    limiter.wait_time(1, 1, 1_000.0)
    assert limiter.share == 1.0
    assert [b.rate for b in limiter.buckets] == [50.0, 5_000.0, 250.0]


@PROPS
@given(
    st.lists(st.integers(min_value=1, max_value=3_000), min_size=1, max_size=50),
    st.floats(min_value=0.0, max_value=2.0),
)
def test_grantable_records_fit_every_bucket(sizes: list[int], when: float) -> None:
    quota = Quota(requests_per_second=10.0, bytes_per_second=8_000.0, records_per_second=20.0)
    limiter = StreamLimiter(quota, 1.0, now=0.0)
    limiter.take(3_000, 7, 0.0)
    count = limiter.grantable(sizes, when)
    req, byt, rec = limiter.buckets
    if count:
        assert req.available(when) >= 1
        fits = sum(sizes[:count]) <= byt.available(when) and count <= rec.available(when)
        # Or the one record larger than the whole bucket, which may go when the bucket is full.
        assert fits or (count == 1 and sizes[0] > byt.capacity
                        and byt.available(when) == byt.capacity)
        if count < len(sizes):
            assert (sum(sizes[:count + 1]) > byt.available(when)
                    or count + 1 > rec.available(when))


@PROPS
@given(st.lists(
    st.tuples(st.floats(min_value=0.0, max_value=0.3),
              st.lists(st.integers(min_value=1, max_value=4_000), min_size=1, max_size=8)),
    min_size=1, max_size=120,
))
def test_limiter_keeps_every_one_second_window_within_the_quota(
    plan: list[tuple[float, list[int]]],
) -> None:
    """The bucket alone would let capacity + rate (1.5 times the quota) into one second."""
    quota = Quota(requests_per_second=20.0, bytes_per_second=16_000.0, records_per_second=30.0)
    limiter = StreamLimiter(quota, 1.0, now=0.0)
    sent: list[tuple[float, int, int]] = []
    now = 0.0
    for dt, sizes in plan:
        now += dt
        count = limiter.grantable(sizes, now)
        if count:
            nbytes = sum(sizes[:count])
            limiter.take(nbytes, count, now)
            sent.append((now, nbytes, count))
    for i, (start, _, _) in enumerate(sent):
        window = [s for s in sent[i:] if s[0] < start + 1.0]
        assert len(window) <= quota.requests_per_second
        assert sum(s[1] for s in window) <= quota.bytes_per_second
        assert sum(s[2] for s in window) <= quota.records_per_second
