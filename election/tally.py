"""Homomorphic tally, threshold decryption of the totals, and small discrete logarithms.

The tally adds ciphertexts selection by selection as ballots stream past, so memory stays
constant in the number of ballots. Only the totals are ever decrypted: each trustee present
publishes ``M_ℓ = s_ℓ·A`` with a Chaum–Pedersen proof, any ``k`` of them are combined with
Lagrange weights into ``M = s·A``, and ``B − M = total·G`` is solved for the small ``total``
by baby-step giant-step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from election.ballot import SealedBallot
from election.elgamal import ZERO_CIPHERTEXT, Ciphertext
from election.encoding import check_version, hex_bytes, strict_int
from election.errors import DecryptionError, FormatError
from election.group import IDENTITY, G, Point, point_from_hex
from election.ids import check_trustee_id
from election.keyceremony import Trustee, TrusteePublic, lagrange_coefficient, public_share
from election.manifest import Manifest
from election.pool import ordered_chunks
from election.proofs import ChaumPedersenProof

TALLY_VERSION = 1
Position = tuple[str, str]
"""(contest id, selection id)."""


def _positions(manifest: Manifest) -> list[Position]:
    return [(c.id, s.id) for c, s in manifest.positions()]


@dataclass(slots=True)
class TallyAccumulator:
    """Adds cast ballots one at a time (the caller has already checked them)."""

    manifest: Manifest
    ballot_count: int = 0
    sums: dict[Position, Ciphertext] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.sums = {position: ZERO_CIPHERTEXT for position in _positions(self.manifest)}

    def add(self, ballot: SealedBallot) -> None:
        for contest in ballot.contests:
            for selection in contest.selections:
                key = (contest.contest_id, selection.selection_id)
                self.sums[key] = self.sums[key] + selection.ciphertext
        self.ballot_count += 1

    def merge(self, other: TallyAccumulator) -> None:
        """Add another accumulator's sums (a worker's chunk): addition is associative and
        commutative, so any split of the ballots gives the same tally."""
        for key, ciphertext in other.sums.items():
            self.sums[key] = self.sums[key] + ciphertext
        self.ballot_count += other.ballot_count

    def result(self) -> EncryptedTally:
        return EncryptedTally(self.manifest.base_hash, self.ballot_count, dict(self.sums))


class _ChunkAdder:
    """Reads, validates and adds one chunk of cast ballot files (picklable for a worker)."""

    def __init__(self, source: Any, manifest: Manifest, folder: str) -> None:
        self.source, self.manifest, self.folder = source, manifest, folder

    def __getstate__(self) -> dict[str, Any]:
        return {"source": self.source, "manifest": self.manifest.to_json(), "folder": self.folder}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.source, self.folder = state["source"], state["folder"]
        self.manifest = Manifest.from_json(state["manifest"])

    def __call__(self, names: list[str]) -> TallyAccumulator:
        partial = TallyAccumulator(self.manifest)
        for name in names:
            where = f"{self.folder}/{name}.json"
            try:
                data, encoded = self.source.read_document(where)
                partial.add(SealedBallot.from_json(data, self.manifest, encoded=encoded))
            except FormatError as error:
                raise FormatError(f"{where}: {error}") from None
        return partial


def add_ballot_files(
    source: Any,
    manifest: Manifest,
    folder: str,
    *,
    workers: int = 1,
    cluster: str | None = None,
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> EncryptedTally:
    """The homomorphic sum of every ballot file in ``folder`` of a record ``source``, parsed and
    validated in ``workers`` processes or on a Dask ``cluster`` (the sum is the same for any
    split; a source that cannot be reopened in another process is read here). Raises
    FormatError naming a bad file."""
    names = source.names(folder)
    shareable = getattr(source, "shareable", False)
    workers, cluster = (workers, cluster) if shareable else (1, None)
    accumulator = TallyAccumulator(manifest)
    done = 0
    for count, partial in ordered_chunks(_ChunkAdder(source, manifest, folder), names, workers, cluster=cluster):
        accumulator.merge(partial)
        done += count
        progress(done, len(names))
    return accumulator.result()


def _per_selection(manifest: Manifest, data: Any, what: str) -> list[tuple[Position, Any]]:
    """Walk a ``contests → selections`` document that must follow the manifest exactly."""
    contests = data.get("contests") if isinstance(data, dict) else None
    if not isinstance(contests, list) or len(contests) != len(manifest.contests):
        raise FormatError(f"{what}: expected the manifest's {len(manifest.contests)} contests")
    found = []
    for i, (item, contest) in enumerate(zip(contests, manifest.contests, strict=True)):
        at = f"{what}.contests[{i}]"
        if not isinstance(item, dict) or set(item) != {"contest_id", "selections"}:
            raise FormatError(f"{at}: expected contest_id and selections")
        if item["contest_id"] != contest.id:
            raise FormatError(f"{at}.contest_id: expected {contest.id!r}")
        selections = item["selections"]
        if not isinstance(selections, list) or len(selections) != len(contest.selections):
            raise FormatError(f"{at}.selections: expected {len(contest.selections)} selections")
        for j, (entry, selection) in enumerate(zip(selections, contest.selections, strict=True)):
            if not isinstance(entry, dict) or entry.get("selection_id") != selection.id:
                raise FormatError(f"{at}.selections[{j}]: expected selection {selection.id!r}")
            found.append(((contest.id, selection.id), entry))
    return found


def _contests_json(manifest: Manifest, value_of: dict[Position, dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "contest_id": contest.id,
            "selections": [
                {"selection_id": selection.id, **value_of[contest.id, selection.id]} for selection in contest.selections
            ],
        }
        for contest in manifest.contests
    ]


def _header(data: Any, what: str, extra: set[str]) -> dict[str, Any]:
    fields = {"version", "base_hash", "ballot_count", "contests"} | extra
    if not isinstance(data, dict) or set(data) != fields:
        raise FormatError(f"{what}: expected exactly the fields {sorted(fields)}")
    check_version(data, TALLY_VERSION, what)
    strict_int(data["ballot_count"], f"{what}.ballot_count", minimum=0)
    return data


@dataclass(frozen=True, slots=True)
class EncryptedTally:
    base_hash: bytes
    ballot_count: int
    sums: dict[Position, Ciphertext]

    def to_json(self, manifest: Manifest) -> dict[str, Any]:
        return {
            "version": TALLY_VERSION,
            "base_hash": self.base_hash.hex(),
            "ballot_count": self.ballot_count,
            "contests": _contests_json(manifest, {p: {"ciphertext": c.to_json()} for p, c in self.sums.items()}),
        }

    @classmethod
    def from_json(cls, data: Any, manifest: Manifest) -> EncryptedTally:
        data = _header(data, "tally", set())
        sums = {}
        for position, entry in _per_selection(manifest, data, "tally"):
            if set(entry) != {"selection_id", "ciphertext"}:
                raise FormatError(f"tally {position}: expected selection_id and ciphertext")
            sums[position] = Ciphertext.from_json(entry["ciphertext"], f"tally {position}", allow_identity=True)
        return cls(hex_bytes(data["base_hash"], 32, "tally.base_hash"), data["ballot_count"], sums)


def share_statement(base_hash: bytes, trustee_id: str, position: Position) -> dict[str, str]:
    return {
        "base_hash": base_hash.hex(),
        "trustee": trustee_id,
        "contest": position[0],
        "selection": position[1],
    }


@dataclass(frozen=True, slots=True)
class DecryptionShare:
    """One trustee's partial decryption of every total, each with its proof."""

    trustee_id: str
    shares: dict[Position, tuple[Point, ChaumPedersenProof]]
    base_hash: bytes | None = None
    """The election the share file names (None for a share computed here, not read)."""
    ballot_count: int | None = None
    """The tally's ballot count the share file names (None likewise)."""

    @classmethod
    def compute(cls, trustee: Trustee, tally: EncryptedTally) -> DecryptionShare:
        return cls(
            trustee.trustee_id,
            {
                position: trustee.partial_decrypt(
                    ciphertext.alpha, share_statement(tally.base_hash, trustee.trustee_id, position)
                )
                for position, ciphertext in tally.sums.items()
            },
        )

    def failures(self, tally: EncryptedTally, trustee: TrusteePublic, trustees: Sequence[TrusteePublic]) -> list[str]:
        """Positions whose share does not prove to come from ``trustee``'s secret share."""
        own_public = public_share(trustee.index, trustees)
        return [
            f"{self.trustee_id}: share for {position[0]}/{position[1]} does not verify"
            for position, (share, proof) in self.shares.items()
            if not proof.verify(
                tally.sums[position].alpha,
                own_public,
                share,
                share_statement(tally.base_hash, self.trustee_id, position),
            )
        ]

    def to_json(self, manifest: Manifest, tally: EncryptedTally) -> dict[str, Any]:
        return {
            "version": TALLY_VERSION,
            "base_hash": tally.base_hash.hex(),
            "ballot_count": tally.ballot_count,
            "trustee_id": self.trustee_id,
            "contests": _contests_json(
                manifest,
                {p: {"share": s.hex(), "proof": pr.to_json()} for p, (s, pr) in self.shares.items()},
            ),
        }

    @classmethod
    def from_json(cls, data: Any, manifest: Manifest) -> DecryptionShare:
        data = _header(data, "decryption share", {"trustee_id"})
        shares = {}
        for position, entry in _per_selection(manifest, data, "decryption share"):
            if set(entry) != {"selection_id", "share", "proof"}:
                raise FormatError(f"share {position}: expected selection_id, share and proof")
            shares[position] = (
                point_from_hex(entry["share"], f"share {position}", allow_identity=True),
                ChaumPedersenProof.from_json(entry["proof"], f"share {position}.proof"),
            )
        return cls(
            check_trustee_id(data["trustee_id"], "decryption share.trustee_id"),
            shares,
            hex_bytes(data["base_hash"], 32, "decryption share.base_hash"),
            data["ballot_count"],
        )


