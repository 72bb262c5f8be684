"""IntervalSet: the allocation record of every address and tag pool."""

from __future__ import annotations

import random

import pytest

from api.errors import StoreError
from netmaster.ipam import IntervalSet


def test_runs_merge_and_split():
    pool = IntervalSet()
    for value in (3, 1, 2, 7, 5, 6):
        pool.add(value)
    assert pool.runs() == [(1, 3), (5, 7)]
    pool.add(4)
    assert pool.runs() == [(1, 7)]
    pool.discard(4)
    assert pool.runs() == [(1, 3), (5, 7)]
    pool.discard(1)
    pool.discard(7)
    pool.discard(99)
    assert pool.runs() == [(2, 3), (5, 6)]
    assert len(pool) == 4 and 5 in pool and 4 not in pool


def test_lowest_free_respects_bounds():
    pool = IntervalSet([(1, 10), (12, 12)])
    assert pool.lowest_free(1, 20) == 11
    assert pool.lowest_free(12, 20) == 13
    assert pool.lowest_free(0, 20) == 0
    assert pool.lowest_free(1, 10) is None
    assert IntervalSet().lowest_free(5, 9) == 5


def test_matches_a_plain_set_under_random_operations():
    rng = random.Random(7)
    pool, model = IntervalSet(), set()
    for _ in range(3000):
        value = rng.randrange(64)
        if rng.random() < 0.6:
            pool.add(value)
            model.add(value)
        else:
            pool.discard(value)
            model.discard(value)
        low = rng.randrange(64)
        expected = next((v for v in range(low, 64) if v not in model), None)
        assert pool.lowest_free(low, 63) == expected
    assert sorted(pool) == sorted(model)
    assert pool.count_in(10, 20) == len([v for v in model if 10 <= v <= 20])


def test_round_trip_and_corrupt_records():
    pool = IntervalSet([(1, 4), (9, 9)])
    assert IntervalSet.loads(pool.dumps(), "k") == pool
    for bad in (b"nope", b"[[3, 1]]", b'[["a", 2]]', b"[[1]]"):
        with pytest.raises(StoreError, match="'k'"):
            IntervalSet.loads(bad, "k")
