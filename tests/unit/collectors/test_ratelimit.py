from hypothesis import given
from hypothesis import strategies as st

from hostlog.collectors.ratelimit import RateLimiter, TokenBucket


def test_bucket_allows_a_burst_then_the_rate():
    b = TokenBucket(rate=10, burst=5)
    assert b.take(8, now=0.0) == 5
    assert b.take(8, now=0.0) == 0
    assert b.take(8, now=0.5) == 5  # 0.5 s at 10/s
    assert b.take(100, now=100.0) == 5  # never more than the burst


def test_per_host_limits_are_separate_and_counted():
    rl = RateLimiter(per_host=(1, 2))
    assert rl.admit("a", 5, now=0.0) == 2
    assert rl.admit("b", 1, now=0.0) == 1
    assert rl.report() == {"a": 3}
    assert rl.report() == {}


def test_source_limit_applies_after_host_limits():
    rl = RateLimiter(source=TokenBucket(rate=1, burst=3), per_host=(100, 100))
    assert rl.admit("a", 2, now=0.0) == 2
    assert rl.admit("b", 2, now=0.0) == 1
    assert rl.report() == {"b": 1}


@given(st.lists(st.tuples(st.integers(0, 50), st.floats(0, 0.5)), max_size=60),
       st.floats(0.5, 100), st.integers(1, 50))
def test_never_more_than_burst_plus_rate_times_elapsed(steps, rate, burst):
    b = TokenBucket(rate=rate, burst=burst)
    now, granted = 0.0, 0
    for n, dt in steps:
        now += dt
        g = b.take(n, now)
        assert 0 <= g <= n
        granted += g
    assert granted <= burst + rate * now + 1e-6
