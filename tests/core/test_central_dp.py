"""Central DP wrapper: clipping bound, noise scale, seeded reproducibility, adaptive clipping,
and the central accountant against Opacus stepped by hand."""

from __future__ import annotations

import itertools
import math
import random
import warnings
from collections.abc import Sequence

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from opacus.accountants import RDPAccountant

from flock_pipeline.aggregation.base import check_compatible, ordered
from flock_pipeline.aggregation.central_dp import CentralDP, clip_delta
from flock_pipeline.aggregation.fedavg import FedAvg
from flock_pipeline.aggregation.strategy import Aggregate, Strategy, StrategyState
from flock_pipeline.errors import ConfigError
from flock_pipeline.privacy.central import CentralAccountant, effective_noise_multiplier
from flock_pipeline.serialization import Weights, canonical_bytes
from flock_pipeline.update import Update


class Recorder(Strategy):
    """FedAvg that also keeps the updates it was given."""

    name = "fedavg"

    def __init__(self) -> None:
        self.seen: list[Update] = []

    def aggregate(
        self,
        updates: Sequence[Update],
        global_weights: Weights,
        state: StrategyState | None = None,
        seed: int = 0,
    ) -> Aggregate:
        self.seen = list(updates)
        return FedAvg().aggregate(updates, global_weights, state, seed)


class Median(Strategy):
    """Coordinate-wise median: not a mean rule."""

    name = "test_median"

    def aggregate(
        self,
        updates: Sequence[Update],
        global_weights: Weights,
        state: StrategyState | None = None,
        seed: int = 0,
    ) -> Aggregate:
        check_compatible(updates, global_weights)
        us = ordered(updates)
        return Aggregate(
            {k: torch.stack([u.weights[k] for u in us]).median(dim=0).values for k in us[0].weights}
        )


class Momentum(Strategy):
    """A stateful rule (server momentum stand-in)."""

    name = "test_momentum"

    def aggregate(
        self,
        updates: Sequence[Update],
        global_weights: Weights,
        state: StrategyState | None = None,
        seed: int = 0,
    ) -> Aggregate:
        agg = FedAvg().aggregate(updates, global_weights)
        return Aggregate(agg.weights, state={"m": torch.zeros(1)})


def _model(gen: torch.Generator) -> Weights:
    return {
        "w": torch.randn(8, 5, generator=gen),
        "b": torch.randn(5, generator=gen),
        "steps": torch.tensor(3, dtype=torch.int64),
    }


def _updates(global_w: Weights, scales: Sequence[float], gen: torch.Generator) -> list[Update]:
    out = []
    for i, s in enumerate(scales):
        w = {k: v.clone() for k, v in global_w.items()}
        w["w"] = w["w"] + s * torch.randn(8, 5, generator=gen)
        w["b"] = w["b"] + s * torch.randn(5, generator=gen)
        w["steps"] = torch.tensor(7 + i, dtype=torch.int64)
        out.append(Update(f"p{i}", w, num_samples=10 * (i + 1)))
    return out


def _delta_norm(w: Weights, g: Weights) -> float:
    return math.sqrt(sum(float((w[k].double() - g[k].double()).pow(2).sum()) for k in ("w", "b")))


@settings(max_examples=50, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    clip=st.floats(1e-3, 10.0),
    scales=st.lists(st.floats(0.0, 100.0), min_size=1, max_size=5),
)
def test_clipping_bounds_every_delta_norm(seed, clip, scales):
    gen = torch.Generator().manual_seed(seed)
    g = _model(gen)
    updates = _updates(g, scales, gen)
    # the clip itself, in float64
    for u in updates:
        delta = {k: u.weights[k].double() - g[k].double() for k in ("w", "b")}
        clipped, norm = clip_delta(delta, clip)
        assert math.sqrt(sum(float(t.pow(2).sum()) for t in clipped.values())) <= clip * (1 + 1e-12)
        if norm <= clip:
            assert all(torch.equal(clipped[k], delta[k]) for k in delta)
    # what the inner strategy receives (rebuilt as float32 weights)
    inner = Recorder()
    CentralDP(inner, noise_multiplier=0.0, clip_norm=clip).aggregate(updates, g, seed=seed)
    assert len(inner.seen) == len(updates)
    for u in inner.seen:
        assert _delta_norm(u.weights, g) <= clip * (1 + 1e-4) + 1e-5
        assert u.num_samples == 1
        assert torch.equal(u.weights["steps"], g["steps"])  # integer buffers carry nothing


