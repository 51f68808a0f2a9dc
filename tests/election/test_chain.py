"""The station chain of hash-sorted batches, tracking codes, checkpoints and device statements."""

from __future__ import annotations

import dataclasses
import hashlib
import secrets

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from election.ballot import DeviceSigner
from election.chain import (
    TRACKING_ALPHABET,
    ChainEntry,
    ChainError,
    ChainHead,
    ChainState,
    Checkpoint,
    PoolBallot,
    TrackingCodeTypo,
    genesis_hash,
    normalise_tracking_code,
    tracking_code,
    verify_chain,
)
from election.devices import SET_DOMAIN, DeviceStatement, set_commitment
from election.encoding import canonical_bytes, hash_value
from election.errors import FormatError, SignatureError

GENESIS = genesis_hash(bytes(32), "st-1")


def build(*sizes: int) -> list[ChainEntry]:
    """A chain of batches of these sizes, each the sorted commit of a pool of random ballots."""
    state = ChainState(GENESIS)
    entries = []
    for size in sizes:
        for entry in state.next_batch(PoolBallot(secrets.token_bytes(32), "cast") for _ in range(size)):
            state.append(entry)
            entries.append(entry)
    return entries


def test_entry_hash_is_sha256_of_canonical_json():
    entry = ChainEntry(1, 1, GENESIS, bytes(range(32)))
    assert entry.entry_hash == hash_value(entry.to_json())
    assert canonical_bytes(entry.to_json()).startswith(b'{"ballot_hash":"000102')
    assert ChainEntry.from_json(entry.to_json()) == entry


def test_genesis_binds_election_and_station():
    assert genesis_hash(bytes(32), "st-1") != genesis_hash(bytes(32), "st-2")
    assert genesis_hash(bytes(32), "st-1") != genesis_hash(b"\x01" * 32, "st-1")


def test_a_batch_is_the_pool_sorted_by_ballot_hash_whatever_the_arrival_order():
    pool = [PoolBallot(secrets.token_bytes(32), kind) for kind in ("cast", "spoiled", "cast", "cast")]
    one, other = ChainState(GENESIS).next_batch(pool), ChainState(GENESIS).next_batch(reversed(pool))
    assert one == other
    assert [e.ballot_hash for e in one] == sorted(b.ballot_hash for b in pool)
    assert {e.batch for e in one} == {1} and [e.position for e in one] == [1, 2, 3, 4]


def test_a_valid_chain_verifies_and_returns_every_hash():
    entries = build(3, 2, 1)
    assert verify_chain(GENESIS, entries, batch_min=2, closed_position=5) == [e.entry_hash for e in entries]


@pytest.mark.parametrize(
    "tamper",
    [
        lambda es: es[:2] + es[3:],  # a dropped entry
        lambda es: [es[1], es[0], *es[2:]],  # reordered
        lambda es: [*es[:2], dataclasses.replace(es[2], ballot_hash=bytes(32)), *es[3:]],
        lambda es: [*es[:2], dataclasses.replace(es[2], prev_hash=bytes(32)), *es[3:]],
        lambda es: [*es, ChainEntry(6, 3, es[-1].entry_hash, es[0].ballot_hash)],  # a repeated ballot
        lambda es: [*es[:3], dataclasses.replace(es[3], batch=4), *es[4:]],  # a batch number skipped
    ],
)
def test_gaps_forks_alterations_and_repeats_are_detected(tamper):
    with pytest.raises(ChainError):
        verify_chain(GENESIS, tamper(build(3, 2)), batch_min=2, closed_position=5)


def relink(entries: list[ChainEntry]) -> list[ChainEntry]:
    """The same entries with positions and links recomputed (what a dishonest ledger can sign)."""
    linked, prev_hash = [], GENESIS
    for position, entry in enumerate(entries, start=1):
        entry = dataclasses.replace(entry, position=position, prev_hash=prev_hash)
        linked.append(entry)
        prev_hash = entry.entry_hash
    return linked


