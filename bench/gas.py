"""Gas of every FlockAlliance call, and of finalize/claim as the number of participants grows.

Runs on the in-process py-evm chain (same EVM rules and gas schedule as anvil and Base). With N
participants and the pipeline's defaults every one of them proposes and about max(3, N/2) vote
(at least four: two reveal, so each one's update is scored by the other); one voter does nothing
(reported as a no-show) and one commits without revealing (slashed on settlement). A round is
started (its seed requested), then drawn once the seed's future block is mined; the second
round's request is left to lapse and renewed first. A third task is cancelled and its pool
reclaimed. Settlement is O(1) per account, so a claim in the same settlement position must cost
the same at 4, 16 and 64: the headline compares the claim of the round's first settler, an
honest voter that also proposed (paid from both pots, other accounts still to settle). Claims in
other positions differ whatever N is (the last settler of a pot zeroes its counters and gets a
storage refund), so their maximum or median over a round mixes positions. finalize loops once
over the round's updates (at most MAX_UPDATES), so it grows with N here. Accepting votes carry
one contribution per update, so revealVote and finalizeRound are also measured with U = 1, 4, 16
and 64 submitted updates: their marginal gas per update must be constant.

    python bench/gas.py [--quick]    # writes bench/results/gas.json; last line is the headline
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from pathlib import Path
from typing import Any

from flock_pipeline.chain import (
    AllianceClient,
    Outcome,
    Phase,
    TaskConfig,
    deploy,
    dev_signers,
    in_process,
    to_fixed,
)

TOKEN = 10**18
SAMPLES = 1_000  # every participant's registered dataset size
DATA = b"\x33" * 32  # and its registered dataset hash
LAPSE = 300  # blocks after which a future-block seed request has lapsed
GOAL = 1.1
RESULTS = Path(__file__).resolve().parent / "results" / "gas.json"
FULL = 10**18  # a contribution of 1.0
AGGREGATE = b"\x22" * 32
UPDATE_COUNTS = (1, 4, 16, 64)


def _default_voters(n: int) -> int:
    """votersPerRound as the pipeline's configuration sets it for n participants."""
    from flock_pipeline.config import load_config

    return load_config(None, {"participants": n}).committee[1]


def _round_ends(client: AllianceClient, task_id: int, round_: int, phase: Phase) -> int:
    info = client.round_info(task_id, round_)
    return {
        Phase.COMMITTING: info.training_ends,
        Phase.REVEALING: info.commit_ends,
        Phase.FINALIZABLE: info.reveal_ends,
    }[phase]


