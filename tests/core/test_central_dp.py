"""Central DP with distributed noise: the proposer's share (clip and secret noise), the honest
shares adding up to the configured σ, the aggregate and its state as functions of the committed
updates alone, refused combinations, adaptive clipping without noise, and the central
accountant against Opacus stepped by hand."""

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

from flock_pipeline.aggregation import FedAdam, FedAvgM, FedMedian, Krum
from flock_pipeline.aggregation.central_dp import NORM_TAIL, CentralDP, clip_delta
from flock_pipeline.aggregation.fedavg import FedAvg
from flock_pipeline.aggregation.strategy import Aggregate, Strategy, StrategyState
from flock_pipeline.config import load_config
from flock_pipeline.errors import ConfigError
from flock_pipeline.privacy.central import CentralAccountant
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


D = 400_000
"""Coordinates of the large models the noise statistics are measured on (rel. error ~0.1%)."""


def _committed(dp: CentralDP, g: Weights, raw: Sequence[Weights]) -> list[Update]:
    """What honest proposers with these trained weights commit: each its own share."""
    return [dp.share(Update(f"p{i}", w, 5), g) for i, w in enumerate(raw)]


def test_a_share_is_the_clipped_delta_plus_fresh_secret_noise():
    # Prepare: a delta of norm 100 along all-ones, far beyond C, and little noise so that the
    # clipped signal stands out: σ_s·C = 0.01 per coordinate, 0.01 along the direction.
    g = {"w": torch.zeros(D), "steps": torch.tensor(3, dtype=torch.int64)}
    raw = {"w": torch.full((D,), 100 / math.sqrt(D)), "steps": torch.tensor(9, dtype=torch.int64)}
    dp = CentralDP(FedAvg(), noise_multiplier=0.04, clip_norm=2.0, min_honest=16)
    # Execute
    a, b = _committed(dp, g, [raw, raw])
    # Assert: clipped to C along the delta, noised at σ/√t·C per coordinate, never the same twice
    unit = torch.ones(D, dtype=torch.float64) / math.sqrt(D)
    for u in (a, b):
        delta = u.weights["w"].double()
        along = float(delta @ unit)
        assert along == pytest.approx(2.0, abs=6 * 0.02)
        assert float((delta - along * unit).std()) == pytest.approx(0.01 * 2.0, rel=0.02)
        assert torch.equal(u.weights["steps"], g["steps"])  # integer buffers carry nothing
        assert u.num_samples == 5
    assert a.hash != b.hash


def test_without_noise_the_update_is_committed_as_trained():
    g = {"w": torch.zeros(4)}
    u = Update("p0", {"w": torch.tensor([30.0, 40.0, 0.0, 0.0])}, 3)
    assert CentralDP(FedAvg(), noise_multiplier=0.0, clip_norm=1.0).share(u, g) is u


@pytest.mark.parametrize(("n", "t"), [(4, 4), (6, 4), (2, 4), (3, 1)])
def test_honest_shares_add_up_to_sigma_c_over_n(n, t):
    # n honest proposers with nothing to say (zero deltas): the aggregate is their noise alone.
    sigma, clip = 1.5, 0.8
    g = {"w": torch.zeros(D)}
    dp = CentralDP(FedAvg(), noise_multiplier=sigma, clip_norm=clip, min_honest=t)
    agg = dp.aggregate(_committed(dp, g, [{"w": torch.zeros(D)}] * n), g)
    # σ/√t from each of n: std √n·σ/√t·C/n, the configured σ·C/n once n >= t
    expected = math.sqrt(n) * sigma / math.sqrt(t) * clip / n
    noise = agg.weights["w"].double()
    assert float(noise.std()) == pytest.approx(expected, rel=0.02)
    assert abs(float(noise.mean())) < 6 * expected / math.sqrt(D)
    assert agg.metrics["central_dp/noise_multiplier_effective"] == pytest.approx(
        sigma * math.sqrt(min(n, t) / t)
    )
    assert agg.metrics["central_dp/share_std"] == pytest.approx(sigma / math.sqrt(t) * clip)
    assert agg.metrics["central_dp/fraction_clipped"] == 0.0  # honest updates pass the re-clip