def test_noise_std_matches_sigma_c_over_n():
    g = {"w": torch.zeros(400_000)}
    n, sigma, clip = 4, 1.5, 0.8
    updates = [Update(f"p{i}", {"w": torch.zeros(400_000)}, 5) for i in range(n)]
    dp = CentralDP(FedAvg(), noise_multiplier=sigma, clip_norm=clip)
    agg = dp.aggregate(updates, g, seed=1234)
    expected = sigma * clip / n
    assert agg.metrics["central_dp/noise_std"] == pytest.approx(expected)
    noise = agg.weights["w"].double()
    assert float(noise.std()) == pytest.approx(expected, rel=0.02)
    assert abs(float(noise.mean())) < 5 * expected / math.sqrt(noise.numel())


def test_non_mean_rule_is_noised_at_twice_the_clip_norm():
    g = {"w": torch.zeros(200_000)}
    updates = [Update(f"p{i}", {"w": torch.zeros(200_000)}, 1) for i in range(3)]
    dp = CentralDP(Median(), noise_multiplier=1.0, clip_norm=0.5)
    agg = dp.aggregate(updates, g, seed=7)
    assert agg.metrics["central_dp/noise_std"] == pytest.approx(1.0)
    assert float(agg.weights["w"].std()) == pytest.approx(1.0, rel=0.02)


def test_stateful_inner_is_refused_under_noise():
    gen = torch.Generator().manual_seed(0)
    g = _model(gen)
    with pytest.raises(ConfigError, match="stateful"):
        CentralDP(Momentum(), noise_multiplier=1.0).aggregate(_updates(g, [1.0, 1.0], gen), g)


def test_same_seed_is_byte_identical_and_different_seed_differs():
    gen = torch.Generator().manual_seed(3)
    g = _model(gen)
    updates = _updates(g, [0.5, 2.0, 5.0], gen)
    dp = CentralDP(FedAvg(), noise_multiplier=1.0, clip_norm=1.0)
    ref = canonical_bytes(dp.aggregate(updates, g, seed=2**200 + 11).weights)
    shuffled = list(updates)
    random.Random(0).shuffle(shuffled)
    again = CentralDP(FedAvg(), noise_multiplier=1.0, clip_norm=1.0)
    assert canonical_bytes(again.aggregate(shuffled, g, seed=2**200 + 11).weights) == ref
    assert canonical_bytes(dp.aggregate(updates, g, seed=2**200 + 12).weights) != ref


def test_sigma_zero_is_warning_free_unweighted_mean_of_clipped_updates():
    g = {"w": torch.zeros(2), "b": torch.zeros(1)}
    a = Update("a", {"w": torch.tensor([3.0, 4.0]), "b": torch.tensor([0.0])}, 1)  # norm 5
    b = Update("b", {"w": torch.tensor([0.0, 0.5]), "b": torch.tensor([0.0])}, 99)  # norm .5
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dp = CentralDP(FedAvg(), noise_multiplier=0.0, clip_norm=1.0)
        agg = dp.aggregate([a, b], g, seed=5)
        acc = dp.accountant()
        acc.step()
    # a clipped to (0.6, 0.8); unweighted mean with b despite 99 vs 1 samples
    assert torch.allclose(agg.weights["w"], torch.tensor([0.3, 0.65]))
    assert agg.metrics["central_dp/noise_std"] == 0.0
    assert agg.metrics["central_dp/fraction_clipped"] == 0.5
    assert agg.metrics["central_dp/clip_norm"] == 1.0
    assert acc.epsilon(1e-5) == math.inf


def _run_adaptive(dp: CentralDP, rounds: int, scale: float, seed: int = 0) -> list[float]:
    gen = torch.Generator().manual_seed(seed)
    g = _model(gen)
    state: StrategyState | None = None
    norms = []
    for r in range(rounds):
        agg = dp.aggregate(_updates(g, [scale] * 10, gen), g, state, seed=r)
        norms.append(agg.metrics["central_dp/clip_norm"])
        state = agg.state
    assert state is not None
    norms.append(float(state["central_dp/clip_norm"]))
    return norms


