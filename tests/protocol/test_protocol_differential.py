"""The Python model and the contract take the same decisions: the differential test.

A hypothesis state machine sends the same random calls to FlockAlliance on the in-process
py-evm chain and to protocol.Alliance: stakes, unstakes and withdrawals, round starts (the model
takes the chain's seed), submissions, commits and reveals of random hashes, scores and
contributions (out of range ones and flags included), skipped reveals, clock jumps to and
around each deadline, finalizations, no-show reports, settlements, claims and the pool's
reclaim. After every call both must agree on success or on the revert's error name and
arguments, on the events of settlement, slashing and finalization, and on the state: the
task's buckets, every account's stake and claimable, token balances, and the touched rounds'
info, records, tallies and updates. At the end of each run every round, record and
checkpointed stake is compared.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import astuple, dataclass
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)
from protocol_chain import TOKEN, EvmTask, Reverted

from flock_pipeline.protocol import (
    SCORE_SCALE,
    Alliance,
    ProtocolRevert,
    TaskParams,
    vote_commitment,
)

PEOPLE = 5
PARAMS = TaskParams(
    model_hash=b"\x11" * 32,
    rounds=3,
    reward_pool=900 * TOKEN + 7,
    min_stake=10 * TOKEN,
    min_participants=2,
    max_participants=4,
    proposers_per_round=2,
    voters_per_round=3,
    slash_bps=1_500,
    penalty_bps=5_000,
    voter_slash_bps=2_500,
    finalizer_share_bps=1_000,
    proposer_reward_bps=6_000,
    training_duration=60,
    commit_duration=30,
    reveal_duration=30,
    unbonding_delay=150,
)
HASHES = [b"\xa1" * 32, b"\xa1" * 32, b"\xa1" * 32, b"\xb2" * 32, b"\xc3" * 32, bytes(32)]
TALLIED = sorted(set(HASHES) - {bytes(32)})
S = SCORE_SCALE
SCORES = [S, S // 3, 0, -1, -S // 2, -S, S + 1, -S - 1]
CONTRIBUTIONS = [S, S // 2, S // 7, 0, -S // 4, -S, -S, S + 1, -S - 1]
AMOUNTS = [0, 5 * TOKEN, 10 * TOKEN, 25 * TOKEN + 3, 60 * TOKEN]

people = st.integers(0, PEOPLE - 1)
anyone = st.integers(-1, PEOPLE - 1)  # -1: the creator
offsets = st.sampled_from([0, 0, 0, 0, -1, 1])


@dataclass(frozen=True)
class Ballot:
    aggregate_hash: bytes
    score: int
    contributions: tuple[int, ...]
    salt: bytes


def outcome(call: Callable[[], Any], revert: type[Exception]) -> tuple[Any, ...]:
    """("ok",) or ("revert", error name, error arguments)."""
    try:
        call()
    except revert as exc:
        return ("revert", exc.name, tuple(exc.error_args))  # type: ignore[attr-defined]
    return ("ok",)


class AllianceMachine(RuleBasedStateMachine):
    evm: ClassVar[EvmTask]

    def __init__(self) -> None:
        super().__init__()
        self.evm.reset()
        self.model = Alliance(PARAMS, self.evm.creator, task_id=1, now=self.evm.timestamp())
        self.ballots: dict[tuple[int, str], Ballot] = {}
        self.counter = 0

    # -------------------------------------------------------------- plumbing

    def account(self, index: int) -> str:
        return self.evm.creator if index < 0 else self.evm.people[index]

    def current(self, offset: int = 0) -> int:
        return max(self.model.task.rounds_started - 1 + offset, 0)

    def act(
        self, sender: str, function: str, args: tuple[Any, ...], model: Callable[[], Any]
    ) -> bool:
        """Send the call to both; assert they agree; returns whether it went through."""
        self.model.now = self.evm.timestamp() + 1
        marks = (
            len(self.model.settlements),
            len(self.model.slashes),
            len(self.model.finalizations),
            len(self.model.no_shows),
        )
        logs: list[tuple[str, dict[str, Any]]] = []

        def on_chain() -> None:
            logs.extend(self.evm.send(sender, function, *args))

        chain = outcome(on_chain, Reverted)
        mine = outcome(model, ProtocolRevert)
        assert chain == mine, f"{function}{args} from {sender}: chain {chain}, model {mine}"
        if chain[0] != "ok":
            self.compare_task()
            return False
        self.compare_events(logs, marks)
        self.compare_state(sender, self.touched_rounds(args, function, marks))
        return True

    def touched_rounds(
        self, args: tuple[Any, ...], function: str, marks: tuple[int, ...]
    ) -> set[int]:
        rounds = {s.round for s in self.model.settlements[marks[0] :]}
        if function in (
            "submitUpdate",
            "commitVote",
            "revealVote",
            "finalizeRound",
            "reportNoShow",
        ):
            rounds.add(int(args[1]))
        if function == "startRound":
            rounds.add(self.current())
        return rounds

    def compare_events(
        self, logs: list[tuple[str, dict[str, Any]]], marks: tuple[int, ...]
    ) -> None:
        m = self.model
        expected = {
            "Settled": [astuple(e) for e in m.settlements[marks[0] :]],
            "Slashed": [astuple(e) for e in m.slashes[marks[1] :]],
            "RoundFinalized": [astuple(e) for e in m.finalizations[marks[2] :]],
            "NoShowReported": [astuple(e) for e in m.no_shows[marks[3] :]],
        }
        fields = {
            "Settled": ("round", "account", "reward", "slashed"),
            "Slashed": ("account", "amount", "beneficiary", "cut"),
            "RoundFinalized": (
                "round", "outcome", "aggregateHash", "globalModelHash", "reward", "allotted",
                "acceptWeight", "rejectWeight", "finalizer",
            ),
            "NoShowReported": ("round", "account", "reporter"),
        }  # fmt: skip
        for name, keys in fields.items():
            seen = [tuple(args[k] for k in keys) for event, args in logs if event == name]
            assert seen == expected[name], name

    def compare_task(self) -> None:
        assert tuple(self.evm.view("taskState", 1)) == astuple(self.model.task_state())
        assert self.model.audit() == []

    def compare_state(self, sender: str, rounds: set[int]) -> None:
        m, evm = self.model, self.evm
        self.compare_task()
        for account in [evm.creator, *evm.people]:
            assert evm.view("claimableOf", 1, account) == m.claimable_of(account), account
        for account in evm.people:
            assert tuple(evm.view("participantOf", 1, account)) == astuple(
                m.participant_of(account)
            )
        assert evm.balance_of(evm.address) == m.balance()
        assert evm.balance_of(sender) == evm.start_balances[sender] + m.net_paid.get(sender, 0)
        for r in rounds:
            self.compare_round(r)

    def compare_round(self, r: int) -> None:
        m, evm = self.model, self.evm
        assert tuple(evm.view("roundInfo", 1, r)) == astuple(m.round_info(r)), r
        for account in evm.people:
            assert tuple(evm.view("recordOf", 1, r, account)) == astuple(m.record_of(r, account))
        for h in TALLIED:
            assert tuple(evm.view("tallyOf", 1, r, h)) == astuple(m.tally_of(r, h))
        assert [tuple(u) for u in evm.view("roundUpdates", 1, r)] == [
            astuple(u) for u in m.round_updates(r)
        ]

    # -------------------------------------------------------------- rules

    @initialize(
        stakes=st.lists(
            st.sampled_from([0, 10 * TOKEN, 40 * TOKEN + 1, 100 * TOKEN]),
            min_size=PEOPLE,
            max_size=PEOPLE,
        )
    )
    def stake_first(self, stakes: list[int]) -> None:
        for index, amount in enumerate(stakes):
            if amount:
                self.stake(index, amount)
        self.start_round(-1)

    @rule(who=people, amount=st.sampled_from(AMOUNTS))
    def stake(self, who: int, amount: int) -> None:
        a = self.account(who)
        self.act(a, "stake", (1, amount), lambda: self.model.stake(a, amount))

    @rule(who=people, amount=st.sampled_from([*AMOUNTS, -1]))
    def request_unstake(self, who: int, amount: int) -> None:
        a = self.account(who)
        amount = self.model.participant_of(a).active if amount < 0 else amount
        self.act(a, "requestUnstake", (1, amount), lambda: self.model.request_unstake(a, amount))

    @rule(who=people)
    def withdraw(self, who: int) -> None:
        a = self.account(who)
        self.act(a, "withdraw", (1,), lambda: self.model.withdraw(a))

    @rule(who=anyone)
    def start_round(self, who: int) -> None:
        started = self.model.task.rounds_started

        def model() -> None:
            seed = bytes(self.evm.view("roundInfo", 1, started)[0])
            self.model.start_round(seed)

        if self.act(self.account(who), "startRound", (1,), model):
            for account in self.evm.people:
                assert self.evm.view("roleOf", 1, started, account) == self.model.role_of(
                    started, account
                )
                assert self.evm.view("stakeAt", 1, account, started) == self.model.stake_at(
                    account, started
                )

    def submit_one(self, who: int, r: int, kind: str) -> None:
        a = self.account(who)
        update = bytes(32) if kind == "no hash" else bytes([who + 1, r + 1]) * 16
        samples = 0 if kind == "no samples" else 100 + who
        self.act(
            a,
            "submitUpdate",
            (1, r, update, samples),
            lambda: self.model.submit_update(a, r, update, samples),
        )

    @rule(who=people, offset=offsets, kind=st.sampled_from(["ok", "no hash", "no samples"]))
    def submit(self, who: int, offset: int, kind: str) -> None:
        self.submit_one(who, self.current(offset), kind)

    @rule(
        kinds=st.lists(
            st.sampled_from(["ok"] * 6 + ["skip", "no hash"]), min_size=PEOPLE, max_size=PEOPLE
        )
    )
    def submit_all(self, kinds: list[str]) -> None:
        """Everyone tries to submit in the current round (non-proposers are refused)."""
        for who, kind in enumerate(kinds):
            if kind != "skip":
                self.submit_one(who, self.current(), kind)

    def commit_one(self, who: int, r: int, data: st.DataObject) -> None:
        """Commit a random vote: hash, score and contributions (any count), as a valid or a
        zero commitment; keep it for the reveal."""
        a = self.account(who)
        h = data.draw(st.sampled_from(HASHES))
        score = data.draw(st.sampled_from(SCORES))
        updates = self.model.round_info(r).updates
        count = data.draw(st.sampled_from(["all", "all", "all", "none", "short", "long"]))
        size = {"all": updates, "none": 0, "short": max(updates - 1, 0), "long": updates + 1}[count]
        values = tuple(
            data.draw(st.lists(st.sampled_from(CONTRIBUTIONS), min_size=size, max_size=size))
        )
        self.counter += 1
        salt = self.counter.to_bytes(32, "big")
        zero = data.draw(st.sampled_from([False] * 9 + [True]))
        digest = bytes(32) if zero else vote_commitment(1, r, a, h, score, salt, values)
        if self.act(a, "commitVote", (1, r, digest), lambda: self.model.commit_vote(a, r, digest)):
            self.ballots[(r, a)] = Ballot(h, score, values, salt)

    @rule(who=people, offset=offsets, data=st.data())
    def commit(self, who: int, offset: int, data: st.DataObject) -> None:
        self.commit_one(who, self.current(offset), data)

    @rule(data=st.data())
    def commit_all(self, data: st.DataObject) -> None:
        """Everyone commits in the current round, or sits it out."""
        for who in range(PEOPLE):
            if data.draw(st.sampled_from([True] * 4 + [False])):
                self.commit_one(who, self.current(), data)

    def reveal_one(self, who: int, r: int, tamper: bool) -> None:
        """Reveal the kept ballot (or a made-up one), with the wrong salt if `tamper`."""
        a = self.account(who)
        b = self.ballots.get((r, a), Ballot(HASHES[0], S, (), bytes(32)))
        salt = b"\x99" * 32 if tamper else b.salt
        args = (1, r, b.aggregate_hash, b.score, list(b.contributions), salt)
        self.act(
            a,
            "revealVote",
            args,
            lambda: self.model.reveal_vote(a, r, b.aggregate_hash, b.score, b.contributions, salt),
        )

    @rule(who=people, offset=offsets, tamper=st.sampled_from([False] * 5 + [True]))
    def reveal(self, who: int, offset: int, tamper: bool) -> None:
        self.reveal_one(who, self.current(offset), tamper)

    @rule(data=st.data())
    def reveal_all(self, data: st.DataObject) -> None:
        """Every voter with a ballot reveals it, keeps it to itself, or botches the salt."""
        r = self.current()
        for who in range(PEOPLE):
            if (r, self.account(who)) in self.ballots:
                choice = data.draw(st.sampled_from(["reveal"] * 6 + ["keep", "tamper"]))
                if choice != "keep":
                    self.reveal_one(who, r, choice == "tamper")

    @rule(who=anyone, offset=offsets)
    def finalize(self, who: int, offset: int) -> None:
        a, r = self.account(who), self.current(offset)
        self.act(a, "finalizeRound", (1, r), lambda: self.model.finalize_round(a, r))

    @rule(reporter=anyone, offset=st.sampled_from([0, 0, -1, -2]), who=people)
    def report_no_show(self, reporter: int, offset: int, who: int) -> None:
        by, r, a = self.account(reporter), self.current(offset), self.account(who)
        self.act(by, "reportNoShow", (1, r, a), lambda: self.model.report_no_show(by, r, a))

    @rule(caller=anyone, who=anyone)
    def settle(self, caller: int, who: int) -> None:
        by, a = self.account(caller), self.account(who)
        self.act(by, "settle", (1, a), lambda: self.model.settle(a))

    @rule(who=anyone)
    def claim(self, who: int) -> None:
        a = self.account(who)
        self.act(a, "claim", (1,), lambda: self.model.claim(a))

    @rule(who=st.sampled_from([-1, -1, 0]))
    def reclaim_pool(self, who: int) -> None:
        a = self.account(who)
        self.act(a, "reclaimPool", (1,), lambda: self.model.reclaim_pool(a))

    @rule(
        to=st.sampled_from(
            ["next", "next", "next", "training", "commit", "reveal", "release", "+1", "+7"]
        ),
        early=st.sampled_from([0, 0, 0, 1]),
    )
    def advance(self, to: str, early: int) -> None:
        """Jump the clock to a deadline of the current round, the next one by preference (or a
        second before it)."""
        info = self.model.round_info(self.current())
        now = self.evm.timestamp() + 1
        releases = [self.model.participant_of(a).release_at for a in self.evm.people]
        upcoming = [t for t in (info.training_ends, info.commit_ends, info.reveal_ends) if t > now]
        targets = {
            "next": upcoming[0] if upcoming else now,
            "training": info.training_ends,
            "commit": info.commit_ends,
            "reveal": info.reveal_ends,
            "release": max(releases),
            "+1": now + 1,
            "+7": now + 7,
        }
        self.evm.next_at(targets[to] - early)

    @invariant()
    def books_balance(self) -> None:
        assert self.model.audit() == []

    def teardown(self) -> None:
        """Everything, every round."""
        m, evm = self.model, self.evm
        self.compare_state(evm.creator, set(range(m.task.rounds_started)))
        for account in evm.people:
            for r in range(m.task.rounds_started + 1):
                assert evm.view("stakeAt", 1, account, r) == m.stake_at(account, r)
                assert evm.view("roleOf", 1, r, account) == m.role_of(r, account)


def test_the_model_takes_the_contracts_decisions(monkeypatch: pytest.MonkeyPatch) -> None:
    class Machine(AllianceMachine):
        evm = EvmTask(monkeypatch, PARAMS, PEOPLE)

    run_state_machine_as_test(
        Machine,
        settings=settings(
            max_examples=30,
            stateful_step_count=30,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