class DiscreteLog:
    """Baby-step giant-step for ``m`` in ``0..bound`` given ``m·G``: O(√bound) time and memory."""

    def __init__(self, bound: int) -> None:
        self.bound = bound
        self._step = max(1, math.isqrt(bound) + 1)
        self._baby: dict[bytes, int] = {}
        point = IDENTITY
        for j in range(self._step):
            self._baby[point.raw] = j
            point = point + G
        self._giant = point  # step · G

    def solve(self, target: Point) -> int:
        point = target
        for i in range(self._step + 1):
            j = self._baby.get(point.raw)
            if j is not None:
                value = i * self._step + j
                if value <= self.bound:
                    return value
                break
            point = point - self._giant
        raise DecryptionError(f"decrypted value is not in 0..{self.bound}")


@dataclass(frozen=True, slots=True)
class Results:
    base_hash: bytes
    ballot_count: int
    trustees_present: tuple[str, ...]
    totals: dict[Position, int]

    def to_json(self, manifest: Manifest) -> dict[str, Any]:
        return {
            "version": TALLY_VERSION,
            "base_hash": self.base_hash.hex(),
            "ballot_count": self.ballot_count,
            "trustees_present": list(self.trustees_present),
            "contests": _contests_json(manifest, {p: {"total": t} for p, t in self.totals.items()}),
        }

    @classmethod
    def from_json(cls, data: Any, manifest: Manifest) -> Results:
        data = _header(data, "results", {"trustees_present"})
        present = data["trustees_present"]
        if not isinstance(present, list):
            raise FormatError("results.trustees_present: a list of trustee ids")
        for i, trustee_id in enumerate(present):
            check_trustee_id(trustee_id, f"results.trustees_present[{i}]")
        if present != sorted(set(present)):
            raise FormatError("results.trustees_present: trustee ids in ascending order, each once")
        totals = {}
        for position, entry in _per_selection(manifest, data, "results"):
            if set(entry) != {"selection_id", "total"}:
                raise FormatError(f"results {position}: expected selection_id and an integer total")
            totals[position] = strict_int(entry["total"], f"results {position}.total", minimum=0)
        return cls(hex_bytes(data["base_hash"], 32, "results.base_hash"), data["ballot_count"], tuple(present), totals)