def test_adaptive_clip_norm_moves_toward_the_target_quantile():
    # updates have norm ~ 0.1 * sqrt(45) ~ 0.67; start far above and far below
    too_big = _run_adaptive(
        CentralDP(FedAvg(), noise_multiplier=0.0, clip_norm=20.0, adaptive=True), 60, 0.1
    )
    assert all(b < a for a, b in itertools.pairwise(too_big[:11]))
    assert 0.3 < too_big[-1] < 1.5
    too_small = _run_adaptive(
        CentralDP(FedAvg(), noise_multiplier=0.0, clip_norm=0.01, adaptive=True), 60, 0.1
    )
    assert all(b > a for a, b in itertools.pairwise(too_small[:11]))
    assert 0.3 < too_small[-1] < 1.5
    # with noise on the count, still a decrease from far above
    noisy = _run_adaptive(
        CentralDP(
            FedAvg(), noise_multiplier=0.5, clip_norm=20.0, adaptive=True, clipped_count_stddev=1.0
        ),
        30,
        0.1,
    )
    assert noisy[-1] < noisy[0] / 5
    assert noisy[10] < noisy[0]


def test_adaptive_split_and_impossible_settings():
    sigma, sigma_b = 1.0, 2.0
    eff = effective_noise_multiplier(sigma, sigma_b)
    assert eff == pytest.approx((1.0 - 1 / 16) ** -0.5)
    assert eff**-2 + (2 * sigma_b) ** -2 == pytest.approx(sigma**-2)
    dp = CentralDP(FedAvg(), 1.0, clip_norm=2.0, adaptive=True, clipped_count_stddev=sigma_b)
    assert dp.noise_std(4, 2.0) == pytest.approx(eff * 2.0 / 4)
    with pytest.raises(ConfigError, match="too small"):
        effective_noise_multiplier(1.0, 0.5)
    with pytest.raises(ConfigError, match="too small"):
        CentralAccountant(1.0, adaptive=True, clipped_count_stddev=0.4)
    with pytest.raises(ConfigError, match="too small"):
        CentralDP(FedAvg(), 1.0, adaptive=True, clipped_count_stddev=0.4)
    # default sigma_b = n/20 is too small for 4 participants at sigma = 1
    gen = torch.Generator().manual_seed(0)
    g = _model(gen)
    with pytest.raises(ConfigError, match="clipped_count_stddev"):
        CentralDP(FedAvg(), 1.0, adaptive=True).aggregate(_updates(g, [1.0] * 4, gen), g)


@pytest.mark.parametrize(("sigma", "q", "rounds"), [(1.1, 1.0, 10), (0.8, 0.3, 50)])
def test_accountant_matches_opacus_stepped_by_hand(sigma, q, rounds):
    acc = CentralAccountant(noise_multiplier=sigma, sample_rate=q)
    by_hand = RDPAccountant()
    for r in range(rounds):
        acc.step(label=f"t/{r}")
        by_hand.step(noise_multiplier=sigma, sample_rate=q)
    acc.step(label="t/0")  # a re-run round costs nothing more
    assert acc.rounds == rounds
    assert acc.epsilon(1e-5) == pytest.approx(by_hand.get_epsilon(delta=1e-5), rel=1e-12)
    # adaptive: accounted at the total sigma, not the larger effective one
    adaptive = CentralAccountant(sigma, q, adaptive=True, clipped_count_stddev=2.0)
    adaptive.step(rounds)
    assert adaptive.epsilon(1e-5) == pytest.approx(acc.epsilon(1e-5), rel=1e-12)
    assert adaptive.effective_noise_multiplier > sigma


def test_accountant_round_trips_json():
    acc = CentralAccountant(1.3, 0.5, adaptive=True, clipped_count_stddev=3.0)
    acc.step(label="a/1")
    acc.step(3)
    back = CentralAccountant.from_json(acc.to_json())
    assert back == acc
    assert back.epsilon(1e-6) == acc.epsilon(1e-6) > 0
    assert CentralAccountant(1.0).epsilon(1e-5) == 0.0
