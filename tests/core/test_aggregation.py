"""FedAvg: hand-computed values, order independence, byte-identical output, clear refusals."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flock_pipeline.aggregation import fedavg
from flock_pipeline.errors import AggregationError
from flock_pipeline.serialization import canonical_bytes, content_hash
from flock_pipeline.update import Update


def _u(pid: str, n: int, **tensors: list[float]) -> Update:
    return Update(pid, {k: torch.tensor(v, dtype=torch.float32) for k, v in tensors.items()}, n)


def test_fedavg_matches_hand_computed_weighted_mean():
    # Prepare
    a = _u("a", 1, w=[1.0, 2.0], b=[0.0])
    b = _u("b", 3, w=[5.0, 6.0], b=[4.0])
    # Execute
    out = fedavg([a, b])
    # Assert: (1*1 + 3*5)/4 = 4, (1*2 + 3*6)/4 = 5, (0 + 12)/4 = 3
    assert torch.equal(out["w"], torch.tensor([4.0, 5.0]))
    assert torch.equal(out["b"], torch.tensor([3.0]))


def test_fedavg_of_one_update_is_that_update():
    a = _u("a", 7, w=[0.1, -0.3])
    assert torch.equal(fedavg([a])["w"], a.weights["w"])


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    counts=st.lists(st.integers(1, 10_000), min_size=2, max_size=6),
)
def test_fedavg_is_bit_identical_for_every_input_order(seed, counts):
    g = torch.Generator().manual_seed(seed)
    updates = [
        Update(f"p{i}", {"w": torch.randn(17, generator=g), "v": torch.randn(3, 2, generator=g)}, n)
        for i, n in enumerate(counts)
    ]
    reference = canonical_bytes(fedavg(updates))
    for perm in itertools.islice(itertools.permutations(updates), 24):
        assert canonical_bytes(fedavg(list(perm))) == reference


def test_aggregate_hash_is_sha256_of_canonical_bytes_and_stable():
    out = fedavg([_u("a", 2, w=[1.0, 3.0]), _u("b", 2, w=[3.0, 1.0])])
    import hashlib

    assert content_hash(out) == "0x" + hashlib.sha256(canonical_bytes(out)).hexdigest()
    assert content_hash(out) == content_hash({"w": torch.tensor([2.0, 2.0])})


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (_u("evil", 1, w=[float("nan"), 0.0]), "evil.*NaN"),
        (_u("evil", 1, w=[1.0, 2.0, 3.0]), "evil.*shape"),
        (_u("evil", 1, other=[1.0, 2.0]), "evil.*different architecture"),
        (Update("evil", {"w": torch.tensor([1, 2])}, 1), "evil.*dtype"),
        (_u("evil", 0, w=[1.0, 2.0]), "evil.*samples"),
    ],
)
def test_bad_updates_are_refused_with_the_participant_named(bad, message):
    good = _u("good", 1, w=[1.0, 2.0])
    with pytest.raises(AggregationError, match=message):
        fedavg([good, bad])


def test_update_not_matching_the_global_architecture_is_refused():
    reference = {"w": torch.zeros(2), "b": torch.zeros(1)}
    with pytest.raises(AggregationError, match="different architecture than the global model"):
        fedavg([_u("a", 1, w=[1.0, 2.0])], reference=reference)


def test_no_updates_is_an_error():
    with pytest.raises(AggregationError, match="no updates"):
        fedavg([])
