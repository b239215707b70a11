from node.ratelimit import FloodGuard, TokenBucket


def test_bucket_allows_the_burst_then_refuses() -> None:
    bucket = TokenBucket(rate=10, burst=3, now=0.0)
    assert [bucket.allow(0.0) for _ in range(4)] == [True, True, True, False]


def test_bucket_refills_at_the_rate_up_to_the_burst() -> None:
    bucket = TokenBucket(rate=10, burst=3, now=0.0)
    for _ in range(3):
        bucket.allow(0.0)
    assert bucket.allow(0.05) is False  # half a token
    assert bucket.allow(0.1) is True
    assert [bucket.allow(100.0) for _ in range(4)] == [True, True, True, False]


def test_flood_guard_trips_on_the_rejection_past_the_limit_within_the_window() -> None:
    guard = FloodGuard(limit=3, window=10.0)
    assert [guard.reject(t) for t in (0.0, 1.0, 2.0)] == [False, False, False]
    assert guard.reject(3.0) is True


def test_flood_guard_forgets_rejections_older_than_the_window() -> None:
    guard = FloodGuard(limit=3, window=10.0)
    for t in (0.0, 1.0, 2.0):
        guard.reject(t)
    assert guard.reject(10.5) is False  # the one at 0.0 fell out of the window
    assert guard.reject(10.6) is True
