"""The pieces of a participant worker's duty runs that the multi-host test cannot pin down on
its own: how a run dispatched ahead waits for its phase, that one duty and round acts once per
process, and the TLS context Prefect's clients share on a plain-http API."""

from __future__ import annotations

import ssl
import threading
import time
import uuid
from types import SimpleNamespace
from typing import Any

import prefect.client.orchestration as orchestration
import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings

import flows.participant as duty
from flock_pipeline.chain import Phase
from flows.workers import share_plain_http_tls_context


class _Log:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, msg: str, *args: Any) -> None:
        self.lines.append(msg % args)

    warning = debug = info


class _Eth:
    """A dev chain's block number: a new block at every read, or (``mining=False``) none."""

    def __init__(self, mining: bool = True) -> None:
        self.mining, self.block, self.reads = mining, 0, 0

    @property
    def block_number(self) -> int:
        self.reads += 1
        self.block += int(self.mining)
        return self.block


def _participant(phases: list[Phase], deadline: float = 60.0, mining: bool = True) -> Any:
    """A participant whose chain reports ``phases`` in turn (the last one from then on)."""
    seen = iter(phases)
    last = [phases[0]]
    reads = [0]

    def phase_of(task_id: int, r: int) -> Phase:
        reads[0] += 1
        last[0] = next(seen, last[0])
        return last[0]

    cfg = SimpleNamespace(
        chain=SimpleNamespace(training_seconds=3600, commit_seconds=600, reveal_seconds=600),
        workers=SimpleNamespace(deadline_seconds=deadline),
    )
    w3 = SimpleNamespace(eth=_Eth(mining))
    client = SimpleNamespace(phase_of=phase_of, chain=SimpleNamespace(kind="anvil", w3=w3))
    return SimpleNamespace(id="p0", task_id=1, cfg=cfg, client=client, phase_reads=reads)


