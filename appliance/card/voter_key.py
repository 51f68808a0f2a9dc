"""The voter key: HMAC-SHA256 with the election's roll salt over the card certificate's issuer
and serial number (docs/card-protocol.md §5).

Only the roll service derives it now (``infra.jpki``, from the certificate the card proves it
holds); the terminal never holds the roll salt. This module is kept for the test CA's roll
export (``appliance/card/testca.py``), which plays the municipality's part.
"""

from cryptography import x509

from infra.jpki import MIN_SALT_BYTES, VOTER_KEY_DOMAIN, derive_voter_key

__all__ = ["MIN_SALT_BYTES", "VOTER_KEY_DOMAIN", "derive_voter_key", "voter_key_of"]


def voter_key_of(roll_salt: bytes, certificate: x509.Certificate) -> str:
    return derive_voter_key(roll_salt, certificate.issuer.public_bytes(), certificate.serial_number)
