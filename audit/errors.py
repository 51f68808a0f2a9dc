"""Errors of the audit log, each with a message a person can act on."""


class AuditError(Exception):
    """Base class of every audit-log error."""


class ForbiddenEvent(AuditError):
    """An event that is not on the allow-list, or a field that could carry identity or choices."""


class AuditLogCorrupt(AuditError):
    """A complete entry in the log file does not verify: evidence, never repaired automatically."""


class AuditLogBusy(AuditError):
    """Another process already writes this log."""


class AuditKeyError(AuditError):
    """A signing or verification key that is missing or not an Ed25519 key."""
