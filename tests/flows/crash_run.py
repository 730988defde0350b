"""`python crash_run.py ROUND ARGS...`: `flock ARGS...`, killed the moment round ROUND (1-based)
has started on chain, as a crash would kill it: no cleanup, no exception handler runs.

A crash point set by the test, not found in log text: the flow's start-round task is wrapped so
that the process exits right after the chain started that round, before anything else of it
happens.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

import flows.federated as federated
from flock_pipeline.faces.cli import main

CRASH_EXIT = 137


def _crash_after_start(round_number: int) -> None:
    original = federated.start_round

    def start_then_die(c: Any, r: int) -> Any:
        started = original.fn(c, r)
        if r + 1 == round_number:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(CRASH_EXIT)
        return started

    federated.start_round = task(name="start-round", cache_policy=NO_CACHE)(start_then_die)


if __name__ == "__main__":
    _crash_after_start(int(sys.argv[1]))
    sys.argv = ["flock", *sys.argv[2:]]
    main()
