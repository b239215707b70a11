"""Quantiles of what a node observed between two scrapes of its histograms."""

from __future__ import annotations

from loadtest.scrape import quantile_ms


def test_the_quantile_is_the_bound_of_the_bucket_that_holds_it() -> None:
    before = [(0.001, 5.0), (0.01, 5.0), (float("inf"), 5.0)]
    after = [(0.001, 95.0), (0.01, 104.0), (float("inf"), 105.0)]  # 90, 9 and 1 new samples
    assert quantile_ms(before, after, 0.5) == 1.0
    assert quantile_ms(before, after, 0.99) == 10.0
    assert quantile_ms(before, after, 1.0) == float("inf")


def test_nothing_observed_has_no_quantile() -> None:
    same = [(0.001, 3.0), (float("inf"), 3.0)]
    assert quantile_ms(same, same, 0.99) is None
