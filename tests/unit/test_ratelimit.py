from node.ratelimit import FloodGuard, Rate, shared_rate


def _takes(rate: Rate, full_at: float, times: list[float]) -> tuple[list[bool], float]:
    """Which of the takes at `times` the bucket allowed, and when it is full after them."""
    allowed = []
    for now in times:
        taken = rate.take(full_at, now)
        allowed.append(taken is not None)
        full_at = full_at if taken is None else taken
    return allowed, full_at


def test_bucket_allows_the_burst_then_refuses() -> None:
    assert _takes(Rate(10, 3), 0.0, [0.0] * 4)[0] == [True, True, True, False]


def test_bucket_refills_at_the_rate_up_to_the_burst() -> None:
    _, full_at = _takes(Rate(10, 3), 0.0, [0.0] * 3)
    assert Rate(10, 3).take(full_at, 0.05) is None  # half a token
    allowed, full_at = _takes(Rate(10, 3), full_at, [0.1])
    assert allowed == [True]
    assert _takes(Rate(10, 3), full_at, [100.0] * 4)[0] == [True, True, True, False]


def test_a_whole_burst_passes_at_large_clock_values_and_high_rates() -> None:
    """Rounding must not lose the last token of a burst (a monotonic clock reads ~1e6 s)."""
    allowed, _ = _takes(Rate(100_000, 1000), 1e6, [1e6] * 1001)
    assert allowed == [True] * 1000 + [False]


def test_one_rate_object_serves_every_connection_with_the_same_figures() -> None:
    assert shared_rate(10.0, 20) is shared_rate(10.0, 20)


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
