"""Sealed ballots: encrypted choices with proofs, signed by the device that sealed them.

A sealed ballot carries no voter identity, no timestamp and nothing that orders it among the
device's other ballots (record format 2: no sequence number, no link to the previous ballot).
It carries the device's id, the roll-signed token slot, and an Ed25519 signature of the device
over the canonical JSON of everything else. That no ballot of a device is dropped, added or
replaced is proved instead by the device's signed statements of how many ballots it sealed and
a commitment to their set (:mod:`election.devices`).

Sealing returns the ballot and its :class:`BallotOpening` (the nonces). The opening stays on
the device: it is revealed only if the voter challenges the ballot (Benaloh challenge), which
spoils the ballot; a cast ballot's opening is destroyed.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Set
from dataclasses import dataclass, field, replace
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from election.elgamal import Ciphertext, encrypt, is_encryption_of
from election.encoding import canonical_bytes, check_version, encode_checked, hex_bytes, sha256, strict_int
from election.errors import FormatError
from election.group import ORDER, Point, random_scalar, scalar_from_hex, scalar_to_hex
from election.ids import check_device_id
from election.manifest import Contest, Manifest
from election.proofs import RangeProof
from election.signatures import ed25519_valid

BALLOT_VERSION = 2
BALLOT_ID_SIZE = 16
MAX_TOKEN_SIGNATURE_SIZE = 1024

Choices = Mapping[str, Set[str]]
"""A voter's choices: contest id → the selection ids marked in it."""


@dataclass(frozen=True, slots=True)
class Token:
    """The single-use, roll-signed token (RSA blind signature on ``message``)."""

    message: bytes
    signature: bytes

    def to_json(self) -> dict[str, str]:
        return {"message": self.message.hex(), "signature": self.signature.hex()}

    @classmethod
    def from_json(cls, data: Any) -> Token | None:
        if data is None:
            return None
        if not isinstance(data, dict) or set(data) != {"message", "signature"}:
            raise FormatError("token: expected null or an object with message and signature")
        signature = hex_bytes(data["signature"], None, "token.signature")
        if not 0 < len(signature) <= MAX_TOKEN_SIGNATURE_SIZE:
            raise FormatError("token.signature: empty or too long")
        return cls(hex_bytes(data["message"], 32, "token.message"), signature)


@dataclass(frozen=True, slots=True)
class EncryptedSelection:
    selection_id: str
    ciphertext: Ciphertext
    proof: RangeProof


@dataclass(frozen=True, slots=True)
class EncryptedContest:
    contest_id: str
    selections: tuple[EncryptedSelection, ...]
    proof: RangeProof
    """Proof that the sum of the contest's selections is at most its limit."""

    def total(self) -> Ciphertext:
        ciphertexts = [s.ciphertext for s in self.selections]
        total = ciphertexts[0]
        for ciphertext in ciphertexts[1:]:
            total = total + ciphertext
        return total


def selection_statement(base_hash: bytes, ballot_id: bytes, contest_id: str, selection_id: str) -> dict[str, str]:
    return {
        "base_hash": base_hash.hex(),
        "ballot_id": ballot_id.hex(),
        "contest": contest_id,
        "selection": selection_id,
    }


def contest_statement(base_hash: bytes, ballot_id: bytes, contest_id: str) -> dict[str, str]:
    return {"base_hash": base_hash.hex(), "ballot_id": ballot_id.hex(), "contest": contest_id}


