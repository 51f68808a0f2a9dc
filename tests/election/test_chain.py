"""The station hash chain: linking, verification of gaps/forks, tracking codes, checkpoints."""

from __future__ import annotations

import dataclasses
import secrets

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from election.chain import (
    ChainEntry,
    ChainError,
    ChainHead,
    ChainState,
    Checkpoint,
    genesis_hash,
    tracking_code,
    verify_chain,
)
from election.encoding import canonical_bytes, hash_value
from election.errors import FormatError, SignatureError

GENESIS = genesis_hash(bytes(32), "st-1")


def build(count: int) -> list[ChainEntry]:
    state = ChainState(GENESIS)
    entries = []
    for _ in range(count):
        entry = state.next_entry(secrets.token_bytes(32))
        state.append(entry)
        entries.append(entry)
    return entries


def test_entry_hash_is_sha256_of_canonical_json():
    entry = ChainEntry(1, GENESIS, bytes(range(32)))
    assert entry.entry_hash == hash_value(entry.to_json())
    assert canonical_bytes(entry.to_json()).startswith(b'{"ballot_hash":"000102')
    assert ChainEntry.from_json(entry.to_json()) == entry


def test_genesis_binds_election_and_station():
    assert genesis_hash(bytes(32), "st-1") != genesis_hash(bytes(32), "st-2")
    assert genesis_hash(bytes(32), "st-1") != genesis_hash(b"\x01" * 32, "st-1")


def test_a_valid_chain_verifies_and_returns_every_hash():
    entries = build(5)
    assert verify_chain(GENESIS, entries) == [e.entry_hash for e in entries]


@pytest.mark.parametrize(
    "tamper",
    [
        lambda es: es[:2] + es[3:],  # a dropped entry
        lambda es: [es[1], es[0], *es[2:]],  # reordered
        lambda es: [*es[:2], dataclasses.replace(es[2], ballot_hash=bytes(32)), *es[3:]],
        lambda es: [*es[:2], dataclasses.replace(es[2], prev_hash=bytes(32)), *es[3:]],
        lambda es: [*es, ChainEntry(6, es[-1].entry_hash, es[0].ballot_hash)],  # repeat
    ],
)
def test_gaps_forks_alterations_and_repeats_are_detected(tamper):
    with pytest.raises(ChainError):
        verify_chain(GENESIS, tamper(build(5)))


def test_state_refuses_an_entry_that_does_not_extend_it():
    state = ChainState(GENESIS)
    entry = state.next_entry(bytes(32))
    with pytest.raises(ChainError):
        state.append(dataclasses.replace(entry, position=2))
    state.append(entry)
    with pytest.raises(ChainError):
        state.append(entry)
    assert state.head == ChainHead(1, entry.entry_hash)


def test_tracking_code_is_grouped_base32_of_the_entry_hash():
    code = tracking_code(bytes(32))
    assert code == "AAAA-AAAA-AAAA-AAAA"
    assert tracking_code(b"\xff" * 32) == "7777-7777-7777-7777"


def test_checkpoint_signature_and_match():
    entries = build(3)
    hashes = verify_chain(GENESIS, entries)
    key = Ed25519PrivateKey.generate()
    document = Checkpoint("st-1", bytes(32), ChainHead(2, hashes[1])).sign(key)
    checkpoint = Checkpoint.from_signed(document, key.public_key())
    assert checkpoint.matches(GENESIS, hashes)
    assert not Checkpoint("st-1", bytes(32), ChainHead(2, hashes[2])).matches(GENESIS, hashes)
    with pytest.raises(SignatureError):
        Checkpoint.from_signed({**document, "position": 3}, key.public_key())
    with pytest.raises(SignatureError):
        Checkpoint.from_signed(document, Ed25519PrivateKey.generate().public_key())
    with pytest.raises(FormatError):
        ChainEntry.from_json({**entries[0].to_json(), "kind": "other"})
