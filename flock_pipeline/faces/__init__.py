"""The faces of the project: what users touch, over the core package and the flows.

- :mod:`~flock_pipeline.faces.cli` and :mod:`~flock_pipeline.faces.participant_cli`: the
  ``flock`` command;
- :mod:`~flock_pipeline.faces.serve`: Prefect deployments, the Prefect and MLflow servers and UIs;
- :mod:`~flock_pipeline.faces.plots`: the figures of a run;
- :mod:`~flock_pipeline.faces.evaluate`: the DVC pipeline's evaluate stage.

Only faces may import ``flows/``; the core package never does (``tests/core/test_layers.py``).
"""
