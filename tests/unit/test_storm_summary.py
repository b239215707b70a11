"""The storm's summary names the second after the kill that hurt the observer most."""

from __future__ import annotations

from loadtest.storm import _worst_second

KILLED = 100.0


def test_the_worst_second_is_the_one_with_the_highest_p99() -> None:
    latencies = [(99.5, 900.0),  # before the kill: not the storm's
                 *((100.2 + n / 100, 10.0) for n in range(50)),
                 *((103.1 + n / 100, 20.0) for n in range(40)), (103.9, 400.0),
                 *((105.0 + n / 100, 30.0) for n in range(60))]
    assert _worst_second(latencies, KILLED) == {"after_kill_s": 3, "p99_ms": 400.0,
                                                "deliveries": 41}


def test_no_delivery_after_the_kill_has_no_worst_second() -> None:
    assert _worst_second([(99.0, 5.0)], KILLED) is None