def measure(n: int) -> dict[str, Any]:
    """Play one task round with n participants; return gas per call (median over callers)."""
    chain = in_process()
    deployer, keeper_signer, *signers = dev_signers(chain, n + 2, label=f"gas-{n}")
    gas: dict[str, list[int]] = {}

    def record(name: str, used: int) -> None:
        gas.setdefault(name, []).append(used)

    started = time.perf_counter()
    deployment = deploy(chain, deployer)
    creator = AllianceClient(chain, deployment, deployer)
    keeper = creator.as_signer(keeper_signer)
    people = [creator.as_signer(s) for s in signers]
    creator.mint(deployer.address, 1_000_000 * TOKEN)
    for person in people:
        record("token.mint", creator.mint(person.address, 10_000 * TOKEN).gas_used)
        approve = person.token.functions.approve(deployment.alliance, 2**255)
        record("token.approve", person.tx.send(approve, person.signer).gas_used)
    creator.tx.send(creator.token.functions.approve(deployment.alliance, 2**255), creator.signer)
    config = TaskConfig(
        model_hash=b"\x11" * 32,
        rounds=2,
        max_participants=n,
        proposers_per_round=n,
        voters_per_round=_default_voters(n),
    )
    for _ in range(50):  # sortition may give too few voters: try another task
        task_id, created = creator.create_task(config)
        record("createTask", created.gas_used)
        for person in people:
            record("stake", person.stake(task_id, 100 * TOKEN, SAMPLES, DATA).gas_used)
        round_, start = keeper.start_round(task_id, draw=False)
        record("startRound", start.gas_used)
        record("drawRound", keeper.draw_round(task_id, round_).gas_used)
        roles = {p.address: p.role_of(task_id, round_) for p in people}
        proposers = [p for p in people if roles[p.address].proposes]
        voters = [p for p in people if roles[p.address].votes]
        if len(proposers) >= 2 and len(voters) >= 4:
            break
    else:
        raise RuntimeError("sortition never gave two proposers and four voters")
    absent, silent, *honest = voters
    submitters = [p for p in proposers if p is not absent]
    topped = submitters[0].stake(task_id, 10 * TOKEN)  # counts from the next round
    record("stake (top-up)", topped.gas_used)
    for index, proposer in enumerate(submitters):
        update = (index + 1).to_bytes(32, "big")
        record("submitUpdate", proposer.submit_update(task_id, round_, update, 100).gas_used)
    chain.advance_to(_round_ends(keeper, task_id, round_, Phase.COMMITTING))
    votes = {}
    full = [FULL] * len(submitters)
    for voter in [silent, *honest]:
        votes[voter.address], committed = voter.commit_vote(
            task_id, round_, AGGREGATE, to_fixed(0.05), contributions=full
        )
        record("commitVote", committed.gas_used)
    chain.advance_to(_round_ends(keeper, task_id, round_, Phase.REVEALING))
    for voter in honest:
        record("revealVote", voter.reveal_vote(votes[voter.address]).gas_used)
    chain.advance_to(_round_ends(keeper, task_id, round_, Phase.FINALIZABLE))
    finalized = keeper.finalize_round(task_id, round_)
    assert finalized is not None
    record("finalizeRound", finalized.gas_used)
    assert keeper.round_info(task_id, round_).outcome is Outcome.ACCEPTED
    record("reportNoShow", keeper.report_no_show(task_id, round_, absent.address).gas_used)
    # the headline's claim: the round's first settler, with both roles (see the docstring)
    first = honest[0]
    assert first in submitters, "every participant proposes"
    record("claim (first settler, both roles)", first.claim(task_id)[1].gas_used)
    paid = [p for p in submitters if p is not silent and p is not first]
    record("settle", keeper.settle(task_id, paid[0].address).gas_used)
    for person in paid:
        record("claim (reward)", person.claim(task_id)[1].gas_used)
    record("claim (reward and slash)", silent.claim(task_id)[1].gas_used)
    record("claim (finalizer share)", keeper.claim(task_id)[1].gas_used)
    record("claim (again, nothing due)", paid[-1].claim(task_id)[1].gas_used)
    record("requestUnstake", honest[0].request_unstake(task_id, 100 * TOKEN).gas_used)
    last, again = keeper.start_round(task_id, draw=False)
    record("startRound", again.gas_used)
    chain.mine(LAPSE)
    renew = keeper.alliance.functions.renewSeed(task_id, last)
    record("renewSeed", keeper.tx.send(renew, keeper.signer).gas_used)
    record("drawRound", keeper.draw_round(task_id, last).gas_used)
    chain.advance_to(_round_ends(keeper, task_id, last, Phase.FINALIZABLE))
    record("finalizeRound (empty round)", (keeper.finalize_round(task_id, last) or again).gas_used)
    chain.advance(config.unbonding_delay)
    record("withdraw", honest[0].withdraw(task_id).gas_used)
    record("reclaimPool", creator.reclaim_pool(task_id)[1].gas_used)
    ended, _ = creator.create_task(config)
    record("cancelTask", creator.cancel_task(ended).gas_used)
    record("reclaimPool (cancelled)", creator.reclaim_pool(ended)[1].gas_used)
    claims = gas["claim (reward)"]
    return {
        "participants": n,
        "proposers": len(proposers),
        "voters": len(voters),
        "updates": len(submitters),
        "seconds": round(time.perf_counter() - started, 2),
        "finalize": gas["finalizeRound"][0],
        "claim_first_settler": gas["claim (first settler, both roles)"][0],
        "claim_max": max(claims),
        "claim_median": int(statistics.median(claims)),
        "calls": {name: int(statistics.median(values)) for name, values in gas.items()},
    }