def test_a_relinked_batch_out_of_hash_order_is_refused():
    entries = build(3, 2)
    with pytest.raises(ChainError, match="out of ballot-hash order within batch 1"):
        verify_chain(GENESIS, relink([entries[1], entries[0], *entries[2:]]), batch_min=2, closed_position=5)


def test_a_small_batch_is_allowed_only_at_or_after_the_close():
    entries = build(2, 1, 2)
    with pytest.raises(ChainError, match="batch 2 holds 1 ballots"):
        verify_chain(GENESIS, entries, batch_min=2, closed_position=5)
    verify_chain(GENESIS, entries, batch_min=2, closed_position=3)  # batch 2 closed the polls; 3 is late
    with pytest.raises(ChainError, match="not the end of a batch"):
        verify_chain(GENESIS, entries, batch_min=2, closed_position=4)
    with pytest.raises(ChainError, match="fewer than"):
        verify_chain(GENESIS, entries, batch_min=2)  # polls not closed: every batch holds batch_min


def test_state_refuses_an_entry_that_does_not_extend_it():
    state = ChainState(GENESIS)
    (entry,) = state.next_batch([PoolBallot(bytes(32), "cast")])
    with pytest.raises(ChainError):
        state.append(dataclasses.replace(entry, position=2))
    state.append(entry)
    with pytest.raises(ChainError):
        state.append(entry)
    assert state.head == ChainHead(1, entry.entry_hash, 1)


def test_tracking_code_derives_from_the_ballot_hash():
    ballot_hash = bytes(range(32))
    digest = hashlib.sha256(b"ps-tracking-v2" + ballot_hash).digest()[:10]
    number = int.from_bytes(digest, "big")
    symbols = "".join(TRACKING_ALPHABET[(number >> (5 * (15 - i))) & 31] for i in range(16))
    assert tracking_code(ballot_hash) == "-".join(symbols[i : i + 4] for i in range(0, 16, 4))
    assert ChainEntry(9, 4, GENESIS, ballot_hash).tracking_code == tracking_code(ballot_hash)


def test_the_normaliser_names_characters_no_code_has():
    assert normalise_tracking_code(" ab2c－ｄｅｆ９ ghjk ーmnpq") == "AB2C-DEF9-GHJK-MNPQ"
    with pytest.raises(TrackingCodeTypo) as typo:
        normalise_tracking_code("oi01-AAAA")
    assert typo.value.characters == "01IO"


def test_checkpoint_signature_and_match():
    entries = build(2, 1)
    hashes = verify_chain(GENESIS, entries, batch_min=2, closed_position=3)
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


def test_a_device_statement_commits_to_the_sorted_set_and_verifies_under_its_key():
    signer = DeviceSigner("terminal-1", Ed25519PrivateKey.generate())
    hashes = [secrets.token_bytes(32) for _ in range(4)]
    statement = DeviceStatement.make(signer, bytes(32), hashes)
    assert statement.commitment == hashlib.sha256(SET_DOMAIN + b"".join(sorted(hashes))).digest()
    assert statement.sealed == 4 and statement.matches(reversed(hashes))
    assert DeviceStatement.from_json(statement.to_json()) == statement
    statement.verify(signer.public_key)
    with pytest.raises(SignatureError):
        statement.verify(DeviceSigner("terminal-1", Ed25519PrivateKey.generate()).public_key)
    assert not statement.matches(hashes[:3])  # dropped
    assert not statement.matches([*hashes, secrets.token_bytes(32)])  # added
    assert not statement.matches([*hashes[:3], secrets.token_bytes(32)])  # replaced
    assert not statement.matches([*hashes[:3], hashes[0]])  # a repeat is not a set
    with pytest.raises(FormatError, match="each ballot once"):
        set_commitment([hashes[0], hashes[0]])