@pytest.fixture
def not_cancelled(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """What the run's own state says, settable by the test (False: not cancelled)."""
    answer = [False]
    monkeypatch.setattr(duty, "_own_run_cancelled", lambda: answer[0])
    return answer


def test_a_run_dispatched_ahead_acts_when_its_phase_begins(not_cancelled: list[bool]) -> None:
    p = _participant([Phase.NOT_STARTED, Phase.TRAINING, Phase.TRAINING, Phase.COMMITTING])
    assert duty.wait_for_phase(p, 0, Phase.COMMITTING, _Log())


def test_a_waiting_run_reads_the_phase_only_when_a_block_was_mined(
    not_cancelled: list[bool],
) -> None:
    """On a dev chain a poll asks for the block number; the phase's own ``eth_call`` is made
    when a block was mined, or a second after it was last made."""
    p = _participant([Phase.NOT_STARTED, Phase.TRAINING, Phase.COMMITTING], mining=False)
    began = time.monotonic()
    assert duty.wait_for_phase(p, 0, Phase.COMMITTING, _Log())
    took = time.monotonic() - began
    assert took >= 1.5  # two phase reads after the first, each a second after the last
    assert p.phase_reads[0] == 3
    assert p.client.chain.w3.eth.reads > 3 * p.phase_reads[0]  # it polled the block number
    mined = _participant([Phase.NOT_STARTED, Phase.TRAINING, Phase.COMMITTING])
    assert duty.wait_for_phase(mined, 0, Phase.COMMITTING, _Log())
    assert mined.client.chain.w3.eth.reads == 3  # a new block at each poll: the phase read too


@pytest.mark.parametrize("past", [Phase.REVEALING, Phase.FINALIZABLE, Phase.FINALIZED])
def test_a_run_that_finds_its_phase_over_does_nothing(
    past: Phase, not_cancelled: list[bool]
) -> None:
    """A void round, or a worker that took the run up too late: the phase went by."""
    assert not duty.wait_for_phase(_participant([past]), 0, Phase.COMMITTING, _Log())
    waited = _participant([Phase.TRAINING, past])
    assert not duty.wait_for_phase(waited, 0, Phase.COMMITTING, _Log())


def test_a_run_the_coordinator_gave_up_does_not_act(not_cancelled: list[bool]) -> None:
    """Cancelled while it waited (checked before it acts too): a resumed coordinator has
    dispatched its own run for the same duty."""
    not_cancelled[0] = True
    assert not duty.wait_for_phase(_participant([Phase.COMMITTING]), 0, Phase.COMMITTING, _Log())
    assert not duty.wait_for_phase(
        _participant([Phase.TRAINING, Phase.COMMITTING]), 0, Phase.COMMITTING, _Log()
    )


def test_a_round_that_never_gets_there_is_given_up(not_cancelled: list[bool]) -> None:
    """The coordinator died mid-round: the run abstains after the time the round's earlier
    phases may take (three deadlines on a dev chain), not never."""
    log = _Log()
    began = time.monotonic()
    assert not duty.wait_for_phase(_participant([Phase.TRAINING], deadline=0.1), 0,
                                   Phase.COMMITTING, log)  # fmt: skip
    assert time.monotonic() - began < 5
    assert any("did not reach COMMITTING" in line for line in log.lines)


def test_one_run_at_a_time_acts_for_a_duty_and_round() -> None:
    inside, most = [0], [0]
    lock = threading.Lock()

    def act() -> None:
        with duty._acting("train", 7):
            with lock:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
            time.sleep(0.05)
            with lock:
                inside[0] -= 1

    threads = [threading.Thread(target=act) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert most[0] == 1
    with duty._acting("train", 8), duty._acting("validate", 7):  # other keys: no wait
        pass


@pytest.fixture
def prefect_ssl(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever a test does to Prefect's client module's ``ssl`` is undone after it."""
    monkeypatch.setattr(orchestration, "ssl", ssl)


@pytest.mark.parametrize("url", ["http://127.0.0.1:4200/api", None])
def test_on_a_plain_http_api_prefect_clients_share_one_tls_context(
    url: str | None, prefect_ssl: None
) -> None:
    with temporary_settings(updates={PREFECT_API_URL: url}):
        assert share_plain_http_tls_context()
        assert share_plain_http_tls_context()  # once is enough; a second call changes nothing
        # both kinds of client are made (and take the shared context) without a server
        orchestration.PrefectClient("http://127.0.0.1:4200/api")
        orchestration.SyncPrefectClient("http://127.0.0.1:4200/api")
    module = getattr(orchestration, "ssl")  # noqa: B009  # not an attribute it declares
    made = module.create_default_context()
    assert made is module.create_default_context()
    assert isinstance(made, ssl.SSLContext) and made.verify_mode == ssl.CERT_REQUIRED


def test_on_an_https_api_prefect_keeps_its_own_tls_contexts(prefect_ssl: None) -> None:
    with temporary_settings(updates={PREFECT_API_URL: "https://prefect.example/api"}):
        assert not share_plain_http_tls_context()
    assert getattr(orchestration, "ssl") is ssl  # noqa: B009
    # ... and so does a process that shared one on http and then moved to https
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:4200/api"}):
        assert share_plain_http_tls_context()
    module = getattr(orchestration, "ssl")  # noqa: B009
    with temporary_settings(updates={PREFECT_API_URL: "https://prefect.example/api"}):
        assert module.create_default_context() is not module.create_default_context()


class _Run(SimpleNamespace):
    pass


class _Server:
    """What the coordinator reads of a phase's runs: receipts (artifacts) and states."""

    def __init__(self) -> None:
        self.states: dict[Any, Any] = {}
        self.receipts: dict[Any, str] = {}

    def __enter__(self) -> _Server:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def read_artifacts(self, flow_run_filter: Any) -> list[Any]:
        wanted = set(flow_run_filter.id.any_)
        return [SimpleNamespace(flow_run_id=i, data=d) for i, d in self.receipts.items()
                if i in wanted]  # fmt: skip

    def read_flow_runs(self, flow_run_filter: Any, limit: int) -> list[Any]:
        wanted = set(flow_run_filter.id.any_)
        return [SimpleNamespace(id=i, state=s) for i, s in self.states.items() if i in wanted]

    def set_flow_run_state(self, *args: Any, **kwargs: Any) -> None:
        pass


def test_a_vote_run_that_crashes_in_its_phase_is_dispatched_once_more(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its worker was killed after the phase began and started again (it marks the killed run
    Crashed): the coordinator dispatches the duty again, once, within the phase's deadline."""
    import json as _json

    from prefect.states import Crashed, Running

    import flows.workers as workers

    mark = duty.RECEIPT_MARK
    server = _Server()
    monkeypatch.setattr(workers, "get_client", lambda sync_client=True: server)
    old, new = _Run(id=uuid.uuid4()), _Run(id=uuid.uuid4())
    server.states = {old.id: Crashed(), new.id: Running()}
    dispatched: list[tuple[str, list[str], dict[str, Any]]] = []

    def dispatch(duty: str, pids: list[str], params: dict[str, Any], r: int | None) -> Any:
        dispatched.append((duty, pids, params))
        server.receipts[new.id] = f"{mark}\n```json\n{_json.dumps({'committed': True})}\n```"
        return {pids[0]: new}

    coordinator = SimpleNamespace(cfg=SimpleNamespace(workers=SimpleNamespace(deadline_seconds=30)))
    duties = object.__new__(workers.WorkerDuties)
    duties.c, duties.log, duties.poll_seconds = coordinator, _Log(), 0.01  # type: ignore[assignment]
    monkeypatch.setattr(duties, "_dispatch", dispatch)
    params = {"round_index": 2, "state_hash": None}
    found = duties._await("validate", {"p3": old}, 2, params)
    assert found == {"p3": {"committed": True}}
    assert dispatched == [("validate", ["p3"], params)]

    # ... but a training run is not repeated, and neither is a run that crashed twice
    server.receipts.clear()
    dispatched.clear()
    assert duties._await("train", {"p3": old}, 2) == {"p3": None} and not dispatched
    server.states[new.id] = Crashed()

    def dispatch_again(*args: Any) -> Any:
        dispatched.append(args)
        return {"p3": new}

    monkeypatch.setattr(duties, "_dispatch", dispatch_again)
    assert duties._await("validate", {"p3": old}, 2, params) == {"p3": None}
    assert len(dispatched) == 1


@pytest.mark.parametrize(
    ("committee", "duties_ahead"),
    [
        ((4, 4), ["train", "validate", "reveal"]),  # the default: everyone proposes and votes
        ((4, 1), ["train"]),
        ((1, 2), ["validate", "reveal"]),
        ((1, 1), []),  # a sampled committee: most runs would have nothing to do
    ],
)
def test_the_first_rounds_runs_go_out_before_it_is_drawn(
    committee: tuple[int, int], duties_ahead: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before round 1 is drawn, each duty's runs go to every member where the task expects to
    draw at least half of them for it, with the parameters the round will have (no strategy
    state before the first round)."""
    import flows.workers as workers

    duties = object.__new__(workers.WorkerDuties)
    duties.c = SimpleNamespace(cfg=SimpleNamespace(committee=committee))  # type: ignore[assignment]
    calls: list[tuple[int, str, list[str], dict[str, Any]]] = []
    monkeypatch.setattr(duties, "_ahead", lambda *args: calls.append(args))
    members = ["p0", "p1", "p2", "p3"]
    duties._first_round_ahead(members)
    assert [duty for _, duty, _, _ in calls] == duties_ahead
    assert all(r == 0 and pids == members for r, _, pids, _ in calls)
    params = {duty: p for _, duty, _, p in calls}
    assert params.get("train", {"round_index": 0, "global_hash": None}) == {
        "round_index": 0, "global_hash": None}  # fmt: skip
    assert params.get("validate", {"round_index": 0, "state_hash": None}) == {
        "round_index": 0, "state_hash": None}  # fmt: skip
