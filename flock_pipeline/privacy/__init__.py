"""Per-participant differential privacy accounting that persists across rounds."""

from flock_pipeline.privacy.ledger import LedgerStore, PrivacyLedger, Spend

__all__ = ["LedgerStore", "PrivacyLedger", "Spend"]
