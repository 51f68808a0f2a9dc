"""Threshold key ceremony, decryption by any k of n, and the tally against plaintext sums."""

from __future__ import annotations

import itertools
import random

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from election.ballot import DeviceSigner, seal_ballot
from election.errors import DecryptionError
from election.group import G
from election.keyceremony import CeremonyError, EncryptedShare, joint_public_key, run_local_ceremony
from election.manifest import sample_manifest
from election.simulation import random_choices
from election.tally import DecryptionShare, DiscreteLog, TallyAccumulator, decrypt_totals

MANIFEST = sample_manifest(contests=2, selections=3, limit=2)
SIGNER = DeviceSigner("terminal-1", Ed25519PrivateKey.generate())


def cast(manifest, key, choices_list):
    accumulator = TallyAccumulator(manifest)
    for choices in choices_list:
        ballot, _ = seal_ballot(manifest, key, choices, SIGNER)
        accumulator.add(ballot)
    return accumulator.result()


def expected_totals(manifest, choices_list):
    return {
        (c.id, s.id): sum(s.id in choices.get(c.id, ()) for choices in choices_list) for c, s in manifest.positions()
    }


def test_any_k_of_n_trustees_decrypt_and_k_minus_1_cannot() -> None:
    trustees, publics = run_local_ceremony([f"t{i}" for i in range(1, 5)], 3, MANIFEST.base_hash)
    key = joint_public_key(publics)
    rng = random.Random(3)
    choices_list = [random_choices(MANIFEST, rng) for _ in range(6)]
    tally = cast(MANIFEST, key, choices_list)
    expected = expected_totals(MANIFEST, choices_list)
    shares = {t.trustee_id: DecryptionShare.compute(t, tally) for t in trustees}
    for subset in itertools.combinations(shares, 3):
        results = decrypt_totals(tally, [shares[t] for t in subset], publics, 3)
        assert results.totals == expected, subset
    for subset in itertools.combinations(shares, 2):
        with pytest.raises(DecryptionError, match="3 needed"):
            decrypt_totals(tally, [shares[t] for t in subset], publics, 3)
        # Even ignoring the quorum rule, two shares interpolate to a wrong secret: what
        # comes out is no small total at all.
        with pytest.raises(DecryptionError, match="not in 0"):
            decrypt_totals(tally, [shares[t] for t in subset], publics, 2, DiscreteLog(10**4))


def test_a_bad_decryption_share_is_refused() -> None:
    trustees, publics = run_local_ceremony(["t1", "t2"], 2, MANIFEST.base_hash)
    tally = cast(MANIFEST, joint_public_key(publics), [{"contest-1": {"candidate-1"}}])
    good = DecryptionShare.compute(trustees[0], tally)
    position = next(iter(good.shares))
    forged_point = good.shares[position][0] + G
    forged = DecryptionShare(good.trustee_id, {**good.shares, position: (forged_point, good.shares[position][1])})
    with pytest.raises(DecryptionError, match="does not verify"):
        decrypt_totals(tally, [forged, DecryptionShare.compute(trustees[1], tally)], publics, 2)


def test_a_share_that_does_not_match_the_commitments_is_detected() -> None:
    trustees, publics = run_local_ceremony(["t1", "t2", "t3"], 2, MANIFEST.base_hash)
    sender, recipient = trustees[0], trustees[1]
    envelope = sender.share_for(publics[1])
    # Delivered to the wrong trustee, or tampered with on the way.
    with pytest.raises(CeremonyError):
        trustees[2].receive(envelope, publics[0])
    tampered = EncryptedShare(
        envelope.sender,
        envelope.recipient,
        envelope.ephemeral_key,
        bytes([envelope.ciphertext[0] ^ 1]) + envelope.ciphertext[1:],
    )
    with pytest.raises(CeremonyError, match="cannot be decrypted"):
        recipient.receive(tampered, publics[0])
    # A share that decrypts but is not P_sender(recipient): checked against the commitments.
    with pytest.raises(CeremonyError, match="commitments"):
        recipient.receive(
            sender.share_for(publics[2]).__class__(
                envelope.sender, envelope.recipient, *_reencrypt_for(sender, publics[1], 12345)
            ),
            publics[0],
        )


def _reencrypt_for(sender, recipient_public, value):
    """An envelope to ``recipient`` carrying an arbitrary value instead of the real share."""
    original = sender._evaluate
    sender._evaluate = lambda at: value
    try:
        envelope = sender.share_for(recipient_public)
    finally:
        sender._evaluate = original
    return envelope.ephemeral_key, envelope.ciphertext


def test_discrete_log_covers_its_whole_range() -> None:
    dlog = DiscreteLog(1000)
    for value in (0, 1, 31, 32, 999, 1000):
        assert dlog.solve(value * G) == value
    with pytest.raises(DecryptionError):
        dlog.solve(1001 * G)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    contests=st.integers(1, 3),
    selections=st.integers(1, 4),
    limit_seed=st.integers(0, 100),
    voters=st.integers(0, 7),
    seed=st.integers(0, 2**32),
)
def test_tally_equals_the_plaintext_sum(contests, selections, limit_seed, voters, seed) -> None:
    manifest = sample_manifest(contests, selections, 1 + limit_seed % selections)
    trustees, publics = run_local_ceremony(["a", "b", "c"], 2, manifest.base_hash)
    rng = random.Random(seed)
    choices_list = [random_choices(manifest, rng) for _ in range(voters)]
    tally = cast(manifest, joint_public_key(publics), choices_list)
    present = rng.sample(trustees, 2)
    results = decrypt_totals(tally, [DecryptionShare.compute(t, tally) for t in present], publics, 2)
    assert results.totals == expected_totals(manifest, choices_list)
    assert results.ballot_count == voters
