"""Prefect flows: a federated round as a DAG, the task that runs R rounds as subflows, and
the participant duties a participant's own worker serves."""

from flows.federated import TaskRun, federated_task

__all__ = ["TaskRun", "federated_task"]
