"""Non-interactive zero-knowledge proofs (Fiat–Shamir, compact form).

Every proof here is a sigma protocol made non-interactive by hashing the statement and the
commitments. Only challenges and responses travel; the verifier recomputes the commitments
from them and checks that the hash of the statement and those commitments gives back the
challenge(s). The hash input is canonical JSON (``election.encoding``) naming the proof's
domain, the election's base hash, and where the proof sits (contest, selection, trustee),
so a proof cannot be replayed elsewhere. ``docs/formats.md`` lists every input.

- :class:`RangeProof`: a ciphertext encrypts an integer in ``0..limit`` (disjunctive
  Chaum–Pedersen with ``limit + 1`` branches). With ``limit = 1`` it is the proof that a
  selection encrypts 0 or 1; over a contest's summed ciphertext it proves the contest
  respects its selection limit.
- :class:`SchnorrProof`: knowledge of the secret behind a public commitment (key ceremony).
- :class:`ChaumPedersenProof`: a decryption share uses the same secret as the trustee's
  public share (``log_G S = log_A M``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Self

from election.elgamal import Ciphertext
from election.encoding import INT_LIMIT, canonical_bytes, encode_checked
from election.errors import FormatError, ProofError
from election.group import (
    ORDER,
    G,
    Point,
    hash_to_scalar,
    random_scalar,
    scalar_from_hex,
    scalar_to_hex,
)

PROOF_VERSION = 1


def challenge_of(domain: str, statement: dict[str, Any], commitments: list[Point]) -> int:
    """The Fiat–Shamir challenge: a wide hash of the domain, statement and commitments."""
    document = {
        "v": PROOF_VERSION,
        "domain": domain,
        "statement": statement,
        "commitments": [point.hex() for point in commitments],
    }
    if type(domain) is str and domain.isascii() and _plain(statement):
        # Every statement is flat ASCII strings and bounded integers (hex, ids, limits):
        # canonical JSON then needs no walk over the tree, only its encoder (a verifier
        # hashes ten of these per 2 × 4 ballot). Anything else is checked in full.
        return hash_to_scalar(encode_checked(document))
    return hash_to_scalar(canonical_bytes(document))


def _plain(statement: dict[str, Any]) -> bool:
    """Whether ``statement`` is an object of ASCII strings and integers below 2^63 in size: the
    values whose canonical JSON is exactly what the standard encoder writes."""
    if type(statement) is not dict:
        return False
    for key, value in statement.items():
        if type(key) is not str or not key.isascii():
            return False
        kind = type(value)
        if kind is str:
            if not value.isascii():
                return False
        elif kind is not int or not -INT_LIMIT < value < INT_LIMIT:
            return False
    return True


def _scalar_list(data: Any, key: str, what: str, length: int) -> tuple[int, ...]:
    items = data.get(key) if isinstance(data, dict) else None
    if not isinstance(items, list) or len(items) != length:
        raise FormatError(f"{what}.{key}: expected a list of {length} scalars")
    return tuple(scalar_from_hex(item, f"{what}.{key}[{i}]") for i, item in enumerate(items))


@dataclass(frozen=True, slots=True)
class RangeProof:
    """Proof that a ciphertext encrypts one of ``0..limit`` (one challenge/response per value)."""

    challenges: tuple[int, ...]
    responses: tuple[int, ...]

    DOMAIN = "range"

    @classmethod
    def prove(
        cls,
        ciphertext: Ciphertext,
        value: int,
        nonce: int,
        limit: int,
        public_key: Point,
        statement: dict[str, Any],
    ) -> RangeProof:
        """Prove ``ciphertext = (nonce·G, value·G + nonce·K)`` with ``value`` in ``0..limit``.

        Refuses a value outside the range: no valid proof exists for it.
        """
        if not 0 <= value <= limit:
            raise ProofError(f"cannot prove that {value} lies in 0..{limit}")
        challenges = [0] * (limit + 1)
        responses = [0] * (limit + 1)
        commitments: list[Point] = []
        seed = random_scalar()
        for j in range(limit + 1):
            if j == value:
                commitments += [seed * G, seed * public_key]
                continue
            # Simulated branch. The prover knows the nonce, so the commitments
            # v·G − c·α and v·K − c·(β − j·G) reduce to (v − c·r)·G and (v − c·r)·K − c·(m − j)·G.
            challenges[j], responses[j] = random_scalar(), random_scalar()
            shifted = (responses[j] - challenges[j] * nonce) % ORDER
            commitments += [
                shifted * G,
                shifted * public_key - (challenges[j] * (value - j)) * G,
            ]
        total = challenge_of(cls.DOMAIN, _range_statement(statement, limit, public_key, ciphertext), commitments)
        challenges[value] = (total - sum(challenges)) % ORDER
        responses[value] = (seed + challenges[value] * nonce) % ORDER
        return cls(tuple(challenges), tuple(responses))

    def verify(
        self,
        ciphertext: Ciphertext,
        limit: int,
        public_key: Point,
        statement: dict[str, Any],
    ) -> bool:
        if len(self.challenges) != limit + 1 or len(self.responses) != limit + 1:
            return False
        commitments: list[Point] = []
        shifted_beta = ciphertext.beta  # β − j·G for j = 0, 1, …
        for j, (challenge, response) in enumerate(zip(self.challenges, self.responses, strict=True)):
            if j:
                shifted_beta = shifted_beta - G
            commitments += [
                response * G - challenge * ciphertext.alpha,
                response * public_key - challenge * shifted_beta,
            ]
        total = challenge_of(self.DOMAIN, _range_statement(statement, limit, public_key, ciphertext), commitments)
        return sum(self.challenges) % ORDER == total

    def to_json(self) -> dict[str, list[str]]:
        return {
            "challenges": [scalar_to_hex(c) for c in self.challenges],
            "responses": [scalar_to_hex(v) for v in self.responses],
        }

    @classmethod
    def from_json(cls, data: Any, what: str, limit: int) -> RangeProof:
        if not isinstance(data, dict) or set(data) != {"challenges", "responses"}:
            raise FormatError(f"{what}: a range proof has exactly challenges and responses")
        return cls(
            _scalar_list(data, "challenges", what, limit + 1),
            _scalar_list(data, "responses", what, limit + 1),
        )


def _range_statement(
    statement: dict[str, Any], limit: int, public_key: Point, ciphertext: Ciphertext
) -> dict[str, Any]:
    return {**statement, "limit": limit, "key": public_key.hex(), **ciphertext.to_json()}


@dataclass(frozen=True, slots=True)
class _SingleChallengeProof:
    """A proof that travels as one challenge and one response."""

    challenge: int
    response: int

    def to_json(self) -> dict[str, str]:
        return {"challenge": scalar_to_hex(self.challenge), "response": scalar_to_hex(self.response)}

    @classmethod
    def from_json(cls, data: Any, what: str) -> Self:
        if not isinstance(data, dict) or set(data) != {"challenge", "response"}:
            raise FormatError(f"{what}: a proof has exactly challenge and response")
        return cls(
            scalar_from_hex(data["challenge"], f"{what}.challenge"),
            scalar_from_hex(data["response"], f"{what}.response"),
        )


@dataclass(frozen=True, slots=True)
class SchnorrProof(_SingleChallengeProof):
    """Proof of knowledge of ``x`` such that ``X = x·G``."""

    DOMAIN = "schnorr"

    @classmethod
    def prove(cls, secret: int, public: Point, statement: dict[str, Any]) -> SchnorrProof:
        seed = random_scalar()
        challenge = challenge_of(cls.DOMAIN, {**statement, "public": public.hex()}, [seed * G])
        return cls(challenge, (seed + challenge * secret) % ORDER)

    def verify(self, public: Point, statement: dict[str, Any]) -> bool:
        commitment = self.response * G - self.challenge * public
        return self.challenge == challenge_of(self.DOMAIN, {**statement, "public": public.hex()}, [commitment])


@dataclass(frozen=True, slots=True)
class ChaumPedersenProof(_SingleChallengeProof):
    """Proof that ``log_G S = log_A M``: the share ``M`` was made with the secret behind ``S``."""

    DOMAIN = "chaum-pedersen"

    @classmethod
    def prove(
        cls, secret: int, base: Point, public: Point, share: Point, statement: dict[str, Any]
    ) -> ChaumPedersenProof:
        seed = random_scalar()
        full = _cp_statement(statement, base, public, share)
        challenge = challenge_of(cls.DOMAIN, full, [seed * G, seed * base])
        return cls(challenge, (seed + challenge * secret) % ORDER)

    def verify(self, base: Point, public: Point, share: Point, statement: dict[str, Any]) -> bool:
        commitments = [
            self.response * G - self.challenge * public,
            self.response * base - self.challenge * share,
        ]
        full = _cp_statement(statement, base, public, share)
        return self.challenge == challenge_of(self.DOMAIN, full, commitments)


def _cp_statement(statement: dict[str, Any], base: Point, public: Point, share: Point) -> dict[str, Any]:
    return {**statement, "base": base.hex(), "public": public.hex(), "share": share.hex()}
