"""The strategy family: hand-computed values, order independence, state across rounds, robustness.

Expected numbers are written out (or spelled as the formula with literal inputs), never produced
by the code under test.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flock_pipeline.aggregation import (
    STRATEGIES,
    Bulyan,
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedMedian,
    FedTrimmedAvg,
    FedYogi,
    Krum,
    MultiKrum,
    build_strategy,
    ordered,
)
from flock_pipeline.aggregation.bulyan import closest_to_median_mean
from flock_pipeline.errors import AggregationError, ConfigError
from flock_pipeline.serialization import canonical_bytes
from flock_pipeline.update import Update


def _w(values: list[float]) -> dict[str, torch.Tensor]:
    return {"w": torch.tensor(values, dtype=torch.float32)}


def _u(pid: str, values: list[float], n: int = 1) -> Update:
    return Update(pid, _w(values), n)


def _close(actual: torch.Tensor, expected: list[float]) -> None:
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=actual.dtype))


def _close64(actual: torch.Tensor, expected: list[float]) -> None:
    torch.testing.assert_close(
        actual, torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=1e-15
    )


# --- FedAvg -------------------------------------------------------------------------------------


def test_fedavg_strategy_is_the_sample_weighted_mean():
    out = FedAvg().aggregate([_u("a", [1.0, 2.0], 1), _u("b", [5.0, 6.0], 3)], _w([0.0, 0.0]))
    # (1·1 + 3·5)/4 = 4, (1·2 + 3·6)/4 = 5
    assert torch.equal(out.weights["w"], torch.tensor([4.0, 5.0]))
    assert out.state == {} and out.selected == ()


# --- FedAvgM ------------------------------------------------------------------------------------


def test_fedavgm_applies_server_momentum_and_carries_it_to_the_next_round():
    strategy = FedAvgM(server_lr=0.5, momentum=0.9)
    # Round 1: mean = [0.25, 1.5]; Δ = global − mean = [0.75, 0.5]; v = Δ;
    # new = [1 − 0.5·0.75, 2 − 0.5·0.5] = [0.625, 1.75]
    r1 = strategy.aggregate([_u("a", [0.0, 2.0]), _u("b", [0.5, 1.0])], _w([1.0, 2.0]))
    assert torch.equal(r1.weights["w"], torch.tensor([0.625, 1.75]))
    _close64(r1.state["momentum/w"], [0.75, 0.5])
    # Round 2 from r1: mean = [0.125, 1.25]; Δ = [0.5, 0.5]; v = 0.9·[0.75, 0.5] + Δ = [1.175, 0.95]
    # new = [0.625 − 0.5·1.175, 1.75 − 0.5·0.95] = [0.0375, 1.275]
    r2 = strategy.aggregate(
        [_u("a", [0.125, 1.25], 2), _u("b", [0.125, 1.25], 5)], r1.weights, r1.state
    )
    _close(r2.weights["w"], [0.0375, 1.275])
    _close64(r2.state["momentum/w"], [1.175, 0.95])


def test_fedavgm_without_momentum_and_unit_lr_is_fedavg():
    updates = [_u("a", [1.0, 2.0], 1), _u("b", [5.0, 6.0], 3)]
    out = FedAvgM(server_lr=1.0, momentum=0.0).aggregate(updates, _w([0.5, -1.0]))
    assert torch.equal(out.weights["w"], torch.tensor([4.0, 5.0]))


# --- FedOpt family ------------------------------------------------------------------------------
# Round 1 uses global [0, 1] and updates averaging to [0.5, 0.75]: Δ1 = [0.5, −0.25].
# Round 2 uses global [1, 1] and updates averaging to [1.0078125, 1.5]: Δ2 = [2^-7, 0.5].

G1, U1 = [0.0, 1.0], [[0.25, 0.5], [0.75, 1.0]]
G2, U2 = [1.0, 1.0], [[1.0078125, 1.5], [1.0078125, 1.5]]
D1, D2 = [0.5, -0.25], [0.0078125, 0.5]


def _round(strategy, g, us, state=None):
    return strategy.aggregate([_u(f"p{i}", v) for i, v in enumerate(us)], _w(g), state)


def test_fedadam_without_bias_correction_matches_reddi_et_al():
    s = FedAdam(eta=0.1, beta_1=0.9, beta_2=0.99, tau=0.05, bias_correction=False)
    r1 = _round(s, G1, U1)
    # m = 0.1·Δ = [0.05, −0.025]; v = 0.01·Δ² = [0.0025, 0.000625]; √v = [0.05, 0.025]
    # new = g + 0.1·m/(√v + 0.05) = [0 + 0.1·0.05/0.1, 1 − 0.1·0.025/0.075] = [0.05, 0.96666…]
    _close(r1.weights["w"], [0.05, 1.0 - 0.1 * 0.025 / 0.075])
    _close64(r1.state["m/w"], [0.05, -0.025])
    _close64(r1.state["v/w"], [0.0025, 0.000625])
    assert int(r1.state["step"]) == 1


def test_fedadam_carries_moments_and_bias_corrects_like_flower():
    s = FedAdam()  # η = 0.1, β1 = 0.9, β2 = 0.99, τ = 1e-3, bias-corrected
    r1 = _round(s, G1, U1)
    eta1 = 0.1 * math.sqrt(1 - 0.99**2) / (1 - 0.9**2)  # ≈ 0.0742460
    m1, v1 = [0.05, -0.025], [0.0025, 0.000625]
    _close(r1.weights["w"], [0 + eta1 * 0.05 / (0.05 + 1e-3), 1 + eta1 * -0.025 / (0.025 + 1e-3)])
    r2 = _round(s, G2, U2, r1.state)
    eta2 = 0.1 * math.sqrt(1 - 0.99**3) / (1 - 0.9**3)
    m2 = [0.9 * m1[i] + 0.1 * D2[i] for i in range(2)]  # [0.04578125, 0.0275]
    v2 = [0.99 * v1[i] + 0.01 * D2[i] ** 2 for i in range(2)]  # [0.00247561…, 0.00311875]
    _close64(r2.state["m/w"], m2)
    _close64(r2.state["v/w"], v2)
    assert int(r2.state["step"]) == 2
    _close(r2.weights["w"], [1 + eta2 * m2[i] / (math.sqrt(v2[i]) + 1e-3) for i in range(2)])


def test_fedyogi_moves_v_by_the_sign_of_v_minus_delta_squared():
    s = FedYogi(eta=0.01, beta_1=0.9, beta_2=0.99, tau=1e-3)
    r1 = _round(s, G1, U1)
    # v starts at 0: v1 = 0 − 0.01·Δ²·sign(0 − Δ²) = 0.01·Δ² = [0.0025, 0.000625]
    _close64(r1.state["v/w"], [0.0025, 0.000625])
    _close(r1.weights["w"], [0.01 * 0.05 / (0.05 + 1e-3), 1 + 0.01 * -0.025 / (0.025 + 1e-3)])
    r2 = _round(s, G2, U2, r1.state)
    # Δ2² = [2^-14, 0.25]: v1 > Δ2² in coordinate 0 (v shrinks), v1 < Δ2² in coordinate 1 (grows)
    v2 = [0.0025 - 0.01 * 2**-14, 0.000625 + 0.01 * 0.25]  # [0.00249939…, 0.003125]
    m2 = [0.9 * 0.05 + 0.1 * D2[0], 0.9 * -0.025 + 0.1 * D2[1]]
    _close64(r2.state["v/w"], v2)
    _close(r2.weights["w"], [1 + 0.01 * m2[i] / (math.sqrt(v2[i]) + 1e-3) for i in range(2)])


def test_fedadagrad_accumulates_squared_pseudo_gradients():
    s = FedAdagrad(eta=0.1, tau=1e-3)  # β1 = 0 like Flower: m = Δ
    r1 = _round(s, G1, U1)
    # v1 = Δ² = [0.25, 0.0625]; new = g + 0.1·Δ/(|Δ| + 1e-3)
    _close64(r1.state["v/w"], [0.25, 0.0625])
    _close(r1.weights["w"], [0.1 * 0.5 / 0.501, 1 - 0.1 * 0.25 / 0.251])
    r2 = _round(s, G2, U2, r1.state)
    v2 = [0.25 + 2**-14, 0.0625 + 0.25]
    _close64(r2.state["v/w"], v2)
    _close64(r2.state["m/w"], D2)
    _close(r2.weights["w"], [1 + 0.1 * D2[i] / (math.sqrt(v2[i]) + 1e-3) for i in range(2)])


def test_stateful_strategies_refuse_a_partial_state():
    r1 = _round(FedAdam(), G1, U1)
    broken = {k: v for k, v in r1.state.items() if k != "v/w"}
    with pytest.raises(AggregationError, match="missing 'v/w'"):
        _round(FedAdam(), G2, U2, broken)
    with pytest.raises(AggregationError, match="shape"):
        FedAvgM().aggregate([_u("a", [1.0])], _w([0.0]), {"momentum/w": torch.zeros(3)})


# --- FedMedian, FedTrimmedAvg -------------------------------------------------------------------


def test_fedmedian_takes_the_coordinate_wise_median():
    updates = [_u("a", [1.0, 5.0, -2.0]), _u("b", [3.0, 4.0, 0.0]), _u("c", [2.0, 100.0, 1.0])]
    out = FedMedian().aggregate(updates, _w([0.0, 0.0, 0.0]))
    assert torch.equal(out.weights["w"], torch.tensor([2.0, 5.0, 0.0]))


def test_fedmedian_of_an_even_count_is_the_mean_of_the_two_middle_values():
    updates = [_u("a", [1.0]), _u("b", [10.0]), _u("c", [2.0]), _u("d", [3.0])]
    # middle values 2 and 3 → 2.5 (torch.median would say 2)
    out = FedMedian().aggregate(updates, _w([0.0]))
    assert torch.equal(out.weights["w"], torch.tensor([2.5]))


def test_fedtrimmedavg_cuts_int_beta_n_values_from_each_end():
    updates = [
        _u("a", [1.0, -50.0]),
        _u("b", [2.0, 0.0]),
        _u("c", [3.0, 1.0]),
        _u("d", [4.0, 2.0]),
        _u("e", [100.0, 3.0], n=1000),  # sample counts are ignored
    ]
    # int(0.2·5) = 1 cut per end: mean(2, 3, 4) = 3, mean(0, 1, 2) = 1
    out = FedTrimmedAvg(beta=0.2).aggregate(updates, _w([0.0, 0.0]))
    assert torch.equal(out.weights["w"], torch.tensor([3.0, 1.0]))
    # int(0.2·4) = 0: the plain unweighted mean (1 + 2 + 3 + 4)/4 = 2.5
    out4 = FedTrimmedAvg(beta=0.2).aggregate(updates[:4], _w([0.0, 0.0]))
    assert torch.equal(out4.weights["w"], torch.tensor([2.5, -11.75]))
    # int(0.25·4) = 1: mean(2, 3) = 2.5, mean(0, 1) = 0.5
    out4b = FedTrimmedAvg(beta=0.25).aggregate(updates[:4], _w([0.0, 0.0]))
    assert torch.equal(out4b.weights["w"], torch.tensor([2.5, 0.5]))


# --- Krum, MultiKrum, Bulyan --------------------------------------------------------------------
# 1-D points a=0, b=1, c=2, d=3.5 and a boosted e=100; f = 1, so n − f − 2 = 2 neighbours.
# Squared distances and scores (sum of the 2 smallest):
#   a: b 1, c 4            → 5        b: a 1, c 1        → 2
#   c: b 1, d 2.25         → 3.25     d: c 2.25, b 6.25  → 8.5
#   e: d 96.5² = 9312.25, c 98² = 9604 → 18916.25
KRUM_POINTS = {"a": 0.0, "b": 1.0, "c": 2.0, "d": 3.5, "e": 100.0}


def _krum_updates(samples: dict[str, int] | None = None) -> list[Update]:
    samples = samples or {}
    return [_u(p, [x], samples.get(p, 1)) for p, x in KRUM_POINTS.items()]


def test_krum_picks_the_update_with_the_lowest_score():
    out = Krum(num_malicious=1).aggregate(_krum_updates(), _w([0.0]))
    assert out.selected == ("b",)
    assert torch.equal(out.weights["w"], torch.tensor([1.0]))
    assert out.metrics["krum_score/b"] == 2.0
    assert out.metrics["krum_score/c"] == 3.25
    assert out.metrics["krum_score/e"] == 18916.25


def test_multikrum_averages_the_best_m_sample_weighted():
    updates = _krum_updates({"a": 2, "b": 1, "c": 1, "e": 50})
    out = MultiKrum(num_malicious=1, num_to_keep=3).aggregate(updates, _w([0.0]))
    # best three: b (2), c (3.25), a (5); (2·0 + 1·1 + 1·2)/4 = 0.75
    assert out.selected == ("b", "c", "a")
    assert torch.equal(out.weights["w"], torch.tensor([0.75]))
    # default m = n − f = 4 drops only the boosted e: (0·2 + 1 + 2 + 3.5)/5 = 1.3
    default = MultiKrum(num_malicious=1).aggregate(updates, _w([0.0]))
    assert default.selected == ("b", "c", "a", "d")
    _close(default.weights["w"], [1.3])


def test_krum_breaks_score_ties_by_the_canonical_order():
    updates = [_u("x", [0.0]), _u("y", [1.0]), _u("z", [2.0])]
    # f = 0, 1 neighbour: x 1, y 1, z 1 — all tied
    out = Krum().aggregate(updates, _w([0.0]))
    assert out.selected == (ordered(updates)[0].participant,)


def test_closest_to_median_mean_breaks_distance_ties_towards_the_smaller_value():
    stack = torch.tensor([[4.0], [0.0], [3.0], [1.0], [1.5]], dtype=torch.float64)
    # median 1.5; distances 0 (1.5), 0.5 (1), then 1.5 for both 0 and 3 → 0 wins
    out = closest_to_median_mean(stack, 3)
    torch.testing.assert_close(out, torch.tensor([(1.5 + 1.0 + 0.0) / 3], dtype=torch.float64))


def test_bulyan_drops_the_boosted_update_and_averages_around_the_median():
    # n = 7, f = 1: θ = 5 selected by repeated Krum, β = 3 averaged around the median.
    values = {"h0": 0.0, "h1": 0.0, "h2": 1.0, "h3": 1.0, "h4": 2.0, "h5": 3.0, "boost": 100.0}
    updates = [_u(p, [x]) for p, x in values.items()]
    out = Bulyan(num_malicious=1).aggregate(updates, _w([0.0]))
    assert len(out.selected) == 5 and "boost" not in out.selected
    # Every 5-subset Krum can reach contains 0, 1, 1 and has median 1; the 3 values closest to 1
    # are 1, 1 and (0 or 2 tie at distance 1 → the smaller) 0: (1 + 1 + 0)/3
    _close(out.weights["w"], [2.0 / 3.0])


def test_bulyan_with_too_few_updates_names_the_requirement():
    updates = [_u(f"p{i}", [float(i)]) for i in range(6)]
    with pytest.raises(AggregationError, match=r"4f \+ 3 = 7 updates, got 6"):
        Bulyan(num_malicious=1).aggregate(updates, _w([0.0]))


@pytest.mark.parametrize(
    "strategy",
    [Krum(num_malicious=2), MultiKrum(num_malicious=2), Bulyan(num_malicious=1)],
    ids=lambda s: s.name,
)
def test_robust_rules_reject_a_boosted_update(strategy):
    g = torch.Generator().manual_seed(7)
    honest = [
        Update(f"h{i}", {"w": 1.0 + 0.1 * torch.randn(20, generator=g)}, 10) for i in range(7)
    ]
    boosted = Update("boost", {"w": 50.0 * (1.0 + 0.1 * torch.randn(20, generator=g))}, 10_000)
    out = strategy.aggregate([*honest, boosted], {"w": torch.ones(20)})
    assert out.selected and "boost" not in out.selected
    assert float((out.weights["w"] - 1.0).abs().max()) < 0.5


# --- every strategy -----------------------------------------------------------------------------


def test_non_float_tensors_are_copied_from_the_global_model():
    global_weights = {"w": torch.zeros(2), "steps": torch.tensor([7], dtype=torch.int64)}
    updates = [
        Update(p, {"w": torch.tensor([x, -x]), "steps": torch.tensor([s])}, 1)
        for p, x, s in [("a", 1.0, 100), ("b", 2.0, 200), ("c", 3.0, 300)]
    ]
    for name, cls in STRATEGIES.items():
        if name == "fedavg":
            continue  # plain fedavg() is kept as it was: it averages every tensor
        out = cls().aggregate(updates, global_weights)
        assert torch.equal(out.weights["steps"], torch.tensor([7])), name


def test_every_strategy_checks_updates_against_the_global_model():
    for cls in STRATEGIES.values():
        with pytest.raises(AggregationError, match=r"evil.*shape"):
            cls().aggregate([_u("good", [1.0, 2.0]), _u("evil", [1.0])], _w([0.0, 0.0]))
        with pytest.raises(AggregationError, match="different architecture"):
            cls().aggregate([_u("a", [1.0])], {"other": torch.zeros(1)})


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    counts=st.lists(st.integers(1, 1000), min_size=7, max_size=8),
)
def test_every_strategy_is_byte_identical_for_every_input_order(seed, counts):
    g = torch.Generator().manual_seed(seed)
    global_weights = {"w": torch.randn(5, generator=g), "b": torch.randn(2, 2, generator=g)}
    updates = [
        Update(
            f"p{i}",
            {k: v + torch.randn(v.shape, generator=g) for k, v in global_weights.items()},
            n,
        )
        for i, n in enumerate(counts)
    ]
    strategies = [cls() for cls in STRATEGIES.values()] + [
        Krum(num_malicious=1),
        MultiKrum(num_malicious=1, num_to_keep=3),
        Bulyan(num_malicious=1),
    ]
    for strategy in strategies:
        first = strategy.aggregate(updates, global_weights)
        state = first.state or None
        second_ref = strategy.aggregate(updates, first.weights, state)
        orders = itertools.islice(itertools.permutations(updates), 1, 6)
        for perm in [list(reversed(updates)), *map(list, orders)]:
            out = strategy.aggregate(perm, global_weights)
            assert canonical_bytes(out.weights) == canonical_bytes(first.weights), strategy
            assert canonical_bytes(out.state) == canonical_bytes(first.state), strategy
            assert out.selected == first.selected and out.metrics == first.metrics
            again = strategy.aggregate(perm, first.weights, state)
            assert canonical_bytes(again.weights) == canonical_bytes(second_ref.weights)
            assert canonical_bytes(again.state) == canonical_bytes(second_ref.state)


def test_a_strategy_that_says_it_keeps_no_state_returns_none():
    """What lets a participant worker's validate run of the next round be dispatched before
    this round is final (``flows.workers``): its aggregate needs no strategy state."""
    g = torch.Generator().manual_seed(3)
    global_weights = {"w": torch.randn(5, generator=g)}
    updates = [Update(f"p{i}", {"w": global_weights["w"] + torch.randn(5, generator=g)}, i + 1)
               for i in range(7)]  # fmt: skip
    stateless = [cls for cls in STRATEGIES.values() if not cls.keeps_state]
    assert {cls.name for cls in stateless} >= {"fedavg", "fedmedian", "krum", "bulyan"}
    for cls in stateless:
        first = cls().aggregate(updates, global_weights)
        assert not first.state, cls.name
        assert not cls().aggregate(updates, first.weights, first.state or None).state, cls.name
    for cls in STRATEGIES.values():  # each that returns a state says it keeps one
        if cls().aggregate(updates, global_weights).state:
            assert cls.keeps_state, cls.name


# --- registry -----------------------------------------------------------------------------------


def test_build_strategy_by_name_with_parameters():
    assert build_strategy("fedavgm", server_lr=1, momentum=0.5) == FedAvgM(1.0, 0.5)
    assert build_strategy("multikrum", num_malicious=2, num_to_keep=None) == MultiKrum(2)
    assert isinstance(build_strategy("bulyan"), Bulyan)
    assert set(STRATEGIES) == {
        "fedavg", "fedavgm", "fedadam", "fedyogi", "fedadagrad",
        "fedmedian", "fedtrimmedavg", "krum", "multikrum", "bulyan",
    }  # fmt: skip


def test_unknown_strategy_is_a_config_error_listing_the_valid_ones():
    with pytest.raises(ConfigError, match=r"'fedsgd'.*fedavg, fedavgm, .*bulyan"):
        build_strategy("fedsgd")


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("fedadam", {"etaa": 0.1}, r"no parameter 'etaa'.*eta, beta_1"),
        ("krum", {"num_to_keep": 3}, r"no parameter 'num_to_keep'"),
        ("fedadagrad", {"beta_2": 0.9}, r"no parameter 'beta_2'"),
        ("fedavgm", {"momentum": "high"}, r"'momentum' must be float"),
        ("krum", {"num_malicious": 1.5}, r"'num_malicious' must be int"),
        ("fedadam", {"bias_correction": 1}, r"'bias_correction' must be bool"),
        ("fedavgm", {"momentum": 1.0}, r"momentum must be in \[0, 1\)"),
        ("fedtrimmedavg", {"beta": 0.5}, r"beta must be in \[0, 0.5\)"),
        ("fedyogi", {"tau": 0}, r"tau must be"),
        ("bulyan", {"num_malicious": -1}, r"num_malicious must be >= 0"),
        ("multikrum", {"num_to_keep": 0}, r"num_to_keep must be >= 1"),
    ],
)
def test_bad_parameters_are_config_errors_naming_the_parameter(name, params, message):
    with pytest.raises(ConfigError, match=message):
        build_strategy(name, **params)


# --- bounded sample weights ---------------------------------------------------------------------

SAMPLE_WEIGHTED = ("fedavg", "fedavgm", "fedadam", "fedyogi", "fedadagrad", "multikrum")


def test_capped_shares_cap_the_largest_and_give_the_rest_to_the_others_by_their_counts():
    from flock_pipeline.aggregation.base import capped_shares

    assert capped_shares([10, 20, 30], 0.5) is None  # 30/60 is at the cap: nothing to do
    assert capped_shares([1, 1, 10**30], 0.5) == [0.25, 0.25, 0.5]
    assert capped_shares([1, 3, 10**30], 0.5) == [0.125, 0.375, 0.5]
    # two inflated claims: both capped, the remainder to the honest ones
    shares = capped_shares([1, 1, 10**6, 10**9], 0.3)
    assert shares is not None
    assert shares[2:] == [0.3, 0.3] and math.isclose(sum(shares), 1.0)
    assert shares[0] == shares[1] == pytest.approx(0.2)
    # a cap below 1/n cannot hold: equal shares, the closest any split gets
    assert capped_shares([1, 2, 3], 0.2) == [1 / 3] * 3


@given(
    counts=st.lists(st.integers(1, 10**12), min_size=1, max_size=8),
    cap=st.floats(0.05, 1.0),
)
@settings(max_examples=200, deadline=None)
def test_capped_shares_sum_to_one_respect_the_cap_and_keep_the_order_of_the_counts(counts, cap):
    from flock_pipeline.aggregation.base import capped_shares

    shares = capped_shares(counts, cap)
    if shares is None:
        assert max(counts) <= cap * sum(counts)
        return
    assert math.isclose(sum(shares), 1.0, rel_tol=1e-9)
    bound = max(cap, 1 / len(counts))
    assert all(s <= bound * (1 + 1e-12) for s in shares)
    for (a, sa), (b, sb) in itertools.combinations(zip(counts, shares, strict=True), 2):
        if a <= b:
            assert sa <= sb * (1 + 1e-12)


@pytest.mark.parametrize("name", SAMPLE_WEIGHTED)
def test_an_inflated_sample_count_cannot_take_over_a_sample_weighted_rule(name):
    # p2 claims 1e30 samples for an update that pulls the first coordinate the other way
    g = _w([0.0, 0.0])
    honest = [_u("p0", [1.0, 0.0], 10), _u("p1", [1.0, 0.2], 10)]
    inflated = _u("p2", [-1.0, 1.0], 10**30)
    plain = build_strategy(name).aggregate([*honest, inflated], g).weights["w"]
    capped = build_strategy(name, max_weight_share=0.5).aggregate([*honest, inflated], g)
    fair = build_strategy(name, max_weight_share=0.5).aggregate(
        [*honest, _u("p2", [-1.0, 1.0], 20)], g
    )

    # without the cap the claim makes it the mean; with it, the claim counts as if it held
    # exactly the others' total (half of the weight) and no more
    if name in ("fedavg", "multikrum"):
        _close(plain, [-1.0, 1.0])
        _close(capped.weights["w"], [0.0, 0.55])
    torch.testing.assert_close(capped.weights["w"], fair.weights["w"])
    assert not torch.allclose(capped.weights["w"], plain)


def test_the_uncapped_path_is_byte_identical_to_plain_sample_weighting():
    # a cap that does not bind must not change a single bit (reproducible runs stay so)
    ups = [_u("a", [0.1, 0.7], 3), _u("b", [0.3, -0.2], 5), _u("c", [0.9, 0.4], 4)]
    g = _w([0.0, 0.0])
    for name in SAMPLE_WEIGHTED:
        plain = build_strategy(name).aggregate(ups, g).weights
        loose = build_strategy(name, max_weight_share=0.5).aggregate(ups, g).weights
        assert canonical_bytes(plain) == canonical_bytes(loose), name


@pytest.mark.parametrize("value", [0.0, -0.1, 1.5, float("nan")])
def test_a_weight_cap_outside_zero_one_is_refused_naming_the_range(value):
    with pytest.raises(ConfigError, match=r"max_weight_share must be in \(0, 1\]"):
        FedAvg(max_weight_share=value)
    with pytest.raises(ConfigError, match=r"max_weight_share.*\(0, 1\]"):
        from flock_pipeline.config import load_config

        load_config(overrides={"aggregation.max_weight_share": value})


def test_the_engines_give_every_sample_weighted_rule_the_configured_cap():
    from flock_pipeline.config import load_config
    from flock_pipeline.round import build_aggregator

    for name in STRATEGIES:
        cfg = load_config(
            overrides={"aggregation.strategy": name, "aggregation.max_weight_share": 0.4}
        )
        rule = build_aggregator(cfg)
        assert getattr(rule, "max_weight_share", None) == (0.4 if rule.sample_weighted else None)
    dp = load_config(
        overrides={"aggregation.central_dp": {"noise_multiplier": 0.5},
                   "aggregation.max_weight_share": 0.4}
    )  # fmt: skip
    assert build_aggregator(dp).inner.max_weight_share == 0.4
    with pytest.raises(ConfigError, match=r"set aggregation\.max_weight_share instead"):
        build_aggregator(load_config(overrides={"aggregation.params": {"max_weight_share": 0.4}}))
