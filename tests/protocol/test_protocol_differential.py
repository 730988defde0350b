"""The Python model and the contract take the same decisions: the differential test.

A hypothesis state machine sends the same random calls to FlockAlliance on the in-process
py-evm chain and to protocol.Alliance: stakes (registering, keeping or changing the dataset),
unstakes and withdrawals, round starts, blocks mined and draws of the seed (the model takes
what the chain's FutureBlockSeed answers, lapsed requests and their renewal included),
submissions (more samples than registered included), commits and reveals of random hashes,
scores and contributions (out of range ones and flags included), skipped reveals, clock jumps
to and around each deadline and the task's, finalizations, no-show reports, settlements,
claims, the creator's cancel and the pool's reclaim. Single calls probe the refusals;
`play_round` drives a whole round with random choices so that runs reach settled rounds and
the last round.

After every call both must agree on success or on the revert's error name and arguments, and
on the events of settlement, slashing, no-show reports and finalization; after a successful
call also on the task's buckets, the stakes, claimables and token balances of the accounts it
involved, and the touched rounds' info, records, tallies and updates. Every account is compared
after each phase of a played round, and everything, every round and checkpointed stake, at the
end of each run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import astuple, dataclass, replace
from typing import Any, ClassVar

import pytest
from eth_utils.crypto import keccak
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from protocol_chain import GENESIS_TIME, TOKEN, EvmTask, Reverted

from flock_pipeline.protocol import (
    SCORE_SCALE,
    Alliance,
    Outcome,
    Phase,
    ProtocolRevert,
    SeedState,
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
    proposers_per_round=3,
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
    deadline=GENESIS_TIME + 700,  # within reach of a run: some runs end by it
)
A, B, C = b"\xa1" * 32, b"\xb2" * 32, b"\xc3" * 32
HASHES = [A, A, A, A, B, B, C, bytes(32)]
S = SCORE_SCALE
SCORES = [S, S // 3, S // 3, 0, -1, -S // 2, -S, S + 1, -S - 1]
CONTRIBUTIONS = [S, S, S // 2, S // 7, 0, -S // 4, -S, -S, S + 1, -S - 1]
COUNTS = ["all"] * 6 + ["none", "short", "long"]
AMOUNTS = [25 * TOKEN + 3, 60 * TOKEN, 10 * TOKEN, 5 * TOKEN, 0]
REGISTRATIONS = ["keep", "keep", "keep", "same", "new", "no hash"]
MINED = [2, 0, 1, 2, 3]  # blocks mined before a draw: the seed waits for 2
LAPSE = 300  # blocks past blockhash's reach: the seed request lapses
people = st.integers(0, PEOPLE - 1)
anyone = st.integers(-1, PEOPLE - 1)  # -1: the creator
offsets = st.sampled_from([0, 0, 0, 0, -1, 1])

_ROUND_CALLS = (
    "drawRound",
    "renewSeed",
    "submitUpdate",
    "commitVote",
    "revealVote",
    "finalizeRound",
    "reportNoShow",
)
_PAYING_CALLS = ("stake", "withdraw", "claim", "reclaimPool")
_EVENTS = {
    "Settled": ("settlements", ("round", "account", "reward", "slashed")),
    "Slashed": ("slashes", ("account", "amount", "beneficiary", "cut")),
    "NoShowReported": ("no_shows", ("round", "account", "reporter")),
    "RoundFinalized": (
        "finalizations",
        ("round", "outcome", "aggregateHash", "globalModelHash", "reward", "allotted",
         "acceptWeight", "rejectWeight", "finalizer"),
    ),
}  # fmt: skip


@dataclass(frozen=True)
class Ballot:
    aggregate_hash: bytes
    score: int
    contributions: tuple[int, ...]
    salt: bytes


def result_of(call: Callable[[], Any], revert: type[Exception]) -> tuple[Any, ...]:
    """("ok",) or ("revert", error name, error arguments)."""
    try:
        call()
    except revert as exc:
        return ("revert", exc.name, tuple(exc.error_args))  # type: ignore[attr-defined]
    return ("ok",)


class AllianceMachine(RuleBasedStateMachine):
    evm: ClassVar[EvmTask]
    params: ClassVar[TaskParams] = PARAMS

    def __init__(self) -> None:
        super().__init__()
        self.evm.reset()
        self.model = Alliance(self.params, self.evm.creator, task_id=1, now=self.evm.timestamp())
        self.ballots: dict[tuple[int, str], Ballot] = {}
        self.salts = 0
        self.task_seen = astuple(self.model.task_state())
        self.last: tuple[Any, ...] = ()
        """The last call's result on both: ("ok",) or ("revert", name, arguments)."""

    # -------------------------------------------------------------- plumbing

    def account(self, index: int) -> str:
        return self.evm.creator if index < 0 else self.evm.people[index]

    def current(self, offset: int = 0) -> int:
        return max(self.model.task.rounds_started - 1 + offset, 0)

    def started(self) -> bool:
        return self.model.task.rounds_started > 0

    def waiting(self) -> bool:
        return self.started() and self.model.phase_of(self.current()) is Phase.WAITING_FOR_SEED

    def anyone_active(self) -> bool:
        return any(self.model.participant_of(a).active for a in self.evm.people)

    def anyone_unbonding(self) -> bool:
        return any(self.model.participant_of(a).unbonding for a in self.evm.people)

    def anything_to_settle(self) -> bool:
        """Someone has tokens to claim or a finalized round to settle."""
        m = self.model
        for account in (self.evm.creator, *self.evm.people):
            pending = m.participant_of(account).pending_round
            if m.claimable_of(account) or (pending and m.round_info(pending - 1).finalized):
                return True
        return False

    def act(
        self, sender: str, function: str, args: tuple[Any, ...], model: Callable[[], Any]
    ) -> bool:
        """Send the call to both and assert they agree; returns whether it went through."""
        self.model.now = self.evm.timestamp() + 1
        marks = {name: len(getattr(self.model, attr)) for name, (attr, _) in _EVENTS.items()}
        logs: list[tuple[str, dict[str, Any]]] = []
        chain = result_of(lambda: logs.extend(self.evm.send(sender, function, *args)), Reverted)
        mine = result_of(model, ProtocolRevert)
        assert chain == mine, f"{function}{args} from {sender}: chain {chain}, model {mine}"
        self.last = chain
        if chain[0] != "ok":  # the chain did not change, nor may the model
            assert astuple(self.model.task_state()) == self.task_seen
            return False
        involved = {sender, *(a for a in args if isinstance(a, str))}
        rounds = {int(args[1])} if function in _ROUND_CALLS else set()
        for name, (attr, keys) in _EVENTS.items():
            new = getattr(self.model, attr)[marks[name] :]
            seen = [tuple(e[k] for k in keys) for event, e in logs if event == name]
            assert seen == [astuple(e) for e in new], name
            for event in new:
                involved |= {v for v in astuple(event) if isinstance(v, str)}
                rounds |= {event.round} if hasattr(event, "round") else set()
        if function == "startRound":
            rounds.add(self.current())
        self.compare_task()
        self.compare_accounts(involved, tokens=function in _PAYING_CALLS)
        for r in rounds:
            self.compare_round(r, involved, [args[2]] if function == "revealVote" else [])
        return True

    def compare_task(self) -> None:
        self.task_seen = astuple(self.model.task_state())
        assert tuple(self.evm.view("taskState", 1)) == self.task_seen
        assert tuple(self.evm.view("taskParams", 1)) == self.model.params.as_abi()
        assert self.evm.balance_of(self.evm.vault) == self.model.balance()
        assert self.evm.balance_of(self.evm.address) == 0  # the vault holds every token

    def compare_accounts(self, accounts: set[str], tokens: bool = True) -> None:
        m, evm = self.model, self.evm
        for account in accounts:
            assert evm.view("claimableOf", 1, account) == m.claimable_of(account), account
            participant = evm.view("participantOf", 1, account)
            assert tuple(participant) == astuple(m.participant_of(account)), account
            if tokens:
                start = evm.start_balances.get(account, 0)
                assert evm.balance_of(account) == start + m.net_paid.get(account, 0), account

    def compare_round(self, r: int, accounts: set[str], hashes: list[bytes]) -> None:
        m, evm = self.model, self.evm
        assert tuple(evm.view("roundInfo", 1, r)) == astuple(m.round_info(r)), r
        for account in accounts:
            assert tuple(evm.view("recordOf", 1, r, account)) == astuple(m.record_of(r, account))
        for h in hashes:
            assert tuple(evm.view("tallyOf", 1, r, h)) == astuple(m.tally_of(r, h))
        assert [tuple(u) for u in evm.view("roundUpdates", 1, r)] == [
            astuple(u) for u in m.round_updates(r)
        ]

    def compare_all(self, rounds: set[int]) -> None:
        everyone = {self.evm.creator, *self.evm.people}
        self.compare_task()
        self.compare_accounts(everyone)
        for r in rounds:
            self.compare_round(r, everyone, [A, B, C])

    # -------------------------------------------------------------- single calls

    @initialize(
        stakes=st.lists(
            st.sampled_from([40 * TOKEN + 1, 100 * TOKEN, 10 * TOKEN, 0]),
            min_size=PEOPLE,
            max_size=PEOPLE,
        )
    )
    def stake_first(self, stakes: list[int]) -> None:
        for index, amount in enumerate(stakes):
            if amount:
                self.stake(index, amount, "same")

    def registration(self, who: int, kind: str) -> tuple[int, bytes]:
        """(samples, dataset hash) a stake passes: zeros to keep, the account's own, another
        (larger) one, or a half-empty one."""
        own = (1_000 + who, keccak(f"data/{who}".encode()))
        return {
            "keep": (0, bytes(32)),
            "same": own,
            "new": (own[0] + 7, keccak(f"other/{who}".encode())),
            "no hash": (own[0], bytes(32)),
        }[kind]

    @rule(who=people, amount=st.sampled_from(AMOUNTS), kind=st.sampled_from(REGISTRATIONS))
    def stake(self, who: int, amount: int, kind: str) -> None:
        a = self.account(who)
        n, h = self.registration(who, kind)
        self.act(a, "stake", (1, amount, n, h), lambda: self.model.stake(a, amount, n, h))

    @precondition(lambda self: self.anyone_active())
    @rule(who=people, amount=st.sampled_from([*AMOUNTS, -1]))
    def request_unstake(self, who: int, amount: int) -> None:
        """Unstake an amount, or (-1) everything active."""
        a = self.account(who)
        amount = self.model.participant_of(a).active if amount < 0 else amount
        self.act(a, "requestUnstake", (1, amount), lambda: self.model.request_unstake(a, amount))

    @precondition(lambda self: self.anyone_unbonding())
    @rule(who=people)
    def withdraw(self, who: int) -> None:
        a = self.account(who)
        self.act(a, "withdraw", (1,), lambda: self.model.withdraw(a))

    @rule(who=anyone)
    def start_round(self, who: int) -> None:
        self.act(self.account(who), "startRound", (1,), self.model.request_round)

    @precondition(lambda self: self.started())
    @rule(
        who=anyone,
        mined=st.sampled_from(MINED),
        offset=st.sampled_from([0, 0, 0, -1]),
        lapse=st.booleans(),
    )
    def draw(self, who: int, mined: int, offset: int, lapse: bool = False) -> None:
        """Mine some blocks (or enough for the request to lapse), then draw the round with
        what the seed source answers; renew a lapsed request."""
        self.evm.mine(LAPSE if lapse else mined)
        r = self.current(offset)
        state, seed = self.evm.seed_of(r)
        if self.act(
            self.account(who),
            "drawRound",
            (1, r),
            lambda: self.model.draw_round(r, seed, SeedState(state)),
        ):
            for account in self.evm.people:
                role = self.evm.view("roleOf", 1, r, account)
                assert role == self.model.role_of(r, account), account
        elif state == SeedState.LAPSED:
            self.renew(who, False)

    @precondition(lambda self: self.started())
    @rule(who=anyone, lapse=st.booleans())
    def renew(self, who: int, lapse: bool) -> None:
        self.evm.mine(LAPSE if lapse else 0)
        r = self.current()
        state, _ = self.evm.seed_of(r)
        self.act(
            self.account(who),
            "renewSeed",
            (1, r),
            lambda: self.model.renew_seed(r, SeedState(state)),
        )

    @rule(who=st.sampled_from([-1, -1, 0]), now=st.sampled_from([False] * 5 + [True]))
    def cancel(self, who: int, now: bool) -> None:
        """The creator (or not) cancels, now and then: a cancel ends the run's task."""
        if now:
            a = self.account(who)
            self.act(a, "cancelTask", (1,), lambda: self.model.cancel_task(a))

    def submit_one(self, who: int, r: int, kind: str) -> None:
        a = self.account(who)
        update = bytes(32) if kind == "no hash" else bytes([who + 1, r + 1]) * 16
        registered = self.model.participant_of(a).num_samples
        samples = {"no samples": 0, "too many": registered + 1}.get(kind, 100 + who)
        self.act(
            a,
            "submitUpdate",
            (1, r, update, bytes([who + 1]) * 32, samples),
            lambda: self.model.submit_update(a, r, update, samples),
        )

    @precondition(lambda self: self.started())
    @rule(
        who=people,
        offset=offsets,
        kind=st.sampled_from(["ok", "ok", "no hash", "no samples", "too many"]),
    )
    def submit(self, who: int, offset: int, kind: str) -> None:
        self.submit_one(who, self.current(offset), kind)

    def commit_one(self, who: int, r: int, data: st.DataObject) -> None:
        """Commit a random vote (hash, score, contributions of any count) or a zero
        commitment."""
        h = data.draw(st.sampled_from(HASHES))
        score = data.draw(st.sampled_from(SCORES))
        updates = self.model.round_info(r).updates
        count = data.draw(st.sampled_from(COUNTS))
        size = {"all": updates, "none": 0, "short": max(updates - 1, 0), "long": updates + 1}
        values = data.draw(
            st.lists(st.sampled_from(CONTRIBUTIONS), min_size=size[count], max_size=size[count])
        )
        self.vote(who, r, h, score, values, zero=data.draw(st.sampled_from([False] * 9 + [True])))

    def vote(
        self, who: int, r: int, h: bytes, score: int, values: Sequence[int], zero: bool = False
    ) -> bool:
        """Commit this vote (or a zero commitment); keep it for the reveal."""
        a = self.account(who)
        self.salts += 1
        salt = self.salts.to_bytes(32, "big")
        ballot = Ballot(h, score, tuple(values), salt)
        digest = (
            bytes(32) if zero else vote_commitment(1, r, a, h, score, salt, ballot.contributions)
        )
        if self.act(a, "commitVote", (1, r, digest), lambda: self.model.commit_vote(a, r, digest)):
            self.ballots[(r, a)] = ballot
            return True
        return False

    @rule(who=people, offset=offsets, data=st.data())
    def commit(self, who: int, offset: int, data: st.DataObject) -> None:
        self.commit_one(who, self.current(offset), data)

    def reveal_one(self, who: int, r: int, tamper: bool) -> None:
        """Reveal the kept ballot (or a made-up one), with a wrong salt if `tamper`."""
        a = self.account(who)
        b = self.ballots.get((r, a), Ballot(A, S, (), bytes(32)))
        salt = b"\x99" * 32 if tamper else b.salt
        self.act(
            a,
            "revealVote",
            (1, r, b.aggregate_hash, b.score, list(b.contributions), salt),
            lambda: self.model.reveal_vote(a, r, b.aggregate_hash, b.score, b.contributions, salt),
        )

    @precondition(lambda self: bool(self.ballots))
    @rule(who=people, offset=offsets, tamper=st.sampled_from([False] * 5 + [True]))
    def reveal(self, who: int, offset: int, tamper: bool) -> None:
        self.reveal_one(who, self.current(offset), tamper)

    @precondition(lambda self: self.started())
    @rule(who=anyone, offset=offsets)
    def finalize(self, who: int, offset: int) -> None:
        a, r = self.account(who), self.current(offset)
        self.act(a, "finalizeRound", (1, r), lambda: self.model.finalize_round(a, r))

    @precondition(lambda self: self.started())
    @rule(reporter=anyone, offset=st.sampled_from([0, 0, -1, -2]), who=people)
    def report_no_show(self, reporter: int, offset: int, who: int) -> None:
        by, r, a = self.account(reporter), self.current(offset), self.account(who)
        self.act(by, "reportNoShow", (1, r, a), lambda: self.model.report_no_show(by, r, a))

    @precondition(lambda self: self.anything_to_settle())
    @rule(caller=anyone, who=anyone)
    def settle(self, caller: int, who: int) -> None:
        by, a = self.account(caller), self.account(who)
        self.act(by, "settle", (1, a), lambda: self.model.settle(a))

    @precondition(lambda self: self.anything_to_settle())
    @rule(who=anyone)
    def claim(self, who: int) -> None:
        a = self.account(who)
        self.act(a, "claim", (1,), lambda: self.model.claim(a))

    @precondition(lambda self: self.model.task.pool > 0)
    @rule(who=st.sampled_from([-1, -1, 0]))
    def reclaim_pool(self, who: int) -> None:
        a = self.account(who)
        self.act(a, "reclaimPool", (1,), lambda: self.model.reclaim_pool(a))

    @precondition(lambda self: self.started())
    @rule(
        to=st.sampled_from(
            ["next", "next", "training", "commit", "reveal", "release", "+1", "deadline"]
        ),
        early=st.sampled_from([0, 0, 0, 1]),
    )
    def advance(self, to: str, early: int) -> None:
        """Jump the clock to a deadline of the current round (the next one by preference), to
        the latest unbonding release, to the task's deadline, or by a second; `early` stops a
        second short."""
        info = self.model.round_info(self.current())
        now = self.evm.timestamp() + 1
        deadlines = [t for t in (info.training_ends, info.commit_ends, info.reveal_ends) if t > now]
        targets = {
            "next": deadlines[0] if deadlines else now,
            "training": info.training_ends,
            "commit": info.commit_ends,
            "reveal": info.reveal_ends,
            "release": max(self.model.participant_of(a).release_at for a in self.evm.people),
            "+1": now + 1,
            "deadline": self.model.params.deadline,
        }
        self.evm.next_at(targets[to] - early)
        self.model.now = self.evm.timestamp() + 1

    # -------------------------------------------------------------- whole rounds

    @rule(data=st.data())
    def play_round(self, data: st.DataObject) -> None:
        """Take the current round from wherever it is to finalized, each phase with random
        choices for everyone: who submits, what each voter commits, who reveals or keeps or
        botches its vote; then a few settlements, claims and no-show reports."""
        for _ in range(6):
            r = self.current()
            phase = self.model.phase_of(r)
            if phase is Phase.WAITING_FOR_SEED:
                lapse = data.draw(st.sampled_from([False] * 5 + [True]))
                self.draw(data.draw(anyone), data.draw(st.sampled_from(MINED)), 0, lapse)
                if self.waiting():
                    self.draw(data.draw(anyone), 2, 0)
                if self.model.phase_of(r) is not Phase.TRAINING:
                    break
                continue
            if phase in (Phase.NOT_STARTED, Phase.FINALIZED):
                if phase is Phase.FINALIZED and r == self.params.rounds - 1:
                    self.reclaim_pool(-1)
                    break
                self.start_round(data.draw(anyone))
                if self.waiting():
                    self.draw(data.draw(anyone), data.draw(st.sampled_from(MINED)), 0)
                if self.waiting():
                    self.draw(data.draw(anyone), 2, 0)
                if self.model.phase_of(self.current()) is not Phase.TRAINING:
                    break
                continue
            if phase is Phase.TRAINING:
                for who in range(PEOPLE):
                    kind = data.draw(st.sampled_from(["ok"] * 6 + ["skip", "no hash", "too many"]))
                    if kind != "skip":
                        self.submit_one(who, r, kind)
            elif phase is Phase.COMMITTING:
                for who in range(PEOPLE):
                    if data.draw(st.sampled_from([True] * 5 + [False])):
                        self.commit_one(who, r, data)
            elif phase is Phase.REVEALING:
                for who in range(PEOPLE):
                    if (r, self.account(who)) in self.ballots:
                        choice = data.draw(st.sampled_from(["reveal"] * 6 + ["keep", "tamper"]))
                        if choice != "keep":
                            self.reveal_one(who, r, choice == "tamper")
            else:
                self.finalize(data.draw(anyone), 0)
                for who in range(PEOPLE):
                    after = data.draw(st.sampled_from(["-"] * 3 + ["settle", "claim", "report"]))
                    if after == "settle":
                        self.settle(data.draw(anyone), who)
                    elif after == "claim":
                        self.claim(who)
                    elif after == "report":
                        self.report_no_show(data.draw(anyone), 0, who)
                self.compare_all({r})
                break
            self.advance("next", data.draw(st.sampled_from([0] * 7 + [1])))

    @precondition(lambda self: self.anyone_active())
    @rule(who=people, wait=st.booleans())
    def leave(self, who: int, wait: bool) -> None:
        """Unstake everything, (maybe) wait out the delay, settle and withdraw."""
        self.request_unstake(who, -1)
        if wait:
            self.advance("release", 0)
        self.withdraw(who)

    @invariant()
    def books_balance(self) -> None:
        assert self.model.audit() == []

    def teardown(self) -> None:
        """Everything, every round, every checkpoint."""
        m, evm = self.model, self.evm
        self.compare_all(set(range(m.task.rounds_started)))
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
            max_examples=25,
            stateful_step_count=30,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )


