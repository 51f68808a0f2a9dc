"""RSA blind signatures (RFC 9474, RSABSSA-SHA384-PSS-Deterministic) for ballot tokens.

Why blind: the roll service must sign exactly one token per eligible voter, yet nobody — not
the roll, not the ledger, not both together — may be able to tell which token belongs to
which voter. The terminal draws a random 32-byte message, *blinds* it with a random factor
``r``, the roll signs the blinded value after marking the voter, and the terminal divides
``r`` out. The result is an ordinary RSASSA-PSS signature (SHA-384, MGF1-SHA-384, 48-byte
salt) on the message, which the ledger checks with the roll's public key; the blinded value
the roll saw is uniformly random and independent of the message and signature.

The deterministic variant (no message randomisation in ``Prepare``) is right here because the
message is itself 32 fresh random bytes. The big-integer steps follow RFC 9474 §4 directly;
RSA keys and the final PSS verification use ``cryptography``.
"""

from __future__ import annotations

import hashlib
import math
import secrets
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from election.errors import ElectionError

VARIANT = "RSABSSA-SHA384-PSS-Deterministic"
HASH_LENGTH = 48
SALT_LENGTH = 48
MIN_KEY_BITS = 2048


class TokenError(ElectionError):
    """A blind-signature step failed (bad input, wrong key, or a signature that does not verify)."""


def _modulus_length(key: rsa.RSAPublicKey) -> int:
    return (key.key_size + 7) // 8


def _mgf1(seed: bytes, length: int) -> bytes:
    output = bytearray()
    counter = 0
    while len(output) < length:
        output += hashlib.sha384(seed + counter.to_bytes(4, "big")).digest()
        counter += 1
    return bytes(output[:length])


def emsa_pss_encode(message: bytes, em_bits: int, salt: bytes) -> bytes:
    """EMSA-PSS-ENCODE (RFC 8017 §9.1.1) with SHA-384 and MGF1-SHA-384."""
    em_length = (em_bits + 7) // 8
    if em_length < HASH_LENGTH + len(salt) + 2:
        raise TokenError("RSA key too small for PSS with SHA-384")
    m_prime = bytes(8) + hashlib.sha384(message).digest() + salt
    h = hashlib.sha384(m_prime).digest()
    db = bytes(em_length - len(salt) - HASH_LENGTH - 2) + b"\x01" + salt
    masked = bytearray(a ^ b for a, b in zip(db, _mgf1(h, len(db)), strict=True))
    masked[0] &= 0xFF >> (8 * em_length - em_bits)
    return bytes(masked) + h + b"\xbc"


@dataclass(frozen=True, slots=True)
class BlindedRequest:
    """What the terminal keeps while it waits for the roll: send ``blinded``, keep ``inverse``."""

    blinded: bytes
    inverse: bytes


def blind(key: rsa.RSAPublicKey, message: bytes, *, salt: bytes | None = None, r: int | None = None) -> BlindedRequest:
    """RFC 9474 §4.2 Blind; ``salt`` and ``r`` are parameters only for test vectors."""
    if key.key_size < MIN_KEY_BITS:
        raise TokenError(f"the roll key must have at least {MIN_KEY_BITS} bits")
    numbers = key.public_numbers()
    n, e = numbers.n, numbers.e
    salt = secrets.token_bytes(SALT_LENGTH) if salt is None else salt
    m = int.from_bytes(emsa_pss_encode(message, n.bit_length() - 1, salt), "big")
    if math.gcd(m, n) != 1:
        raise TokenError("the encoded message is not invertible modulo n")
    while r is None or math.gcd(r, n) != 1:
        r = secrets.randbelow(n - 1) + 1
    size = _modulus_length(key)
    blinded = m * pow(r, e, n) % n
    return BlindedRequest(blinded.to_bytes(size, "big"), pow(r, -1, n).to_bytes(size, "big"))


def blind_sign(key: rsa.RSAPrivateKey, blinded: bytes) -> bytes:
    """RFC 9474 §4.3 BlindSign (RSASP1 by CRT, then checked with RSAVP1 against faults)."""
    public = key.public_key()
    size = _modulus_length(public)
    if len(blinded) != size:
        raise TokenError(f"a blinded message is {size} bytes for this key, got {len(blinded)}")
    private = key.private_numbers()
    n, e = private.public_numbers.n, private.public_numbers.e
    m = int.from_bytes(blinded, "big")
    if m >= n:
        raise TokenError("the blinded message is out of range for this key")
    s_p = pow(m, private.dmp1, private.p)
    s_q = pow(m, private.dmq1, private.q)
    s = s_q + private.q * (private.iqmp * (s_p - s_q) % private.p)
    if pow(s, e, n) != m:
        raise TokenError("signing fault: the blind signature does not verify")
    return s.to_bytes(size, "big")


def finalize(key: rsa.RSAPublicKey, message: bytes, blind_signature: bytes, request: BlindedRequest) -> bytes:
    """RFC 9474 §4.4 Finalize: unblind and check, so a bad roll answer is caught at once."""
    size = _modulus_length(key)
    if len(blind_signature) != size:
        raise TokenError(f"a blind signature is {size} bytes for this key")
    n = key.public_numbers().n
    z = int.from_bytes(blind_signature, "big")
    signature = (z * int.from_bytes(request.inverse, "big") % n).to_bytes(size, "big")
    if not verify(key, message, signature):
        raise TokenError("the unblinded signature does not verify with the roll's key")
    return signature


def verify(key: rsa.RSAPublicKey, message: bytes, signature: bytes) -> bool:
    """RSASSA-PSS-VERIFY with the variant's parameters: is this a roll-signed token?"""
    if len(signature) != _modulus_length(key):
        return False
    try:
        key.verify(
            signature,
            message,
            padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=SALT_LENGTH),
            hashes.SHA384(),
        )
    except InvalidSignature:
        return False
    return True
