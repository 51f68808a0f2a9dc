"""The audit log kept by every device and service: hash-chained, signed, power-cut safe.

`audit.events` is the closed list of what may be logged (and so what can never be);
`audit.chain` is the sans-I/O core that builds and verifies entries; `audit.store` is the
thin file shell (append with fsync, torn-tail recovery); `audit.cli` is `audit-log`.
Format and rules: docs/audit-log.md.
"""