SCRIPTED = replace(PARAMS, proposers_per_round=8, voters_per_round=8)  # everyone has both roles


def test_the_edge_rules_agree_on_scripted_rounds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rounds built to sit on the rules' edges, which random votes rarely hit: a flag by
    exactly half of the scoring stake once the proposer's own vote leaves the denominator, an
    exact half-and-half split between two hashes (Void, and the first to reach the weight
    leads), and an accept/reject tie on the majority hash; with four equal stakes and every
    account both proposer and voter."""

    class Machine(AllianceMachine):
        evm = EvmTask(monkeypatch, SCRIPTED, 4)
        params = SCRIPTED

    m = Machine()
    a, b, c, d = range(4)
    for who in (a, b, c, d):
        m.stake(who, 40 * TOKEN, "same")

    def play(votes: list[tuple[int, bytes, int, list[int]]], reveal_order: list[int]) -> None:
        m.start_round(-1)
        r = m.current()
        m.draw(-1, 2, 0, False)
        for who in (a, b, c, d):
            m.submit_one(who, r, "ok")
        m.advance("next", 0)
        for who, h, score, values in votes:
            assert m.vote(who, r, h, score, values)
        m.advance("next", 0)
        for who in reveal_order:
            m.reveal_one(who, r, False)
        m.advance("next", 0)
        m.finalize(-1, 0)
        for who in (a, b, c, d):
            m.claim(who)
        m.compare_all({r})

    flag, full = -S, S
    # half for B (revealed first: it keeps the lead), half for A: no majority, Void
    play(
        [
            (a, A, full, [full] * 4),
            (b, A, full, [full] * 4),
            (c, B, full, [full] * 4),
            (d, B, full, [full] * 4),
        ],
        [c, d, a, b],
    )
    assert m.model.round_info(0).aggregate_hash == B
    # all for A, half accepting, half rejecting: a tie, Void
    play(
        [(a, A, full, [full] * 4), (b, A, -S // 2, []), (c, A, 0, [0] * 4), (d, A, -1, [0] * 4)],
        [a, b, c, d],
    )
    # a (update 0) flagged by b and c: 2 of the 3 other scorers, exactly 2 / 4 with its own
    play(
        [
            (a, A, full, [full, full, full, full]),
            (b, A, full, [flag, full, full, full]),
            (c, A, full, [flag, full, full, full]),
            (d, A, full, [full, full, full, full]),
        ],
        [a, b, c, d],
    )
    assert m.model.round_updates(2)[0].flagged
    assert [f.outcome for f in m.model.finalizations] == [
        Outcome.VOID,
        Outcome.VOID,
        Outcome.ACCEPTED,
    ]
    m.reclaim_pool(-1)
    m.teardown()


def test_the_seed_registration_and_end_rules_agree_on_scripted_rounds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The new paths in one scripted task, where random sequences seldom line them up: a seed
    request that lapses and is renewed, a draw before the seed is ready, an update claiming
    more samples than registered, a re-registration refused while a round is unsettled and
    taken once it is, a reclaim refused while a round runs, a cancel between rounds, and what
    the end refuses (stake, start) and allows (reclaim, claim, leaving)."""

    class Machine(AllianceMachine):
        evm = EvmTask(monkeypatch, SCRIPTED, 4)
        params = SCRIPTED

    m = Machine()
    a, b, c, d = range(4)

    def then(name: str) -> None:
        assert m.last[:2] == ("revert", name) if name != "ok" else m.last == ("ok",), m.last

    for who in (a, b, c, d):
        m.stake(who, 40 * TOKEN, "same")
    m.start_round(-1)
    m.draw(a, 0, 0)
    then("SeedNotReady")  # the seed's block is not mined yet
    m.draw(a, 0, 0, lapse=True)
    then("ok")  # too late for blockhash: lapsed, then renewed
    assert m.evm.seed_of(0)[0] == SeedState.PENDING
    m.draw(b, 2, 0)
    then("ok")
    assert m.model.phase_of(0) is Phase.TRAINING
    m.submit_one(a, 0, "too many")
    then("TooManySamples")
    m.submit_one(a, 0, "ok")
    m.submit_one(b, 0, "ok")
    m.stake(a, 10 * TOKEN, "new")
    then("PendingSettlement")  # a has an unsettled round
    m.stake(c, 10 * TOKEN, "new")
    then("ok")  # c has none: re-registered
    m.cancel(-1, True)
    then("RoundInProgress")
    m.reclaim_pool(-1)
    then("WrongPhase")  # not the last round, no end yet
    m.advance("next", 0)
    assert m.vote(c, 0, A, S, [S, S]) and m.vote(d, 0, A, S, [S // 2, S])
    m.advance("next", 0)
    m.reveal_one(c, 0, False)
    m.reveal_one(d, 0, False)
    m.advance("next", 0)
    m.finalize(-1, 0)
    m.settle(-1, a)
    m.stake(a, 10 * TOKEN, "new")
    then("ok")  # settled: re-registered
    m.cancel(0, True)
    then("NotCreator")
    m.cancel(-1, True)
    then("ok")  # between rounds: the deadline is now
    for who in (a, b, c, d):
        m.stake(who, 10 * TOKEN, "keep")
        then("TaskEnded")
    m.start_round(-1)
    then("TaskEnded")
    m.cancel(-1, True)
    then("TaskEnded")
    m.reclaim_pool(-1)
    then("ok")
    for who in (a, b, c, d):
        m.claim(who)
        m.leave(who, True)
        then("ok")
    m.claim(-1)
    assert m.model.ended() and m.model.task.pool == 0
    assert [f.outcome for f in m.model.finalizations] == [Outcome.ACCEPTED]
    m.teardown()
