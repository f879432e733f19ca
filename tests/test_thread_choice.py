"""The per-step thread count as pure policy: step sizes and measured seconds in, a count out."""

from __future__ import annotations

import pytest

from fleetserve.engine.thread_choice import ThreadChoice


def run(choice: ThreadChoice, rows: int, cost, steps: int) -> list[int]:
    """`steps` steps of `rows` rows, each taking cost(rows, threads) seconds; the counts chosen."""
    chosen = []
    for _ in range(steps):
        n = choice.choose(rows)
        choice.record(rows, n, cost(rows, n))
        chosen.append(n)
    return chosen


def quiet(rows: int, threads: int) -> float:
    """A quiet 2-core host: a fixed cost per step that a second thread makes worse, and per-row
    work that it halves; one thread wins below 64 rows, two above."""
    return (2e-3 if threads == 1 else 3e-3) + rows * 1e-4 / threads


def busy(rows: int, threads: int) -> float:
    """Both cores busy with other work: every parallel region waits for a descheduled thread."""
    return quiet(rows, threads) * (1 if threads == 1 else 4)


def test_small_steps_take_one_thread_and_large_ones_all_of_them():
    choice = ThreadChoice(2)
    small, large = run(choice, 8, quiet, 200), run(choice, 512, quiet, 200)
    assert small[:4] == [2, 2, 1, 1]  # each count's first step is set-up, not a sample
    assert small[10:].count(1) > 0.9 * len(small[10:])
    assert large[10:].count(2) > 0.9 * len(large[10:])


def test_the_slower_count_is_tried_again_now_and_then():
    choice = ThreadChoice(2, explore_every=32)
    chosen = run(choice, 8, quiet, 330)[10:]
    assert 8 <= chosen.count(2) <= 12  # one step in 33 tries the other count


def test_a_host_turning_busy_and_quiet_again_is_followed():
    choice = ThreadChoice(2, explore_every=16)
    run(choice, 512, quiet, 100)
    assert choice.choose(512) == 2
    after = run(choice, 512, busy, 200)
    assert after[:8].count(1) >= 5  # within a few steps
    assert after[50:].count(1) > 0.9 * len(after[50:])
    back = run(choice, 512, quiet, 300)
    assert back[-100:].count(2) > 0.9 * 100  # noticed through the periodic tries


def test_one_thread_engines_and_bad_arguments():
    assert run(ThreadChoice(1), 100, quiet, 5) == [1] * 5
    with pytest.raises(ValueError):
        ThreadChoice(0)
    choice = ThreadChoice(4)
    assert choice.options == (1, 4)
    choice.record(10, 3, 1.0)  # a count it does not choose between: ignored
    choice.record(0, 4, 1.0)  # an empty step: ignored
    assert choice.choose(10) == 4