def test_the_aggregate_adds_no_noise_and_is_a_function_of_the_committed_updates():
    gen = torch.Generator().manual_seed(3)
    g = _model(gen)
    dp = CentralDP(FedAvg(), noise_multiplier=1.0, clip_norm=1.0, min_honest=3)
    committed = _committed(dp, g, [u.weights for u in _updates(g, [0.5, 2.0, 5.0], gen)])
    ref = canonical_bytes(dp.aggregate(committed, g, seed=11).weights)
    shuffled = list(committed)
    random.Random(0).shuffle(shuffled)
    again = CentralDP(FedAvg(), noise_multiplier=1.0, clip_norm=1.0, min_honest=3)
    assert canonical_bytes(again.aggregate(shuffled, g, seed=12).weights) == ref  # any seed
    # exactly the unweighted mean of the committed updates: nothing drawn at aggregation
    plain = FedAvg().aggregate([Update(u.participant, u.weights, 1) for u in committed], g)
    assert canonical_bytes(plain.weights) == ref


def test_the_reclip_bounds_a_proposer_that_skipped_its_clip_and_share():
    g = {"w": torch.zeros(1000)}
    dp = CentralDP(FedAvg(), noise_multiplier=1.0, clip_norm=1.0, min_honest=2)
    honest = _committed(dp, g, [{"w": torch.zeros(1000)}] * 3)
    rogue = Update("rogue", {"w": torch.full((1000,), 1e4)}, 1)
    agg = dp.aggregate([*honest, rogue], g)
    bound = 1.0 * (1 + (1 / math.sqrt(2)) * (math.sqrt(1000) + NORM_TAIL))
    assert agg.metrics["central_dp/reclip_norm"] == pytest.approx(bound)
    assert agg.metrics["central_dp/fraction_clipped"] == 0.25
    # the rogue moves the mean by at most B/n, not by its 1e4·√1000/4
    honest_mean = sum(u.weights["w"].double() for u in honest) / 4
    pull = float((agg.weights["w"].double() - honest_mean).norm())
    assert pull <= bound / 4 * (1 + 1e-5)


@pytest.mark.parametrize(
    "inner", [FedAvgM(server_lr=1.0, momentum=0.9), FedAdam(eta=0.1)], ids=lambda r: r.name
)
def test_published_state_is_computed_from_the_noised_updates_only(inner):
    # The state blob (momentum, Adam moments) is the inner rule's state over the committed,
    # already noised updates: what anyone holding them gets, nothing un-noised.
    gen = torch.Generator().manual_seed(5)
    g = _model(gen)
    dp = CentralDP(inner, noise_multiplier=1.0, clip_norm=0.5, min_honest=2)
    raw = [u.weights for u in _updates(g, [0.3, 0.3, 0.3], gen)]
    committed = _committed(dp, g, raw)
    state: StrategyState | None = None
    for _ in range(2):  # a second round starts from the published state
        agg = dp.aggregate(committed, g, state)
        prev = {k[len("inner/") :]: v for k, v in (state or {}).items() if k.startswith("inner/")}
        plain = inner.aggregate([Update(u.participant, u.weights, 1) for u in committed], g, prev)
        assert canonical_bytes(agg.weights) == canonical_bytes(plain.weights)
        assert set(agg.state) == {f"inner/{k}" for k in plain.state} | {"central_dp/clip_norm"}
        assert all(torch.equal(agg.state[f"inner/{k}"], v) for k, v in plain.state.items())
        assert float(agg.state["central_dp/clip_norm"]) == 0.5  # the public C, fixed
        state = agg.state
    # and it is not what the un-noised clipped updates would have given
    clean = CentralDP(inner, noise_multiplier=0.0, clip_norm=0.5).aggregate(
        [Update(f"p{i}", w, 5) for i, w in enumerate(raw)], g
    )
    first = dp.aggregate(committed, g)
    assert any(not torch.equal(first.state[k], clean.state[k]) for k in first.state
               if k.startswith("inner/") and first.state[k].is_floating_point())  # fmt: skip


