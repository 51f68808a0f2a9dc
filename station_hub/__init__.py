"""Station hub: ledger, roll, monitoring."""
