"""Sealing, proofs that cannot be forged, Benaloh challenge, and validation of ballots from outside."""

from __future__ import annotations

import copy

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from election.ballot import DeviceSigner, SealedBallot, seal_ballot, selection_statement
from election.elgamal import encrypt
from election.encoding import canonical_bytes
from election.errors import FormatError, InvalidPoint, ProofError
from election.group import G, hash_to_scalar, random_scalar
from election.manifest import sample_manifest
from election.proofs import PROOF_VERSION, RangeProof, challenge_of

MANIFEST = sample_manifest(contests=2, selections=3, limit=1)
KEY = random_scalar() * G
SIGNER = DeviceSigner("terminal-1", Ed25519PrivateKey.generate())


def sealed(choices=None):
    return seal_ballot(MANIFEST, KEY, choices or {"contest-1": {"candidate-2"}}, SIGNER)


def test_sealed_ballot_round_trips_and_verifies() -> None:
    ballot, opening = sealed()
    parsed = SealedBallot.from_json(ballot.to_json(), MANIFEST)
    assert parsed == ballot
    assert parsed.signature_valid(SIGNER.public_key)
    assert parsed.proof_failures(MANIFEST, KEY) == []
    assert opening.choices() == {"contest-1": {"candidate-2"}, "contest-2": set()}


def test_a_selection_encrypting_2_has_no_valid_proof() -> None:
    nonce = random_scalar()
    two = encrypt(2, nonce, KEY)
    with pytest.raises(ProofError):
        RangeProof.prove(two, 2, nonce, 1, KEY, {})
    # A prover who lies about the value (claims 1, or 0) produces a proof that fails.
    for claimed in (0, 1):
        forged = RangeProof.prove(two, claimed, nonce, 1, KEY, {})
        assert not forged.verify(two, 1, KEY, {})


def test_an_overvote_cannot_be_sealed_nor_proven() -> None:
    with pytest.raises(FormatError, match="exceed the limit"):
        sealed({"contest-1": {"candidate-1", "candidate-2"}})
    # Build the overvote by hand: two selections of 1 in a 1-of-3 contest.
    nonces = [random_scalar() for _ in range(3)]
    ciphertexts = [encrypt(v, r, KEY) for v, r in zip((1, 1, 0), nonces, strict=True)]
    total = ciphertexts[0] + ciphertexts[1] + ciphertexts[2]
    with pytest.raises(ProofError):
        RangeProof.prove(total, 2, sum(nonces), 1, KEY, {})
    forged = RangeProof.prove(total, 1, sum(nonces), 1, KEY, {})
    assert not forged.verify(total, 1, KEY, {})


@pytest.mark.parametrize(
    "statement",
    [
        {"base_hash": "ab" * 32, "contest": "contest-1", "limit": 1, "key": "cd" * 32},
        {"contest": "Gemeinderat-Zürich", "limit": 2},  # not ASCII: the full canonical path
        {"flag": True, "nested": {"limit": 1}, "negative": -(2**63) + 1},
        {},
    ],
)
def test_the_challenge_hashes_the_canonical_json_of_its_input(statement: dict) -> None:
    commitments = [random_scalar() * G for _ in range(4)]
    document = {"v": PROOF_VERSION, "domain": "range", "statement": statement,
                "commitments": [point.hex() for point in commitments]}  # fmt: skip
    assert challenge_of("range", statement, commitments) == hash_to_scalar(canonical_bytes(document))


@pytest.mark.parametrize("value", [1.5, "\ud800", 2**63, (1, 2.5)])
def test_a_challenge_input_without_a_canonical_form_is_refused(value: object) -> None:
    with pytest.raises(FormatError):
        challenge_of("range", {"contest": "contest-1", "odd": value}, [G])


def test_proofs_are_bound_to_their_place() -> None:
    ballot, _ = sealed()
    selection = ballot.contests[0].selections[0]
    here = selection_statement(ballot.base_hash, ballot.ballot_id, "contest-1", "candidate-1")
    elsewhere = selection_statement(ballot.base_hash, ballot.ballot_id, "contest-1", "candidate-2")
    assert selection.proof.verify(selection.ciphertext, 1, KEY, here)
    assert not selection.proof.verify(selection.ciphertext, 1, KEY, elsewhere)
    assert not selection.proof.verify(selection.ciphertext, 1, random_scalar() * G, here)


def test_benaloh_challenge_reopens_exactly_the_shown_choices() -> None:
    ballot, opening = sealed({"contest-1": {"candidate-3"}, "contest-2": {"candidate-1"}})
    assert opening.opening_failures(ballot, MANIFEST, KEY) == []
    data = opening.to_json(MANIFEST)
    # A terminal that shows the voter other choices than it encrypted is caught.
    lie = copy.deepcopy(data)
    lie["contests"][0]["selections"][2]["vote"] = 0
    lie["contests"][0]["selections"][0]["vote"] = 1
    from election.ballot import BallotOpening

    problems = BallotOpening.from_json(lie, MANIFEST).opening_failures(ballot, MANIFEST, KEY)
    assert any("candidate-1 does not reopen" in p for p in problems)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b.update(device_seq=1), "unknown fields"),
        (lambda b: b.update(extra="x"), "unknown fields"),
        (lambda b: b.pop("signature"), "missing fields"),
        (lambda b: b["contests"].pop(), "contests"),
        (lambda b: b["contests"][0]["selections"].reverse(), "selection_id"),
        (lambda b: b["contests"][0]["selections"][0]["ciphertext"].update(alpha="00" * 32), "alpha: the identity"),
        # a negative field element (RFC 9496 A.2): not the encoding of any ristretto255 element
        (lambda b: b["contests"][0]["selections"][0]["ciphertext"].update(alpha="01" + "00" * 31), "canonical"),
        (lambda b: b["contests"][0]["proof"]["challenges"].append("00" * 32), "proof"),
        (lambda b: b["contests"][0]["proof"]["responses"].__setitem__(0, "ff" * 32), "not reduced"),
        (lambda b: b.update(token={"message": "00" * 31, "signature": "00"}), "token.message"),
        (lambda b: b.update(ballot_id="ABCD" * 8), "lowercase"),
    ],
)
def test_malformed_ballots_are_refused_with_a_reason(mutate, message: str) -> None:
    ballot, _ = sealed()
    data = ballot.to_json()
    mutate(data)
    with pytest.raises(FormatError, match=message):
        SealedBallot.from_json(data, MANIFEST)


def test_an_edwards25519_small_order_point_in_a_ballot_is_refused() -> None:
    ballot, _ = sealed()
    data = ballot.to_json()
    data["contests"][1]["selections"][2]["ciphertext"]["beta"] = (
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"
    )
    with pytest.raises(InvalidPoint):
        SealedBallot.from_json(data, MANIFEST)


def test_any_change_breaks_the_device_signature() -> None:
    ballot, _ = sealed()
    data = ballot.to_json()
    data["device_id"] = "terminal-2"
    assert not SealedBallot.from_json(data, MANIFEST).signature_valid(SIGNER.public_key)
    other = DeviceSigner("terminal-1", Ed25519PrivateKey.generate())
    assert not ballot.signature_valid(other.public_key)
