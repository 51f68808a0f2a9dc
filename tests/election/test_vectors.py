"""Golden test vectors: the published record and canonical examples must not change.

``docs/test-vectors/`` holds a small real record (made by ``election simulate``) and the
hashes an outside verifier should get from it (``expected.json``), plus canonical-JSON
examples (``canonical.json``). These tests recompute every expected value with the project's
own code: if a change to the encoding, the hashes or the verifier moves any of them, the
format version must change with it (issue 11: "canonical bytes of existing documents
unchanged unless the format version changes").

Regenerate ``expected.json`` (only together with a format version change) with
``.venv/bin/python tests/election/test_vectors.py --write``.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
if __name__ == "__main__":  # run as a script to regenerate expected.json
    sys.path.insert(0, str(ROOT))

from election.ballot import SealedBallot, selection_statement  # noqa: E402
from election.chain import genesis_hash  # noqa: E402
from election.context import ElectionContext  # noqa: E402
from election.encoding import canonical_bytes, hash_value, parse_json, sha256  # noqa: E402
from election.errors import FormatError  # noqa: E402
from election.group import ORDER, G, scalar_to_hex  # noqa: E402
from election.keyceremony import TrusteePublic, lagrange_coefficient, public_share  # noqa: E402
from election.manifest import Manifest, sample_manifest  # noqa: E402
from election.proofs import PROOF_VERSION, RangeProof, challenge_of  # noqa: E402
from election.record import DirectoryRecord  # noqa: E402
from election.stations import parse_chain_lines  # noqa: E402
from election.tally import Results  # noqa: E402
from election.verify import CHECKS, verify_record  # noqa: E402

VECTORS = ROOT / "docs" / "test-vectors"
RECORD = VECTORS / "record"
FORMAT = "polling-station/test-vectors/v1"


def _read(path: Path) -> Any:
    return parse_json(path.read_bytes(), canonical=True)


def _range_proof_example(record: Path, manifest: Manifest, key_hex: str) -> dict[str, Any]:
    """Every intermediate value of one selection proof check (formats.md §3, §3.1)."""
    path = sorted((record / "ballots").glob("*.json"))[0]
    ballot = SealedBallot.from_json(_read(path), manifest)
    contest, chosen = ballot.contests[0], ballot.contests[0].selections[0]
    context = ElectionContext.from_json(_read(record / "context.json"))
    key = context.joint_public_key
    assert key.hex() == key_hex
    proof: RangeProof = chosen.proof
    commitments = []
    shifted = chosen.ciphertext.beta
    for j, (c, v) in enumerate(zip(proof.challenges, proof.responses, strict=True)):
        if j:
            shifted = shifted - G
        commitments += [v * G - c * chosen.ciphertext.alpha, v * key - c * shifted]
    statement = {
        **selection_statement(ballot.base_hash, ballot.ballot_id, contest.contest_id, chosen.selection_id),
        "limit": 1,
        "key": key.hex(),
        **chosen.ciphertext.to_json(),
    }
    message = canonical_bytes(
        {
            "v": PROOF_VERSION,
            "domain": "range",
            "statement": statement,
            "commitments": [point.hex() for point in commitments],
        }
    )
    challenge = challenge_of("range", statement, commitments)
    assert challenge == sum(proof.challenges) % ORDER, "the example proof must verify"
    return {
        "where": f"ballots/{path.name} contests[0].selections[0].proof",
        "commitments": [point.hex() for point in commitments],
        "m": message.decode("utf-8"),
        "m_sha256": sha256(message).hex(),
        "h_0": hashlib.sha256(b"\x00" + message).hexdigest(),
        "h_1": hashlib.sha256(b"\x01" + message).hexdigest(),
        "challenge": scalar_to_hex(challenge),
    }


def compute_expected(record: Path) -> dict[str, Any]:
    """Everything an outside verifier should compute from the record, by our code."""
    manifest = Manifest.from_json(_read(record / "manifest.json"))
    context = ElectionContext.from_json(_read(record / "context.json"))
    trustees = [TrusteePublic.from_json(_read(record / "trustees" / f"{t}.json")) for t in context.trustee_ids]
    files = {
        path.relative_to(record).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(record.rglob("*"))
        if path.is_file()
    }
    ballots = []
    for folder in ("ballots", "spoiled"):
        for path in sorted((record / folder).glob("*.json")):
            data = _read(path)
            ballot = SealedBallot.from_json(data if folder == "ballots" else data["ballot"], manifest)
            ballots.append(
                {
                    "file": f"{folder}/{path.name}",
                    "ballot_id": ballot.ballot_id.hex(),
                    "device_id": ballot.device_id,
                    "device_seq": ballot.device_seq,
                    "prev_hash": ballot.prev_hash.hex(),
                    "signed_body_sha256": sha256(canonical_bytes(ballot.body_json())).hex(),
                    "ballot_hash": ballot.ballot_hash.hex(),
                }
            )
    stations = {}
    for folder in sorted((record / "stations").iterdir()):
        entries = list(parse_chain_lines((folder / "chain.jsonl").read_bytes()))
        checkpoint = _read(folder / "checkpoint.json")
        stations[folder.name] = {
            "genesis_hash": genesis_hash(manifest.base_hash, folder.name).hex(),
            "entries": [
                {
                    "position": e.position,
                    "kind": e.kind,
                    "ballot_hash": e.ballot_hash.hex(),
                    "entry_hash": e.entry_hash.hex(),
                    "tracking_code": e.tracking_code,
                }
                for e in entries
            ],
            "checkpoint": {"position": checkpoint["position"], "head_hash": checkpoint["head_hash"]},
        }
    results = Results.from_json(_read(record / "results.json"), manifest)
    indices = {t.trustee_id: t.index for t in trustees}
    present = [indices[t] for t in results.trustees_present]
    report = verify_record(DirectoryRecord(record))
    return {
        "format": FORMAT,
        "record": "record",
        "base_hash": manifest.base_hash.hex(),
        "joint_public_key": context.joint_public_key.hex(),
        "trustee_indices": indices,
        "public_shares": {t.trustee_id: public_share(t.index, trustees).hex() for t in trustees},
        "lagrange_weights": {
            t: scalar_to_hex(lagrange_coefficient(indices[t], present)) for t in results.trustees_present
        },
        "files_sha256": files,
        "ballots": ballots,
        "stations": stations,
        "results": {f"{c}/{s}": total for (c, s), total in results.totals.items()},
        "range_proof_example": _range_proof_example(record, manifest, context.joint_public_key.hex()),
        "verification": {
            "passed": report.passed,
            "checks": len(CHECKS),
            "ballots_checked": report.ballots_checked,
        },
    }


def expected() -> dict[str, Any]:
    return json.loads((VECTORS / "expected.json").read_text(encoding="utf-8"))


def test_the_published_record_reproduces_every_expected_value() -> None:
    assert expected() == compute_expected(RECORD)


def test_the_published_record_passes_every_check() -> None:
    report = verify_record(DirectoryRecord(RECORD))
    assert report.passed, {n: o.problems for n, o in report.outcomes.items() if not o.passed}
    assert report.ballots_checked == len(expected()["ballots"])


def test_every_record_file_hash_is_the_hash_of_its_canonical_value() -> None:
    for name, digest in expected()["files_sha256"].items():
        path = RECORD / name
        if name.endswith(".json"):
            assert hash_value(_read(path)).hex() == digest, name
        else:  # chain.jsonl: canonical lines, each followed by "\n"
            assert sha256(path.read_bytes()).hex() == digest


def canonical_examples() -> dict[str, Any]:
    return json.loads((VECTORS / "canonical.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("example", canonical_examples()["canonical"], ids=lambda e: e["name"])
def test_canonical_examples(example: dict[str, Any]) -> None:
    value = parse_json(bytes.fromhex(example["input_hex"]))
    encoded = canonical_bytes(value)
    assert encoded.hex() == example["canonical_hex"]
    assert sha256(encoded).hex() == example["sha256"]
    assert parse_json(encoded, canonical=True) == value
    if example.get("in_formats_md"):
        assert encoded.decode("utf-8") in (ROOT / "docs" / "formats.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("example", canonical_examples()["refused"], ids=lambda e: e["name"])
def test_refused_examples(example: dict[str, Any]) -> None:
    with pytest.raises(FormatError):
        parse_json(bytes.fromhex(example["input_hex"]), canonical=example.get("canonical", False))


def test_golden_hashes_of_documented_documents() -> None:
    """Pins formats.md's worked examples: these bytes are format version 1."""
    assert hash_value(sample_manifest(2, 3, 1).to_json()).hex() == GOLDEN["sample_manifest_2_3_1"]
    genesis = genesis_hash(bytes(32), "station-1")
    assert genesis.hex() == GOLDEN["genesis_zero_station_1"]
    from election.chain import ChainEntry

    entry = ChainEntry(1, genesis, bytes(range(32)), "cast")
    assert canonical_bytes(entry.to_json()).decode() == GOLDEN["entry_1_json"]
    assert entry.entry_hash.hex() == GOLDEN["entry_1_hash"]
    assert entry.tracking_code == GOLDEN["entry_1_tracking_code"]
    assert canonical_bytes(True) != canonical_bytes(1)
    assert hash_value({"v": True}) != hash_value({"v": 1})


GOLDEN = {
    "sample_manifest_2_3_1": "df1454dffc18419b9e35af6fa04de58c6074f242be63f671c0ac4f90d859bc37",
    "genesis_zero_station_1": "6a636241d24af6c3cbd0d6417455974c547436ca825d1e8fb40aefe8d8dc0ef5",
    "entry_1_json": (
        '{"ballot_hash":"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f","kind":"cast",'
        '"position":1,"prev_hash":"6a636241d24af6c3cbd0d6417455974c547436ca825d1e8fb40aefe8d8dc0ef5","version":1}'
    ),
    "entry_1_hash": "0ae4720d22af27f8b0322d72c43b335ccf49c4d41e702820d1e97e66aca88016",
    "entry_1_tracking_code": "BLSH-EDJC-V4T7-RMBS",
}
"""Computed with the code of format version 1 before issue 11 (commit db64286) and unchanged since."""


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: tests/election/test_vectors.py --write   (regenerates docs/test-vectors/expected.json)")
    text = json.dumps(compute_expected(RECORD), indent=2, ensure_ascii=False, sort_keys=True) + "\n"
    (VECTORS / "expected.json").write_text(text, encoding="utf-8")
    print(f"wrote {VECTORS / 'expected.json'}")
