"""Participants on their own workers against the in-process engine: the same 4-participant
task (digits, MLP, DP off, everyone proposes and votes), once with each participant as its own
`flock participant start` process, once with every participant inside the task's process.

    .venv/bin/python bench/distributed_overhead.py           # 3 rounds
    .venv/bin/python bench/distributed_overhead.py --quick   # 2 rounds
    .venv/bin/python bench/distributed_overhead.py --workload mnist-cnn   # MNIST 5k, the CNN

A worker round has three duty phases (train, validate, reveal), each a Prefect flow run per
participant dispatched through the server. A round's validate and reveal runs, and the next
round's training runs, are dispatched ahead and wait on the chain for their phase; a phase
ends when the slowest of the four has published its receipt. `added_seconds_per_phase`
reports what a phase costs more than in process. On one machine it also holds the workers'
contention for its cores: four workers, the coordinator, Prefect's server and PostgreSQL.
`cpu_seconds` says how much: the CPU time of each run's processes (`getrusage` of the ended
children) and of the Prefect server over the run (psutil).

Both runs are `flock run` subprocesses on one anvil and one Prefect server started here, on
127.0.0.1, stopped by PID. The Prefect server keeps its state in PostgreSQL, as in production
(`infra/`): five clients polling one SQLite file lose requests to its write lock (503s, each
retried after a back-off) and time that is not the protocol's. `--prefect-db sqlite` measures
that too. Reports the wall-time ratio (workers / in-process) and, from each
participant's traffic.jsonl, the bytes it sent and received per round: blobs (the update it
uploads, the global model and the round's updates it downloads, the aggregate it stores) and
JSON-RPC bodies. Prefect API traffic (orchestration, not data) is not counted.

Writes bench/results/distributed_overhead[_<workload>][_quick].json (no workload suffix for
digits-mlp); the last stdout line is the headline.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _common import environment, isolate_tool_state, markdown  # noqa: E402

TMP = isolate_tool_state("flock-distributed-")

from eth_account import Account  # noqa: E402

from flock_pipeline.chain.anvil import AnvilNode  # noqa: E402
from flock_pipeline.config import load_config  # noqa: E402
from flock_pipeline.data.folder import write_folder  # noqa: E402
from flock_pipeline.faces import stack  # noqa: E402
from flock_pipeline.faces.serve import start_prefect_server  # noqa: E402
from flock_pipeline.protocol.params import dev_key  # noqa: E402
from flock_pipeline.round import initial_weights, prepare_federation  # noqa: E402
from flock_pipeline.serialization import canonical_bytes  # noqa: E402
from flows.participant import TRAFFIC  # noqa: E402
from flows.trial import run_trial  # noqa: E402

RESULTS = ROOT / "bench" / "results"
N = 4
POOL = "flock-bench-pool"


WORKLOADS = {"digits-mlp": ("digits", "mlp"), "mnist-cnn": ("mnist5k", "cnn")}
"""Name -> (data set, model). digits-mlp: a round of well under a second in process, so the
figure is the orchestration's fixed cost per round; mnist-cnn: one where training counts."""


def _config(rounds: int, workload: str) -> dict[str, Any]:
    dataset, model = WORKLOADS[workload]
    return {
        "task": "distributed-bench",
        "participants": N,
        "rounds": rounds,
        "seed": 0,
        "data": {"dataset": dataset},
        "model": {"name": model},
        "training": {"local_epochs": 1},
        "privacy": {"enabled": False},
        "partition": {"scheme": "iid"},
    }


