"""The per-bearer rate-limit budget: requests spend a window whole, then book later ones."""

from __future__ import annotations

import threading

import pytest

from rotator.adapters.keyapi.pacing import Pacer


class Clock:
    def __init__(self) -> None:
        self.at = 100.0

    def __call__(self) -> float:
        return self.at


@pytest.fixture()
def clock() -> Clock:
    return Clock()


def test_nothing_known_of_a_bearer_means_no_wait(clock: Clock) -> None:
    pacer = Pacer(clock)
    assert [pacer.reserve("b").wait for _ in range(3)] == [0.0, 0.0, 0.0]
    pacer.observe("b", None, 10.0, 5)     # an answer that says nothing of what is left
    pacer.observe("b", 3, None, 5)
    assert pacer.reserve("b").wait == 0.0


def test_a_window_is_spent_whole_then_each_later_window_takes_limit_more(clock: Clock) -> None:
    pacer = Pacer(clock)
    pacer.observe("b", 2, 10.0, 3)        # 2 left of 3, for 10 s more
    waits = [pacer.reserve("b").wait for _ in range(8)]
    assert waits == [0.0, 0.0, 10.0, 10.0, 10.0, 20.0, 20.0, 20.0]
    assert pacer.reserve("other").wait == 0.0  # each bearer has its own window


def test_at_the_reset_the_booked_requests_fill_the_new_window_first(clock: Clock) -> None:
    pacer = Pacer(clock)
    pacer.observe("b", 0, 10.0, 3)
    assert [pacer.reserve("b").wait for _ in range(4)] == [10.0, 10.0, 10.0, 20.0]
    clock.at += 10.0                       # the three booked go now; the fourth waits on
    assert pacer.reserve("b").wait == 10.0      # beside the fourth, in the window after
    clock.at += 10.0
    assert pacer.reserve("b").wait == 0.0       # the fourth and fifth have gone: one left
    assert pacer.reserve("b").wait == 10.0


def test_windows_idle_past_are_rolled_over_with_the_full_limit(clock: Clock) -> None:
    pacer = Pacer(clock)
    pacer.observe("b", 0, 10.0, 2)
    clock.at += 95.0
    assert [pacer.reserve("b").wait for _ in range(3)] == [0.0, 0.0, 5.0]


def test_the_server_saying_fewer_left_in_the_same_window_wins(clock: Clock) -> None:
    pacer = Pacer(clock)
    pacer.observe("b", 5, 10.0, 10)
    pacer.observe("b", 1, 9.6, 10)         # another replica spent some of this window
    assert [pacer.reserve("b").wait for _ in range(2)] == [0.0, 10.0]
    pacer.observe("b", 4, 9.5, 10)         # more left than we think: ours holds
    assert pacer.reserve("b").wait == 10.0


def test_an_answer_from_a_window_already_over_is_ignored(clock: Clock) -> None:
    pacer = Pacer(clock)
    pacer.observe("b", 0, 30.0, 10)
    pacer.observe("b", 5, 5.0, 10)         # sent long before, arrived late
    assert pacer.reserve("b").wait == 30.0


def test_a_429_holds_every_request_until_its_retry_after_then_forgets(clock: Clock) -> None:
    pacer = Pacer(clock)
    pacer.observe("b", 0, 4.0)             # a 429's Retry-After; no limit known
    assert [pacer.reserve("b").wait for _ in range(3)] == [4.0, 4.0, 4.0]
    clock.at += 4.0
    assert pacer.reserve("b").wait == 0.0


def test_threads_racing_for_one_window_take_exactly_what_is_left(clock: Clock) -> None:
    pacer = Pacer(clock)
    pacer.observe("b", 7, 10.0, 10)
    start, waits = threading.Barrier(16), []
    lock = threading.Lock()

    def take() -> None:
        start.wait()
        for _ in range(4):
            wait = pacer.reserve("b").wait
            with lock:
                waits.append(wait)

    threads = [threading.Thread(target=take) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # 64 requests: 7 now, then 10 in each window after.
    assert sorted(waits) == [0.0] * 7 + [w * 10.0 for w in range(1, 7) for _ in range(10)][:57]


def test_a_booked_request_waits_more_when_its_window_opens_later_than_reckoned(
        clock: Clock) -> None:
    pacer = Pacer(clock)
    pacer.observe("b", 0, 10.0, 2)
    turns = [pacer.reserve("b") for _ in range(3)]     # two in the next window, one after
    assert [t.wait for t in turns] == [10.0, 10.0, 20.0]
    clock.at += 10.0
    assert [pacer.wait_more("b", t) for t in turns[:2]] == [0.0, 0.0]
    pacer.observe("b", 1, 10.5, 2)         # the server's window opened 0.5 s after ours
    clock.at += 10.0
    assert pacer.wait_more("b", turns[2]) == 0.5
    clock.at += 0.5
    assert pacer.wait_more("b", turns[2]) == 0.0
