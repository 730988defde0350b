"""Partitions are disjoint, complete, deterministic and skewed as configured."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flock_pipeline.data.partition import (
    balanced_split,
    class_counts,
    partition_indices,
    split_holdout,
    stratified_split,
)
from flock_pipeline.errors import DataError

labels_st = st.integers(2, 10).flatmap(
    lambda c: st.lists(st.integers(0, c - 1), min_size=40, max_size=400).map(
        lambda xs: np.array(xs, dtype=np.int64)
    )
)


def _assert_disjoint_complete(parts: list[np.ndarray], n: int) -> None:
    joined = np.concatenate(parts)
    assert len(joined) == n
    assert np.array_equal(np.sort(joined), np.arange(n))


@settings(max_examples=60, deadline=None)
@given(labels=labels_st, k=st.integers(1, 8), seed=st.integers(0, 2**31 - 1))
def test_iid_and_dirichlet_partitions_are_disjoint_and_complete(labels, k, seed):
    for scheme in ("iid", "dirichlet"):
        parts = partition_indices(labels, k, scheme, alpha=1.0, min_samples=1, seed=seed)
        assert len(parts) == k
        _assert_disjoint_complete(parts, len(labels))


@settings(max_examples=40, deadline=None)
@given(labels=labels_st, seed=st.integers(0, 2**31 - 1), per=st.integers(1, 3))
def test_shards_give_each_participant_exactly_k_classes(labels, seed, per):
    classes = len(np.unique(labels))
    per = min(per, classes)
    k = max(1, -(-classes // per))  # just enough participants to cover every class
    counts_per_class = np.bincount(labels)
    # every holder of a class must get at least one sample of it
    if counts_per_class[counts_per_class > 0].min() < k:
        return
    parts = partition_indices(labels, k, "shards", classes_per_participant=per, seed=seed)
    _assert_disjoint_complete(parts, len(labels))
    for p in parts:
        assert len(np.unique(labels[p])) == per


@settings(max_examples=30, deadline=None)
@given(labels=labels_st, seed=st.integers(0, 2**31 - 1))
def test_same_seed_same_partition(labels, seed):
    a = partition_indices(labels, 3, "dirichlet", alpha=0.5, min_samples=1, seed=seed)
    b = partition_indices(labels, 3, "dirichlet", alpha=0.5, min_samples=1, seed=seed)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def _mean_dominant_share(alpha: float) -> float:
    labels = np.repeat(np.arange(10), 300)
    parts = partition_indices(labels, 10, "dirichlet", alpha=alpha, min_samples=1, seed=7)
    counts = class_counts(labels, parts, 10)
    return float(np.mean(counts.max(axis=1) / counts.sum(axis=1)))


def test_smaller_alpha_gives_stronger_label_skew():
    strong, mild, iid_like = (_mean_dominant_share(a) for a in (0.1, 1.0, 100.0))
    assert strong > mild > iid_like
    assert iid_like < 0.2  # near-uniform: the largest class holds ~10%
    assert strong > 0.5


def test_quantity_skew_varies_sizes_but_keeps_label_mix():
    labels = np.repeat(np.arange(10), 200)
    parts = partition_indices(labels, 5, "iid", quantity_alpha=0.5, min_samples=20, seed=3)
    _assert_disjoint_complete(parts, len(labels))
    sizes = [len(p) for p in parts]
    assert min(sizes) >= 20
    assert max(sizes) > 2 * min(sizes)
    equal = partition_indices(labels, 5, "iid", seed=3)
    assert {len(p) for p in equal} == {400}


def test_holdout_and_test_splits_are_disjoint():
    labels = np.repeat(np.arange(5), 50)
    rest, test = stratified_split(labels, 0.2, seed=1)
    assert np.intersect1d(rest, test).size == 0 and len(rest) + len(test) == 250
    assert np.all(np.bincount(labels[test]) == 10)
    train, hold = split_holdout(rest, 0.25, seed=2)
    assert np.intersect1d(train, hold).size == 0
    assert np.array_equal(np.sort(np.concatenate([train, hold])), rest)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_participants": 11}, "participants"),
        ({"num_participants": 2, "scheme": "dirichlet", "alpha": 0.0}, "alpha must be > 0"),
        ({"num_participants": 2, "scheme": "dirichlet", "alpha": -1.0}, "alpha must be > 0"),
        ({"num_participants": 2, "scheme": "shards", "classes_per_participant": 1}, "cover"),
        ({"num_participants": 2, "scheme": "nope"}, "unknown partition scheme"),
    ],
)
def test_bad_partition_requests_are_named(kwargs, message):
    labels = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0], dtype=np.int64)
    with pytest.raises(DataError, match=message):
        partition_indices(labels, **kwargs)


def test_balanced_split_holds_back_exactly_per_class_of_every_class():
    labels = np.repeat(np.arange(4, dtype=np.int64), [10, 20, 30, 40])
    rest, held = balanced_split(labels, 5, seed=3)
    _assert_disjoint_complete([rest, held], len(labels))
    assert np.bincount(labels[held]).tolist() == [5, 5, 5, 5]
    again = balanced_split(labels, 5, seed=3)
    assert np.array_equal(again[1], held) and np.array_equal(again[0], rest)
    assert not np.array_equal(balanced_split(labels, 5, seed=4)[1], held)


def test_balanced_split_refuses_a_class_it_would_leave_without_training_data():
    labels = np.repeat(np.arange(3, dtype=np.int64), [10, 7, 30])
    with pytest.raises(DataError, match=r"has class 1: 7; .*validation_per_class to at most 3"):
        balanced_split(labels, 4, seed=0)
    # a class the labels lack entirely is named too, when the caller says how many there are
    with pytest.raises(DataError, match=r"class 3: 0; use a larger data set"):
        balanced_split(labels, 1, seed=0, num_classes=4)
