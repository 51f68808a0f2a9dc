"""RFC 9474 blind signatures: round trip, standard PSS compatibility, unlinkability, refusals."""

from __future__ import annotations

import secrets

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from election import tokens


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def issue(key: rsa.RSAPrivateKey, message: bytes) -> tuple[tokens.BlindedRequest, bytes]:
    request = tokens.blind(key.public_key(), message)
    return request, tokens.blind_sign(key, request.blinded)


def test_finalized_signature_is_a_standard_rsassa_pss_signature(key):
    message = secrets.token_bytes(32)
    request, blind_signature = issue(key, message)
    signature = tokens.finalize(key.public_key(), message, blind_signature, request)
    assert tokens.verify(key.public_key(), message, signature)
    key.public_key().verify(signature, message, padding.PSS(padding.MGF1(hashes.SHA384()), 48), hashes.SHA384())
    assert not tokens.verify(key.public_key(), secrets.token_bytes(32), signature)


def test_a_standard_pss_signature_verifies_as_a_token(key):
    message = secrets.token_bytes(32)
    signature = key.sign(message, padding.PSS(padding.MGF1(hashes.SHA384()), 48), hashes.SHA384())
    assert tokens.verify(key.public_key(), message, signature)


def test_pss_encoding_matches_the_standard_verifier(key):
    """Our EMSA-PSS-ENCODE, raised to d by hand, is accepted by OpenSSL's PSS verify."""
    message, salt = secrets.token_bytes(32), secrets.token_bytes(48)
    numbers = key.private_numbers()
    n = numbers.public_numbers.n
    encoded = tokens.emsa_pss_encode(message, n.bit_length() - 1, salt)
    signature = pow(int.from_bytes(encoded, "big"), numbers.d, n).to_bytes(256, "big")
    assert tokens.verify(key.public_key(), message, signature)


def test_signer_sees_nothing_linkable(key):
    """The same message blinded twice gives unrelated blinded values and signatures."""
    message = secrets.token_bytes(32)
    first, second = tokens.blind(key.public_key(), message), tokens.blind(key.public_key(), message)
    assert first.blinded != second.blinded
    blind_signature = tokens.blind_sign(key, first.blinded)
    signature = tokens.finalize(key.public_key(), message, blind_signature, first)
    assert signature != blind_signature and message not in first.blinded


def test_bad_inputs_are_refused(key):
    message = secrets.token_bytes(32)
    request, blind_signature = issue(key, message)
    with pytest.raises(tokens.TokenError):
        tokens.blind_sign(key, request.blinded[:-1])
    with pytest.raises(tokens.TokenError):
        tokens.blind_sign(key, b"\xff" * 256)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(tokens.TokenError):
        tokens.finalize(other.public_key(), message, blind_signature, request)
    with pytest.raises(tokens.TokenError):
        tokens.finalize(key.public_key(), secrets.token_bytes(32), blind_signature, request)
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(tokens.TokenError):
        tokens.blind(small.public_key(), message)
    assert not tokens.verify(key.public_key(), message, b"\x00" * 255)