@dataclass(frozen=True, slots=True)
class SealedBallot:
    ballot_id: bytes
    base_hash: bytes
    device_id: str
    token: Token | None
    contests: tuple[EncryptedContest, ...]
    signature: bytes
    _encoded: bytes | None = field(default=None, init=False, repr=False, compare=False)
    """The canonical bytes of :meth:`to_json`, kept by :meth:`from_json` (the input it checked
    encodes to them); never copied by ``replace``, so a changed ballot encodes itself again."""
    _body_encoded: bytes | None = field(default=None, init=False, repr=False, compare=False)
    """The canonical bytes of :meth:`body_json`, kept the same way."""

    def body_json(self) -> dict[str, Any]:
        """Everything the device signs: the ballot without its signature."""
        return {
            "version": BALLOT_VERSION,
            "ballot_id": self.ballot_id.hex(),
            "base_hash": self.base_hash.hex(),
            "device_id": self.device_id,
            "token": None if self.token is None else self.token.to_json(),
            "contests": [
                {
                    "contest_id": contest.contest_id,
                    "selections": [
                        {
                            "selection_id": s.selection_id,
                            "ciphertext": s.ciphertext.to_json(),
                            "proof": s.proof.to_json(),
                        }
                        for s in contest.selections
                    ],
                    "proof": contest.proof.to_json(),
                }
                for contest in self.contests
            ],
        }

    def to_json(self) -> dict[str, Any]:
        return {**self.body_json(), "signature": self.signature.hex()}

    def with_token(self, token: Token, signer: DeviceSigner) -> SealedBallot:
        """The ballot to cast: the same ciphertexts and proofs, now spending ``token``, re-signed.

        A ballot is sealed for the voter's review without the token, so that a challenged
        (spoiled, publicly opened) ballot never shows the token its voter later casts with.
        """
        if signer.device_id != self.device_id:
            raise FormatError("a ballot is re-signed only by the device that sealed it")
        unsigned = replace(self, token=token, signature=b"")
        return replace(unsigned, signature=signer.sign(canonical_bytes(unsigned.body_json())))

    def encoded(self) -> bytes:
        """The sealed ballot's canonical JSON, signature included (what the record stores)."""
        return self._encoded if self._encoded is not None else canonical_bytes(self.to_json())

    @property
    def ballot_hash(self) -> bytes:
        """SHA-256 of the whole sealed ballot's canonical JSON (signature included)."""
        return sha256(self.encoded())

    def signature_valid(self, device_key: Ed25519PublicKey) -> bool:
        body = self._body_encoded if self._body_encoded is not None else canonical_bytes(self.body_json())
        return ed25519_valid(device_key, self.signature, body)

    def proof_failures(self, manifest: Manifest, public_key: Point) -> list[str]:
        """Every selection or contest whose proof does not verify (empty when all do)."""
        failures = []
        for contest in self.contests:
            limit = manifest.contest(contest.contest_id).limit
            for s in contest.selections:
                statement = selection_statement(self.base_hash, self.ballot_id, contest.contest_id, s.selection_id)
                if not s.proof.verify(s.ciphertext, 1, public_key, statement):
                    failures.append(f"selection {contest.contest_id}/{s.selection_id}")
            statement = contest_statement(self.base_hash, self.ballot_id, contest.contest_id)
            if not contest.proof.verify(contest.total(), limit, public_key, statement):
                failures.append(f"contest {contest.contest_id} limit")
        return failures

    @classmethod
    def from_json(cls, data: Any, manifest: Manifest, *, encoded: bytes | None = None) -> SealedBallot:
        """Parse and validate a sealed ballot from outside against the election's manifest.

        Checks the schema, every field's encoding and every group element, and that the
        ballot has exactly the manifest's contests and selections in the manifest's order.
        Signatures and proofs are checked separately (they need keys). ``encoded``: the
        canonical bytes of ``data``, when the caller holds them (the part of a canonical
        document it was parsed from), so that they are not made again.
        """
        fields = {"version", "ballot_id", "base_hash", "device_id", "token", "contests", "signature"}
        if not isinstance(data, dict):
            raise FormatError("sealed ballot: expected an object")
        if set(data) != fields:
            missing, extra = sorted(fields - set(data)), sorted(set(data) - fields)
            raise FormatError(f"sealed ballot: missing fields {missing}, unknown fields {extra}")
        check_version(data, BALLOT_VERSION, "sealed ballot")
        contests_data = data["contests"]
        if not isinstance(contests_data, list) or len(contests_data) != len(manifest.contests):
            raise FormatError(f"contests: expected the manifest's {len(manifest.contests)} contests")
        contests = tuple(
            _parse_contest(item, expected, f"contests[{i}]")
            for i, (item, expected) in enumerate(zip(contests_data, manifest.contests, strict=True))
        )
        ballot = cls(
            ballot_id=hex_bytes(data["ballot_id"], BALLOT_ID_SIZE, "ballot_id"),
            base_hash=hex_bytes(data["base_hash"], 32, "base_hash"),
            device_id=check_device_id(data["device_id"]),
            token=Token.from_json(data["token"]),
            contests=contests,
            signature=hex_bytes(data["signature"], 64, "signature"),
        )
        # Every field was just decoded strictly from its one encoding (lowercase hex, reduced
        # scalars, canonical points, exact fields), so ``data`` is ``to_json()`` to the byte:
        # keep its encoding, without building it again or walking it.
        whole = encoded if encoded is not None else encode_checked(data)
        object.__setattr__(ballot, "_encoded", whole)
        object.__setattr__(ballot, "_body_encoded", _unsigned(whole, data))
        return ballot


