"""Prefect flows: a federated round as a DAG, and a task that runs R rounds as subflows."""

from flows.federated import federated_round, federated_task

__all__ = ["federated_round", "federated_task"]
