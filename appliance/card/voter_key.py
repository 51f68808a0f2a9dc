"""The voter key: the only thing about a card that leaves the card module.

HMAC-SHA256 keyed with the election's roll salt over a canonical encoding of the
certificate's issuer and serial number. It is stable for one card within one election, says
nothing about the person (the salt is secret to the roll service and the terminals), and a
different election (a different salt) gives unlinkable keys. Format: docs/card-protocol.md.
"""

import hashlib
import hmac

from cryptography import x509

VOTER_KEY_DOMAIN = b"polling-station/jpki-voter-key/v1"
MIN_SALT_BYTES = 16


def derive_voter_key(roll_salt: bytes, issuer_der: bytes, serial_number: int) -> str:
    if len(roll_salt) < MIN_SALT_BYTES:
        raise ValueError(f"the roll salt must be at least {MIN_SALT_BYTES} bytes")
    if serial_number < 0:
        raise ValueError("certificate serial numbers are positive")
    serial = serial_number.to_bytes(max(1, (serial_number.bit_length() + 7) // 8), "big")
    message = b"".join(
        (
            VOTER_KEY_DOMAIN,
            len(issuer_der).to_bytes(4, "big"),
            issuer_der,
            len(serial).to_bytes(4, "big"),
            serial,
        )
    )
    return hmac.new(roll_salt, message, hashlib.sha256).hexdigest()


def voter_key_of(roll_salt: bytes, certificate: x509.Certificate) -> str:
    return derive_voter_key(roll_salt, certificate.issuer.public_bytes(), certificate.serial_number)