def _unsigned(whole: bytes, data: dict[str, Any]) -> bytes:
    """The canonical bytes of a sealed ballot without its signature, cut from those with it.

    Canonical JSON sorts the keys, so the ballot's last members are always ``"signature"``,
    ``"token"`` and ``"version"``: the body is the whole with the signature member taken out.
    Encoding the body again would cost as much as parsing the rest of the ballot."""
    tail = b'"token":' + encode_checked(data["token"]) + b',"version":' + str(data["version"]).encode() + b"}"
    signed = b'"signature":"' + data["signature"].encode() + b'",' + tail
    if not whole.endswith(signed):  # not reached for a ballot just decoded; kept exact anyway
        return encode_checked({name: value for name, value in data.items() if name != "signature"})
    return whole[: -len(signed)] + tail


def _parse_contest(data: Any, expected: Contest, where: str) -> EncryptedContest:
    if not isinstance(data, dict) or set(data) != {"contest_id", "selections", "proof"}:
        raise FormatError(f"{where}: expected contest_id, selections and proof")
    if data["contest_id"] != expected.id:
        raise FormatError(f"{where}.contest_id: expected {expected.id!r}")
    items = data["selections"]
    if not isinstance(items, list) or len(items) != len(expected.selections):
        raise FormatError(f"{where}.selections: expected {len(expected.selections)} selections")
    selections = []
    for j, (item, selection) in enumerate(zip(items, expected.selections, strict=True)):
        at = f"{where}.selections[{j}]"
        if not isinstance(item, dict) or set(item) != {"selection_id", "ciphertext", "proof"}:
            raise FormatError(f"{at}: expected selection_id, ciphertext and proof")
        if item["selection_id"] != selection.id:
            raise FormatError(f"{at}.selection_id: expected {selection.id!r}")
        selections.append(
            EncryptedSelection(
                selection.id,
                Ciphertext.from_json(item["ciphertext"], f"{at}.ciphertext"),
                RangeProof.from_json(item["proof"], f"{at}.proof", 1),
            )
        )
    return EncryptedContest(
        expected.id,
        tuple(selections),
        RangeProof.from_json(data["proof"], f"{where}.proof", expected.limit),
    )


@dataclass(frozen=True, slots=True)
class BallotOpening:
    """The plaintext and nonces behind a sealed ballot: revealed only to spoil it."""

    votes: dict[tuple[str, str], tuple[int, int]]
    """(contest id, selection id) → (vote 0 or 1, nonce)."""

    def choices(self) -> dict[str, set[str]]:
        result: dict[str, set[str]] = {}
        for (contest_id, selection_id), (vote, _) in self.votes.items():
            result.setdefault(contest_id, set())
            if vote:
                result[contest_id].add(selection_id)
        return result

    def to_json(self, manifest: Manifest) -> dict[str, Any]:
        return {
            "contests": [
                {
                    "contest_id": contest.id,
                    "selections": [
                        {
                            "selection_id": selection.id,
                            "vote": self.votes[contest.id, selection.id][0],
                            "nonce": scalar_to_hex(self.votes[contest.id, selection.id][1]),
                        }
                        for selection in contest.selections
                    ],
                }
                for contest in manifest.contests
            ]
        }

    @classmethod
    def from_json(cls, data: Any, manifest: Manifest) -> BallotOpening:
        contests = data.get("contests") if isinstance(data, dict) and set(data) == {"contests"} else None
        if not isinstance(contests, list) or len(contests) != len(manifest.contests):
            raise FormatError("opening: expected an object with the manifest's contests")
        votes: dict[tuple[str, str], tuple[int, int]] = {}
        for i, (item, contest) in enumerate(zip(contests, manifest.contests, strict=True)):
            at = f"opening.contests[{i}]"
            if not isinstance(item, dict) or set(item) != {"contest_id", "selections"}:
                raise FormatError(f"{at}: expected exactly contest_id and selections")
            if item["contest_id"] != contest.id:
                raise FormatError(f"{at}: expected contest {contest.id!r}")
            selections = item.get("selections")
            if not isinstance(selections, list) or len(selections) != len(contest.selections):
                raise FormatError(f"{at}.selections: expected {len(contest.selections)} entries")
            for j, (entry, selection) in enumerate(zip(selections, contest.selections, strict=True)):
                where = f"{at}.selections[{j}]"
                if not isinstance(entry, dict) or set(entry) != {"selection_id", "vote", "nonce"}:
                    raise FormatError(f"{where}: expected selection_id, vote and nonce")
                if entry["selection_id"] != selection.id:
                    raise FormatError(f"{where}.selection_id: expected {selection.id!r}")
                vote = strict_int(entry["vote"], f"{where}.vote", minimum=0, maximum=1)
                votes[contest.id, selection.id] = (
                    vote,
                    scalar_from_hex(entry["nonce"], f"{where}.nonce"),
                )
        return cls(votes)

    def opening_failures(self, ballot: SealedBallot, manifest: Manifest, public_key: Point) -> list[str]:
        """Where the opening does not reproduce the ballot or breaks a contest's limit."""
        failures = []
        for contest in ballot.contests:
            limit = manifest.contest(contest.contest_id).limit
            marked = 0
            for s in contest.selections:
                vote, nonce = self.votes[contest.contest_id, s.selection_id]
                marked += vote
                if not is_encryption_of(s.ciphertext, vote, nonce, public_key):
                    failures.append(f"{contest.contest_id}/{s.selection_id} does not reopen")
            if marked > limit:
                failures.append(f"{contest.contest_id} marks {marked} > limit {limit}")
        return failures


