"""Committee capture: how often a coalition of dishonest voters decides a round, by committee size.

A voter is paid when it sides with the round's outcome and is never slashed for being outvoted
(an honest voter is outvoted by its own data's noise too). So a coalition that reverses its
measurement loses nothing when outvoted and is paid whenever it holds the majority of a round's
revealed voting weight: no pay rule can both pay the majority side and make a majority
unprofitable. The bar is the usual one, that a coalition holding less than half of the stake
never decides a round, and what meets it is the committee size ``chain.voters_per_round`` (V).

Three tables, all with the real sortition rule (``flock_pipeline.protocol.roles``: the odds are
the integer rule the contract computes, ``ceil((V * s) << 64 / S)`` draws of 2**64; the weight
is ``flock_pipeline.protocol.settlement.role_weight``):

- sortition alone, equal stakes: the coalition against honest voters that all vote the other
  way. Per round: P(capture), the coalition's weight above the honest weight, and P(tie), equal
  weights, which voids the round. Exact (a convolution of the per-account weight laws), checked
  against a Monte Carlo over ``roles.is_voter`` with random seeds and addresses;
- the anchor workload's real judgements (``bench/results/vote_rules.json``, written by
  ``bench/vote_rules.py``: each participant's measured loss difference on the round's honest
  aggregate, judged by the chosen rule, z = 1): a coalition of k of the 10 reverses, the honest
  rest vote what they measured, over every coalition of k and every committee sortition can draw
  (exact, equal stakes): P(the honest round is rejected) and P(void by a tie); and, with no
  coalition, how often an all-honest committee ties;
- unequal stakes: a coalition split into small accounts, with V = n and with V = n * stake /
  min_stake, the default (every account at or above min_stake is then drawn with certainty and
  weighs its stake).

    .venv/bin/python bench/committee_capture.py           # the tables and 20,000 MC rounds
    .venv/bin/python bench/committee_capture.py --quick   # 2,000 MC rounds

Writes bench/results/committee_capture[_quick].json; the last stdout line is the headline: the
per-round capture probability of a 30 % coalition on the anchor (10 equal stakes) under the
default committee (goal 0).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import secrets
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from _common import environment  # noqa: E402

from flock_pipeline.config import load_config  # noqa: E402
from flock_pipeline.protocol.roles import is_voter  # noqa: E402
from flock_pipeline.protocol.settlement import role_weight  # noqa: E402

RESULTS = ROOT / "bench" / "results"
VOTE_RULES = RESULTS / "vote_rules.json"
CHOSEN_RULE_Z = 1.0  # vote.tolerance's default: accept iff (mean(d) + z se(d)) / loss_old >= 0
STAKE = 100  # whole tokens; only ratios matter
MIN_STAKE = 50  # chain.min_stake's default
SHARES = (0.1, 0.2, 0.3, 0.4, 0.45)
ROUNDS = (3, 10)  # per-run figures: the quick robustness bench's and the anchor's round counts

Law = dict[int, float]


def odds(stake: int, total: int, voters: int) -> float:
    """P(selected) as ``roles._selected`` decides it: draw * S < (V * s) << 64, draw uniform in
    [0, 2**64)."""
    if stake == 0 or total == 0:
        return 0.0
    hits = min(2**64, -(-((voters * stake) << 64) // total))
    return hits / 2**64


def weight_law(stakes: Sequence[int], total: int, voters: int) -> Law:
    """The law of the summed voting weight of these accounts (each drawn independently)."""
    law: Law = {0: 1.0}
    for s in stakes:
        p, w = odds(s, total, voters), role_weight(s, total, voters)
        nxt: Law = {}
        for x, q in law.items():
            if p < 1.0:
                nxt[x] = nxt.get(x, 0.0) + q * (1.0 - p)
            if p > 0.0:
                nxt[x + w] = nxt.get(x + w, 0.0) + q * p
        law = nxt
    return law


def capture(coalition: Sequence[int], honest: Sequence[int], voters: int) -> dict[str, float]:
    """P(coalition weight > honest weight), P(equal and nonzero): capture and tie (void)."""
    total = sum(coalition) + sum(honest)
    a, h = weight_law(coalition, total, voters), weight_law(honest, total, voters)
    win = sum(pa * ph for x, pa in a.items() for y, ph in h.items() if x > y)
    tie = sum(pa * ph for x, pa in a.items() for y, ph in h.items() if x == y and x > 0)
    return {"capture": win, "tie": tie}


def per_run(p: float) -> dict[str, float]:
    """P(at least one captured round) in runs of each of ``ROUNDS`` rounds."""
    return {str(r): 1.0 - (1.0 - p) ** r for r in ROUNDS}


def default_voters(n: int) -> int:
    """The configuration's default voters_per_round for n participants at the default stakes."""
    return load_config(overrides={"participants": n}).committee[1]