def _children_cpu() -> float:
    """CPU seconds (user + system) of this process's children that have ended: the runs'
    coordinator and workers, each with the processes it waited for."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def _cpu_of(pid: int | None) -> float | None:
    """CPU seconds (user + system) a running process has used so far; None without one."""
    if pid is None:
        return None
    import psutil  # type: ignore[import-untyped]

    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return None
    return float(times.user + times.system)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds instead of 3")
    parser.add_argument(
        "--prefect-db",
        choices=["postgres", "sqlite"],
        default="postgres",
        help="where the Prefect server keeps its state (default: PostgreSQL)",
    )
    parser.add_argument(
        "--workload",
        choices=list(WORKLOADS),
        default="digits-mlp",
        help="data set and model (default: digits-mlp)",
    )
    parser.add_argument(
        "--worker-threads",
        type=int,
        default=None,
        help="torch threads of each worker (default: its share of the cores, at least 1)",
    )
    args = parser.parse_args()
    rounds = 2 if args.quick else 3
    # Four workers on one machine share its cores; each one's torch would otherwise run a
    # thread per core, and four trainings at once oversubscribe them. On machines of their
    # own each would have its cores to itself.
    threads = args.worker_threads or max(1, (os.cpu_count() or 1) // N)
    load_before = os.getloadavg()
    base = _config(rounds, args.workload)
    dataset, model = WORKLOADS[args.workload]
    cfg = load_config(None, {"data_dir": str(TMP / "x"), "participants": N,
                             "data.dataset": dataset, "model.name": model,
                             "partition.scheme": "iid", "seed": 0})  # fmt: skip
    fed = prepare_federation(cfg)
    model_bytes = len(canonical_bytes(initial_weights(cfg, fed)))
    if args.prefect_db == "postgres":
        ports = {"postgres": _port(), "prefect": _port()}
        TMP.chmod(0o711)  # PostgreSQL runs as its own user: it must reach its folder
        stack.up(TMP / "stack", ports=ports, services=("prefect",))
        api = f"http://127.0.0.1:{ports['prefect']}/api"
        stop_server: Callable[[], object] = functools.partial(stack.down, TMP / "stack")
        record = json.loads((TMP / "stack" / "stack.json").read_text())
        server_pid: int | None = int(record["prefect"]["pid"])
    else:
        server = start_prefect_server(TMP / "server", _port(), timeout=180)
        api, stop_server = f"{server.url}/api", server.stop
        server_pid = None
    env = dict(os.environ, PREFECT_API_URL=api)
    node = AnvilNode(TMP / "anvil", port=0)
    node.up(owner="bench")
    try:
        keys = [dev_key("flock-participant", i) for i in range(N)]
        folders = [write_folder(TMP / "owners" / p.id / "data", p) for p in fed.participants]
        home = TMP / "workers"
        workers = {"pool": POOL, "deadline_seconds": 600,
                   "members": [Account.from_key(k).address for k in keys]}  # fmt: skip
        config = dict(base, data_dir=str(home), chain={"url": node.status().url},
                      workers=workers)  # fmt: skip
        cpu0, server0 = _children_cpu(), _cpu_of(server_pid)
        trial = run_trial(config, home, keys, folders, POOL, env=env, threads=threads)
        cpu1, server1 = _children_cpu(), _cpu_of(server_pid)
        alone = TMP / "alone"
        alone.mkdir()
        (alone / "task.yaml").write_text(json.dumps(dict(base, data_dir=str(alone))))
        began = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "flock_pipeline", "run", "-c", str(alone / "task.yaml"),
             "--out", str(alone / "out")],
            cwd=alone, env=dict(env, PREFECT_HOME=str(alone / "prefect")), check=True,
            capture_output=True, timeout=1800,
        )  # fmt: skip
        in_process = time.perf_counter() - began
        cpu2, server2 = _children_cpu(), _cpu_of(server_pid)
        alone_summary = json.loads((alone / "out" / "summary.json").read_text())
    finally:
        node.down()
        stop_server()

    per = {}
    for i, state in enumerate(trial.states):
        lines = [json.loads(x) for x in (state / TRAFFIC).read_text().splitlines()]
        sent = sum(e["blob_sent"] + e["rpc_sent"] for e in lines)
        received = sum(e["blob_received"] + e["rpc_received"] for e in lines)
        blobs = sum(e["blob_sent"] + e["blob_received"] for e in lines)
        # What its training runs alone moved: the duty the goal's budget describes (the
        # global model down, its update up), without the voter's download of every update.
        training = sum(e["blob_sent"] + e["rpc_sent"] + e["blob_received"] + e["rpc_received"]
                       for e in lines if e["duty"] == "train")  # fmt: skip
        per[f"p{i}"] = {"sent_per_round": sent / rounds, "received_per_round": received / rounds,
                        "blob_bytes_per_round": blobs / rounds,
                        "rpc_bytes_per_round": (sent + received - blobs) / rounds,
                        "training_bytes_per_round": training / rounds}  # fmt: skip
    cores, server_cpu, alone_cpu = os.cpu_count() or 1, _delta(server0, server1), cpu2 - cpu1
    cpu: dict[str, Any] = {
        "workers": {"coordinator_and_workers": round(cpu1 - cpu0, 1),
                    "prefect_server": server_cpu},
        "in_process": {"run": round(alone_cpu, 1), "prefect_server": _delta(server1, server2)},
        "cores": cores,
    }  # fmt: skip
    used = cpu1 - cpu0 + (server_cpu or 0.0)
    budget = 2 * model_bytes  # its update up, the global model down
    worst = max(v["sent_per_round"] + v["received_per_round"] for v in per.values())
    worst_training = max(v["training_bytes_per_round"] for v in per.values())
    ratio = trial.seconds / in_process
    # The rounds alone (each round's own wall time, from its start to its record): what a task
    # costs once every participant's worker is up. A worker starts once (Python, torch, Prefect:
    # seconds of CPU each, four at once on two cores here) and serves every round it is drawn
    # for, so its start-up is not a cost of each round.
    rounds_workers = sum(float(r["seconds"]) for r in trial.summary["rounds"])
    rounds_alone = sum(float(r["seconds"]) for r in alone_summary["rounds"])
    rows = [[pid, f"{v['sent_per_round'] / 1e3:.0f}", f"{v['received_per_round'] / 1e3:.0f}",
             f"{v['rpc_bytes_per_round'] / 1e3:.0f}",
             f"{(v['sent_per_round'] + v['received_per_round']) / budget:.2f}",
             f"{v['training_bytes_per_round'] / 1e3:.0f}",
             f"{v['training_bytes_per_round'] / budget:.2f}"]
            for pid, v in per.items()]  # fmt: skip
    payload = {
        "rounds": rounds,
        "participants": N,
        "workload": f"{dataset}, {model}, DP off, iid, 1 local epoch; everyone proposes and votes",
        "workload_name": args.workload,
        "prefect_db": args.prefect_db,
        "seconds": {"workers": round(trial.seconds, 2), "in_process": round(in_process, 2)},
        "rounds_seconds": {
            "workers": round(rounds_workers, 2),
            "in_process": round(rounds_alone, 2),
        },
        "cpu_seconds": cpu,
        "model_bytes": model_bytes,
        "per_participant": per,
        "accuracy": {"workers": trial.summary["final"]["accuracy"]},
        "environment": environment(load_before),
        "tables": [
            {
                "title": f"Participant workers against the in-process engine ({rounds} rounds, "
                f"{args.workload})",
                "markdown": markdown(
                    [
                        "participant",
                        "sent kB/round",
                        "received kB/round",
                        "of which RPC kB",
                        "× (update + global)",
                        "training runs kB/round",
                        "training × (update + global)",
                    ],
                    rows,
                ),
                "note": f"wall time: workers {trial.seconds:.1f} s, in-process {in_process:.1f} s "
                f"(ratio {ratio:.2f}; goal 1.3); the rounds alone: workers {rounds_workers:.1f} s, "
                f"in-process {rounds_alone:.1f} s (ratio {rounds_workers / rounds_alone:.2f}). "
                "Each of a round's three duty phases (train, validate, reveal) is a Prefect "
                "flow run per participant, dispatched a phase or a round ahead; a phase costs "
                f"about {(rounds_workers - rounds_alone) / rounds / 3:.1f} s more than in "
                f"process. The workers' run used {used:.0f} CPU seconds (its processes and "
                f"the Prefect server), the in-process run {alone_cpu:.0f}: on {cores} cores "
                f"the first cannot take less than {used / cores:.0f} s, whatever the protocol "
                "waits. A voter "
                "downloads every update of the "
                "round to recompute the aggregate itself, so its bytes are about N + 2 "
                "models per round; its training runs alone (the global model down, its "
                "update up, their JSON-RPC) are the last two columns.",
            }
        ],
        "quick": args.quick,
        "headline": headline(
            trial.seconds,
            in_process,
            rounds,
            worst / budget,
            rounds_workers,
            rounds_alone,
            worst_training / budget,
        ),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    suffix = "" if args.workload == "digits-mlp" else "_" + args.workload.replace("-", "_")
    name = f"distributed_overhead{suffix}{'_quick' if args.quick else ''}.json"
    (RESULTS / name).write_text(json.dumps(payload, indent=2) + "\n")
    for table in payload["tables"]:
        print(f"\n{table['title']}\n{table['markdown']}\n{table['note']}")
    print(json.dumps(payload["headline"]))


def _delta(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else round(after - before, 1)


def headline(workers: float, in_process: float, rounds: int, bytes_ratio: float,
             rounds_workers: float, rounds_alone: float,
             training_ratio: float) -> list[Any]:  # fmt: skip
    """The goals: the whole run's wall-time ratio, the rounds' alone (start-up left out), and
    the bytes (all of a participant's runs, and its training runs alone); with the time a
    worker round adds."""
    return [
        {"metric": "wall_time_ratio", "value": round(workers / in_process, 3), "goal": 1.3,
         "better": "lower",
         "added_seconds_per_round": round((workers - in_process) / rounds, 1)},
        {"metric": "rounds_wall_time_ratio", "value": round(rounds_workers / rounds_alone, 3),
         "goal": 1.3, "better": "lower",
         "added_seconds_per_round": round((rounds_workers - rounds_alone) / rounds, 1),
         "added_seconds_per_phase": round((rounds_workers - rounds_alone) / rounds / 3, 2)},
        {"metric": "max_bytes_per_round_over_update_plus_global", "value": round(bytes_ratio, 2),
         "goal": 1.1, "better": "lower"},
        {"metric": "max_training_bytes_per_round_over_update_plus_global",
         "value": round(training_ratio, 2), "goal": 1.1, "better": "lower"},
    ]  # fmt: skip


if __name__ == "__main__":
    main()
