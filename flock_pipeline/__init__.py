"""flock_pipeline: community-owned federated learning with differential privacy and on-chain
incentives. The core (data, models, training, privacy, aggregation, evaluation) is pure and needs
no server; adapters and flows build on it.
"""

__version__ = "0.1.0"