def equal_stakes_table() -> list[dict[str, Any]]:
    """Sortition alone, equal stakes: n = 10 (shares 0.1-0.4) and n = 20 (0.1-0.45)."""
    rows = []
    old = {10: 5, 20: 10}  # min(n, max(3, n // 2)), the default before
    for n, sizes in ((10, (3, 5, 7, 8, 9, 10)), (20, (5, 10, 15, 18, 20))):
        for share in SHARES:
            k = round(share * n)
            if not math.isclose(k / n, share):
                continue
            for v in sorted({*sizes, default_voters(n)}):
                c = capture([STAKE] * k, [STAKE] * (n - k), v)
                rows.append({
                    "participants": n, "coalition": k, "share": share, "voters_per_round": v,
                    "old_default": v == old[n], "default": v == default_voters(n),
                    **c, "capture_per_run": per_run(c["capture"]),
                })  # fmt: skip
    return rows


def monte_carlo(n: int, k: int, voters: int, rounds: int) -> dict[str, float]:
    """The same figure over the real ``roles.is_voter``: random round seeds and addresses."""
    total = n * STAKE
    w = role_weight(STAKE, total, voters)
    win = tie = 0
    for _ in range(rounds):
        seed = secrets.token_bytes(32)
        drawn = [is_voter(seed, "0x" + secrets.token_hex(20), STAKE, total, voters)
                 for _ in range(n)]  # fmt: skip
        a, h = w * sum(drawn[:k]), w * sum(drawn[k:])
        win += a > h
        tie += a == h and a > 0
    return {"capture": win / rounds, "tie": tie / rounds, "rounds": rounds}


def anchor_judgements() -> list[list[bool]]:
    """Per round of the anchor run, whether each participant's measurement accepts the honest
    aggregate under the chosen rule (the flows round the score to 6 decimals)."""
    payload = json.loads(VOTE_RULES.read_text())
    return [
        [round((mean_d + CHOSEN_RULE_Z * se_d) / loss_old, 6) >= 0
         for _n, loss_old, mean_d, se_d, *_ in by_round["honest"]]
        for by_round in payload["voter_stats"]["by_round"]
    ]  # fmt: skip


def anchor_table(judgements: list[list[bool]]) -> list[dict[str, Any]]:
    """A reversing coalition of k among the anchor's 10 (equal stakes), the others voting what
    they measured, over every coalition and every committee: P(rejected), P(void by a tie),
    P(accepted). k = 0 is the all-honest run."""
    n = len(judgements[0])
    rows = []
    for v in sorted({5, 7, n, default_voters(n)}):
        p = odds(STAKE, n * STAKE, v)
        committees = [
            (members, p ** len(members) * (1 - p) ** (n - len(members)))
            for size in range(n + 1)
            for members in itertools.combinations(range(n), size)
            if p**size * (1 - p) ** (n - size) > 0
        ]
        for k in range(5):
            coalitions = list(itertools.combinations(range(n), k))
            out = {"rejected": 0.0, "void": 0.0, "accepted": 0.0}
            for accepts in judgements:
                for bad in coalitions:
                    for members, q in committees:
                        yes = sum(1 for i in members if i not in bad and accepts[i])
                        no = len(members) - yes
                        key = "void" if yes == no else "accepted" if yes > no else "rejected"
                        out[key] += q / (len(coalitions) * len(judgements))
            rows.append({"voters_per_round": v, "coalition": k, "default": v == default_voters(n),
                         **out})  # fmt: skip
    return rows