def measure_by_updates(counts: tuple[int, ...] = UPDATE_COUNTS) -> dict[str, Any]:
    """revealVote and finalizeRound gas of a round with U updates, for each U in `counts`.

    One task, one round per U: U participants that are not among the two chosen voters submit,
    the two voters commit and reveal an accepting vote with one contribution per update, the
    round is finalized (an accepted round: finalize computes every update's part). The first
    reveal writes each update's accumulator from zero, the second updates it.
    """
    chain = in_process()
    n = max(counts) + 12
    deployer, *signers = dev_signers(chain, n + 1, label="gas-updates")
    creator = AllianceClient(chain, deploy(chain, deployer), deployer)
    people = [creator.as_signer(s) for s in signers]
    creator.mint(deployer.address, 1_000_000 * TOKEN)
    for client in [creator, *people]:
        if client is not creator:
            creator.mint(client.address, 1_000 * TOKEN)
        approve = client.token.functions.approve(creator.deployment.alliance, 2**255)
        client.tx.send(approve, client.signer)
    config = TaskConfig(
        model_hash=b"\x11" * 32,
        rounds=4 * len(counts),
        max_participants=n,
        proposers_per_round=n,
        voters_per_round=6,
    )
    task_id, _ = creator.create_task(config)
    for person in people:
        person.stake(task_id, 100 * TOKEN, SAMPLES, DATA)
    gas: dict[int, dict[str, int]] = {}
    for count in counts:
        while count not in gas:
            round_, _ = creator.start_round(task_id)
            roles = {p.address: p.role_of(task_id, round_) for p in people}
            voters = [p for p in people if roles[p.address].votes][:2]
            proposers = [p for p in people if roles[p.address].proposes and p not in voters]
            if len(proposers) >= count and len(voters) == 2:
                for index, proposer in enumerate(proposers[:count]):
                    proposer.submit_update(task_id, round_, (index + 1).to_bytes(32, "big"), 10)
                chain.advance_to(_round_ends(creator, task_id, round_, Phase.COMMITTING))
                votes = [
                    v.commit_vote(
                        task_id, round_, AGGREGATE, to_fixed(0.05), contributions=[FULL] * count
                    )[0]
                    for v in voters
                ]
                chain.advance_to(_round_ends(creator, task_id, round_, Phase.REVEALING))
                first, later = (
                    v.reveal_vote(vote).gas_used for v, vote in zip(voters, votes, strict=True)
                )
                chain.advance_to(_round_ends(creator, task_id, round_, Phase.FINALIZABLE))
                finalized = creator.finalize_round(task_id, round_)
                assert finalized is not None
                assert creator.round_info(task_id, round_).outcome is Outcome.ACCEPTED
                gas[count] = {"first": first, "later": later, "finalize": finalized.gas_used}
            else:
                chain.advance_to(_round_ends(creator, task_id, round_, Phase.FINALIZABLE))
                creator.finalize_round(task_id, round_)
    low, high = min(counts), max(counts)
    kinds = ("first", "later", "finalize")
    return {
        "updates": {str(c): g for c, g in gas.items()},
        "marginal_per_update": {
            kind: round((gas[high][kind] - gas[low][kind]) / (high - low)) for kind in kinds
        },
        "marginal_by_step": {
            f"{a}->{b}": {kind: round((gas[b][kind] - gas[a][kind]) / (b - a)) for kind in kinds}
            for a, b in itertools.pairwise(counts)
        },
    }


def main() -> None:
    """Measure, print the table, write JSON, print the headline last."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4, 16 and 64 participants only")
    args = parser.parse_args()
    sizes = (4, 16, 64) if args.quick else (4, 16, 64, 128)
    runs = [measure(n) for n in sizes]
    names = list(runs[0]["calls"])
    header = "".join(f"{'N=' + str(r['participants']):>10}" for r in runs)
    print(f"{'call (median gas)':<30}{header}")
    for name in names:
        print(f"{name:<30}" + "".join(f"{r['calls'].get(name, 0):>10}" for r in runs))
    small = next(r for r in runs if r["participants"] == 4)
    big = next(r for r in runs if r["participants"] == 64)
    # Settlement per account is O(1): a claim in the same position costs the same whatever the
    # number of participants. (finalize grows with the round's updates by design; its marginal
    # gas per update is below.)
    ratio = big["claim_first_settler"] / small["claim_first_settler"]
    by_updates = measure_by_updates()
    print(f"{'gas with U updates':<30}{'reveal 1st':>12}{'reveal 2nd':>12}{'finalize':>12}")
    for count, used in by_updates["updates"].items():
        row = "".join(f"{used[k]:>12}" for k in ("first", "later", "finalize"))
        print(f"{'U=' + count:<30}{row}")
    marginal = by_updates["marginal_per_update"]
    row = "".join(f"{marginal[k]:>12}" for k in ("first", "later", "finalize"))
    print(f"{'marginal gas / update':<30}{row}")
    reveal = {  # the shape bench/render_docs.py reads
        "updates": {
            c: {"first": g["first"], "later": g["later"]} for c, g in by_updates["updates"].items()
        },
        "marginal_per_contribution": {k: marginal[k] for k in ("first", "later")},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "quick": args.quick,
                "runs": runs,
                "reveal": reveal,
                "by_updates": by_updates,
                "headline": {
                    "metric": "claim_gas_ratio_64_vs_4_participants",
                    "value": round(ratio, 4),
                    "goal": GOAL,
                    "better": "lower",
                },
            },
            indent=2,
        )
        + "\n"
    )
    print(
        json.dumps(
            {
                "metric": "claim_gas_ratio_64_vs_4_participants",
                "value": round(ratio, 4),
                "goal": GOAL,
                "better": "lower",
                "finalize_gas": {str(r["participants"]): r["finalize"] for r in runs},
                "claim_gas_first_settler": {
                    str(r["participants"]): r["claim_first_settler"] for r in runs
                },
                "claim_gas_max": {str(r["participants"]): r["claim_max"] for r in runs},
                "reveal_gas_per_contribution": reveal["marginal_per_contribution"],
                "finalize_gas_per_update": marginal["finalize"],
                "quick": args.quick,
            }
        )
    )


if __name__ == "__main__":
    main()
