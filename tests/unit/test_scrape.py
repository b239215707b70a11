"""Quantiles of what a node observed between two scrapes of its histograms, and how many
frames its writes carried."""

from __future__ import annotations

from loadtest.scrape import frames_per_write, quantile_ms


def test_the_quantile_is_the_bound_of_the_bucket_that_holds_it() -> None:
    before = [(0.001, 5.0), (0.01, 5.0), (float("inf"), 5.0)]
    after = [(0.001, 95.0), (0.01, 104.0), (float("inf"), 105.0)]  # 90, 9 and 1 new samples
    assert quantile_ms(before, after, 0.5) == 1.0
    assert quantile_ms(before, after, 0.99) == 10.0
    assert quantile_ms(before, after, 1.0) == float("inf")


def test_nothing_observed_has_no_quantile() -> None:
    same = [(0.001, 3.0), (float("inf"), 3.0)]
    assert quantile_ms(same, same, 0.99) is None


def _counts(delivered: float, batched: float, batches: float) -> dict[str, float]:
    return {"chat_frames_delivered": delivered, "chat_batched_frames": batched,
            "chat_batched_writes": batches}


def test_frames_per_write_counts_a_batch_as_one_write() -> None:
    # 100 frames: 40 written alone, 60 in 10 batches -> 50 writes
    assert frames_per_write(_counts(7, 3, 1), _counts(107, 63, 11)) == 2.0
    assert frames_per_write(_counts(0, 0, 0), _counts(50, 0, 0)) == 1.0


def test_no_frames_or_a_node_without_the_counts_has_no_figure() -> None:
    assert frames_per_write(_counts(5, 0, 0), _counts(5, 0, 0)) is None
    assert frames_per_write({}, _counts(5, 0, 0)) is None