def unequal_table() -> list[dict[str, Any]]:
    """A coalition of small accounts against a few large honest ones, V = n and the default."""
    cases = [
        ("30 %: 6 x 50 against 1 x 700", [50] * 6, [700]),
        ("40 %: 8 x 50 against 2 x 300", [50] * 8, [300, 300]),
        ("40 %: 4 x 100 against 4 x 50 + 1 x 400", [100] * 4, [50] * 4 + [400]),
        ("45 %: 9 x 50 against 1 x 550", [50] * 9, [550]),
    ]
    rows = []
    for label, bad, good in cases:
        n, total = len(bad) + len(good), sum(bad) + sum(good)
        everyone = -(-total // MIN_STAKE)  # V >= S / min_stake: every eligible account drawn
        for v in (n, everyone):
            row = {"case": label, "participants": n, "voters_per_round": v,
                   "every_account_drawn": v == everyone}  # fmt: skip
            rows.append(row | capture(bad, good, v))
    return rows


def _pct(x: float) -> str:
    if x == 0:
        return "0"
    return f"{100 * x:.2g} %" if x < 0.01 else f"{100 * x:.1f} %"


def _markdown(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def tables(payload: dict[str, Any]) -> list[dict[str, str]]:
    """The tables as render_docs takes them (docs/protocol.md carries the first two)."""

    def v_cell(r: dict[str, Any]) -> str:
        marks = [m for m, on in (("old default", r.get("old_default")),
                                 ("default", r.get("default"))) if on]  # fmt: skip
        return f"{r['voters_per_round']}" + (f" ({', '.join(marks)})" if marks else "")

    eq = _markdown(
        ["n", "coalition (stake share)", "V", "capture / round", "tie / round",
         "capture / 10 rounds"],
        [[r["participants"], f"{r['coalition']} ({100 * r['share']:.0f} %)", v_cell(r),
          _pct(r["capture"]), _pct(r["tie"]), _pct(r["capture_per_run"]["10"])]
         for r in payload["equal_stakes"]],
    )  # fmt: skip
    anchor = _markdown(
        ["V", "reversing coalition of 10", "rejected", "void (tie)", "accepted"],
        [[v_cell(r), r["coalition"], _pct(r["rejected"]), _pct(r["void"]), _pct(r["accepted"])]
         for r in payload["anchor"]],
    )  # fmt: skip
    unequal = _markdown(
        ["case", "V", "capture / round", "tie / round"],
        [[r["case"], f"{r['voters_per_round']}{' (all drawn)' if r['every_account_drawn'] else ''}",
          _pct(r["capture"]), _pct(r["tie"])] for r in payload["unequal_stakes"]],
    )  # fmt: skip
    mc = "; ".join(
        f"n = {m['participants']}, k = {m['coalition']}, V = {m['voters_per_round']}: capture "
        f"{_pct(m['capture'])} (exact {_pct(m['exact_capture'])}), tie {_pct(m['tie'])} "
        f"(exact {_pct(m['exact_tie'])}) over {m['rounds']:,} rounds"
        for m in payload["monte_carlo"]
    )
    return [
        {"title": "Sortition alone, equal stakes: the coalition against unanimous honest voters",
         "markdown": eq, "note": f"Monte Carlo over roles.is_voter: {mc}."},
        {"title": "The anchor's judgements of its honest aggregates, a coalition reversing",
         "markdown": anchor,
         "note": "Equal stakes, every coalition of k of the 10 and every committee sortition "
         "draws, over the 10 rounds of the anchor run in bench/results/vote_rules.json; "
         "k = 0 is all honest."},
        {"title": "Unequal stakes: a coalition of small accounts (S = 1000, min_stake 50)",
         "markdown": unequal},
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2,000 Monte Carlo rounds")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    mc_rounds = 2_000 if args.quick else 20_000
    payload: dict[str, Any] = {"benchmark": "committee_capture", "quick": args.quick}
    payload["equal_stakes"] = equal_stakes_table()
    payload["anchor"] = anchor_table(anchor_judgements())
    payload["unequal_stakes"] = unequal_table()
    payload["monte_carlo"] = []
    for n, k, v in ((10, 3, 5), (10, 3, default_voters(10))):
        exact = capture([STAKE] * k, [STAKE] * (n - k), v)
        payload["monte_carlo"].append({
            "participants": n, "coalition": k, "voters_per_round": v,
            **monte_carlo(n, k, v, mc_rounds),
            "exact_capture": exact["capture"], "exact_tie": exact["tie"],
        })  # fmt: skip
    payload["settings"] = {
        "sortition": "flock_pipeline.protocol.roles (exact integer odds), role_weight",
        "judgements": f"{VOTE_RULES.relative_to(ROOT)}: voter_stats, honest candidate, z = "
        f"{CHOSEN_RULE_Z}",
        "stake": STAKE,
    }
    payload["environment"] = environment(load_before)
    payload["seconds_total"] = round(time.perf_counter() - t0, 1)
    default = next(r for r in payload["equal_stakes"]
                   if r["participants"] == 10 and r["coalition"] == 3 and r["default"])  # fmt: skip
    payload["headline"] = {
        "metric": "capture_per_round_30pct_anchor_default", "value": default["capture"],
        "goal": 0.0, "better": "lower", "voters_per_round": default["voters_per_round"],
    }  # fmt: skip
    payload["title"] = "Committee capture" + (" (quick)" if args.quick else "")
    payload["tables"] = tables(payload)
    out = args.out or RESULTS / f"committee_capture{'_quick' if args.quick else ''}.json"
    out.write_text(json.dumps(payload, indent=1) + "\n")
    for table in payload["tables"]:
        print(f"\n{table['title']}\n{table['markdown']}\n{table.get('note', '')}")
    print(json.dumps(payload["headline"]))


if __name__ == "__main__":
    main()