def test_a_rule_that_is_not_a_mean_needs_every_update_to_carry_the_whole_noise():
    with pytest.raises(ConfigError, match=r"not a mean.*min_honest: 1"):
        CentralDP(FedMedian(), noise_multiplier=1.0, min_honest=2)
    with pytest.raises(ConfigError, match="not a mean"):
        load_config(overrides={"aggregation.strategy": "krum",
                               "aggregation.params": {"num_malicious": 1},
                               "aggregation.central_dp": {"min_honest": 3}})  # fmt: skip
    # t = 1: each committed update is private on its own, so any rule's output is too
    dp = CentralDP(Krum(num_malicious=0), noise_multiplier=1.0, clip_norm=0.5)
    g = {"w": torch.zeros(10)}
    agg = dp.aggregate(_committed(dp, g, [{"w": torch.zeros(10)}] * 3), g)
    assert agg.metrics["central_dp/share_std"] == pytest.approx(0.5)
    assert agg.metrics["central_dp/noise_multiplier_effective"] == pytest.approx(1.0)
    CentralDP(FedMedian(), noise_multiplier=0.0, min_honest=2)  # no noise, nothing to add up


def test_adaptive_clipping_and_bad_min_honest_are_refused_under_noise():
    with pytest.raises(ConfigError, match="adaptive"):
        CentralDP(FedAvg(), noise_multiplier=1.0, adaptive=True)
    with pytest.raises(ConfigError, match="adaptive"):
        load_config(overrides={"aggregation.central_dp": {"adaptive": True}})
    with pytest.raises(ConfigError, match="min_honest"):
        CentralDP(FedAvg(), noise_multiplier=1.0, min_honest=0)
    with pytest.raises(ConfigError, match="min_honest"):
        load_config(overrides={"aggregation.central_dp": {"min_honest": 0}})


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
    assert agg.metrics["central_dp/share_std"] == 0.0
    assert agg.metrics["central_dp/fraction_clipped"] == 0.5
    assert agg.metrics["central_dp/clip_norm"] == 1.0
    assert agg.metrics["central_dp/reclip_norm"] == 1.0
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


@pytest.mark.parametrize(("sigma", "q", "rounds"), [(1.1, 1.0, 10), (0.8, 0.3, 50)])
def test_accountant_matches_opacus_stepped_by_hand(sigma, q, rounds):
    acc = CentralAccountant(noise_multiplier=sigma, sample_rate=q)
    by_hand = RDPAccountant()
    for r in range(rounds):
        acc.step(label=f"t/{r}")
        by_hand.step(noise_multiplier=sigma, sample_rate=q)
    acc.step(label="t/0")  # a round is accounted once
    assert acc.rounds == rounds
    assert acc.epsilon(1e-5) == pytest.approx(by_hand.get_epsilon(delta=1e-5), rel=1e-12)
    assert acc.update_epsilon(1e-5) == acc.epsilon(1e-5)  # t = 1: each update carries all of σ


def test_accountant_states_both_bounds_given_t_honest_proposers():
    # Prepare: σ = 2 given t = 4 honest proposers, 3 full rounds and one with only 2 updates
    acc = CentralAccountant(noise_multiplier=2.0, min_honest=4)
    for r in range(3):
        acc.step(label=str(r))
    acc.step(label="3", noise_multiplier=2.0 * math.sqrt(2 / 4))
    # Execute: the same rounds by hand
    models, single = RDPAccountant(), RDPAccountant()
    for _ in range(3):
        models.step(noise_multiplier=2.0, sample_rate=1.0)
    models.step(noise_multiplier=math.sqrt(2), sample_rate=1.0)
    for _ in range(4):
        single.step(noise_multiplier=1.0, sample_rate=1.0)  # each share: σ/√t = 1
    # Assert
    assert acc.epsilon(1e-5) == pytest.approx(models.get_epsilon(delta=1e-5), rel=1e-12)
    assert acc.update_epsilon(1e-5) == pytest.approx(single.get_epsilon(delta=1e-5), rel=1e-12)
    assert acc.update_epsilon(1e-5) > acc.epsilon(1e-5)
    with pytest.raises(ConfigError, match="noise multiplier"):
        acc.step(noise_multiplier=3.0)  # no round holds at more than the configured σ
    with pytest.raises(ConfigError, match="min_honest"):
        CentralAccountant(1.0, min_honest=0)
    assert CentralDP(FedAvg(), 2.0, min_honest=4).accountant() == CentralAccountant(2.0, 1.0, 4)


def test_accountant_round_trips_json():
    acc = CentralAccountant(1.3, 0.5, min_honest=3)
    acc.step(label="a/1")
    acc.step(3, noise_multiplier=1.0)
    back = CentralAccountant.from_json(acc.to_json())
    assert back == acc
    assert back.epsilon(1e-6) == acc.epsilon(1e-6) > 0
    assert CentralAccountant(1.0).epsilon(1e-5) == 0.0
