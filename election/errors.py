"""Errors raised by the election core.

Every error carries a message meant for a person: what was wrong and where.
"""


class ElectionError(Exception):
    """Base class of every error the election core raises."""


class FormatError(ElectionError):
    """A document, message or field does not follow its documented format."""


class InvalidPoint(FormatError):
    """Bytes that are not an acceptable element of the prime-order group."""


class ManifestError(FormatError):
    """The election manifest is not valid."""


class ProofError(ElectionError):
    """A zero-knowledge proof does not verify, or cannot be made for the given statement."""


class SignatureError(ElectionError):
    """A signature does not verify."""


class DecryptionError(ElectionError):
    """Decryption cannot proceed (too few trustees, a bad share, a result out of range)."""