class DeviceSigner:
    """A terminal's signing identity: its id and Ed25519 key (the key never leaves it)."""

    def __init__(self, device_id: str, private_key: Ed25519PrivateKey) -> None:
        self.device_id = check_device_id(device_id)
        self._key = private_key

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self._key.public_key()

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)


def check_choices(manifest: Manifest, choices: Choices) -> None:
    """Refuse unknown contests/selections and overvotes before anything is encrypted."""
    unknown = set(choices) - {c.id for c in manifest.contests}
    if unknown:
        raise FormatError(f"unknown contests {sorted(unknown)}")
    for contest in manifest.contests:
        marked = set(choices.get(contest.id, ()))
        strangers = marked - set(contest.selection_ids())
        if strangers:
            raise FormatError(f"contest {contest.id}: unknown selections {sorted(strangers)}")
        if len(marked) > contest.limit:
            raise FormatError(f"contest {contest.id}: {len(marked)} marks exceed the limit {contest.limit}")


def seal_ballot(
    manifest: Manifest,
    public_key: Point,
    choices: Choices,
    signer: DeviceSigner,
    token: Token | None = None,
) -> tuple[SealedBallot, BallotOpening]:
    """Encrypt, prove and sign one ballot; returns it with its opening (keep that secret)."""
    check_choices(manifest, choices)
    base_hash = manifest.base_hash
    ballot_id = secrets.token_bytes(BALLOT_ID_SIZE)
    votes: dict[tuple[str, str], tuple[int, int]] = {}
    contests = []
    for contest in manifest.contests:
        marked = choices.get(contest.id, frozenset())
        selections = []
        nonce_sum = 0
        for selection in contest.selections:
            vote, nonce = int(selection.id in marked), random_scalar()
            nonce_sum += nonce
            votes[contest.id, selection.id] = (vote, nonce)
            ciphertext = encrypt(vote, nonce, public_key)
            statement = selection_statement(base_hash, ballot_id, contest.id, selection.id)
            proof = RangeProof.prove(ciphertext, vote, nonce, 1, public_key, statement)
            selections.append(EncryptedSelection(selection.id, ciphertext, proof))
        sealed_contest = EncryptedContest(contest.id, tuple(selections), RangeProof((), ()))
        limit_proof = RangeProof.prove(
            sealed_contest.total(),
            len(marked),
            nonce_sum % ORDER,
            contest.limit,
            public_key,
            contest_statement(base_hash, ballot_id, contest.id),
        )
        contests.append(EncryptedContest(contest.id, tuple(selections), limit_proof))
    unsigned = SealedBallot(ballot_id, base_hash, signer.device_id, token, tuple(contests), b"")
    sealed = replace(unsigned, signature=signer.sign(canonical_bytes(unsigned.body_json())))
    return sealed, BallotOpening(votes)