def combined_share(position: Position, shares: Sequence[DecryptionShare], indices: dict[str, int]) -> Point:
    """``M = Σ w_ℓ · M_ℓ`` over the trustees present (Lagrange weights at 0)."""
    present = [indices[s.trustee_id] for s in shares]
    total = IDENTITY
    for share in shares:
        weight = lagrange_coefficient(indices[share.trustee_id], present)
        total = total + weight * share.shares[position][0]
    return total


def decrypt_totals(
    tally: EncryptedTally,
    shares: Sequence[DecryptionShare],
    trustees: Sequence[TrusteePublic],
    quorum: int,
    dlog: DiscreteLog | None = None,
) -> Results:
    """Combine any ``quorum`` valid shares into the totals; refuse with fewer or bad ones."""
    known = {t.trustee_id: t for t in trustees}
    present = sorted({s.trustee_id for s in shares})
    if len(present) != len(shares):
        raise DecryptionError("a trustee's share was given twice")
    if len(present) < quorum:
        raise DecryptionError(f"{len(present)} trustees present, {quorum} needed to decrypt")
    for share in shares:
        if share.trustee_id not in known:
            raise DecryptionError(f"unknown trustee {share.trustee_id}")
        problems = share.failures(tally, known[share.trustee_id], trustees)
        if problems:
            raise DecryptionError("; ".join(problems))
    indices = {t.trustee_id: t.index for t in trustees}
    dlog = dlog or DiscreteLog(tally.ballot_count)
    totals = {
        position: dlog.solve(ciphertext.beta - combined_share(position, shares, indices))
        for position, ciphertext in tally.sums.items()
    }
    return Results(tally.base_hash, tally.ballot_count, tuple(present), totals)


def tally_ballots(manifest: Manifest, ballots: Iterable[SealedBallot]) -> EncryptedTally:
    accumulator = TallyAccumulator(manifest)
    for ballot in ballots:
        accumulator.add(ballot)
    return accumulator.result()
