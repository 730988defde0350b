"""Prefect flows: a federated round as a DAG, the task that runs R rounds as subflows, and
the participant duties a participant's own worker serves.

Nothing is imported here: a participant's duty run loads ``flows.participant`` alone, without
the coordinator's flow and what it pulls in (MLflow, the report)."""
