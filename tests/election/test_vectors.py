"""Golden test vectors: the published record and canonical examples must not change.

``docs/test-vectors/`` holds a small real record (made by ``election simulate``) and the
hashes an outside verifier should get from it (``expected.json``), plus canonical-JSON
examples (``canonical.json``) and ristretto255 vectors (``ristretto255.json``: RFC 9496's
small multiples and bad encodings, checked against our group layer, and ElGamal examples).
These tests recompute every expected value with the project's
own code: if a change to the encoding, the hashes or the verifier moves any of them, the
format version must change with it (issue 11: "canonical bytes of existing documents
unchanged unless the format version changes").

Regenerate ``expected.json`` and ``ristretto255.json`` (only together with a format version
change) with ``.venv/bin/python tests/election/test_vectors.py --write``; the record itself is
made by ``election simulate`` (the command is in ``docs/test-vectors/README.md``).
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
from election.chain import TRACKING_DOMAIN, batch_sizes, genesis_hash  # noqa: E402
from election.context import ElectionContext  # noqa: E402
from election.devices import SET_DOMAIN, DeviceStatement  # noqa: E402
from election.elgamal import encrypt  # noqa: E402
from election.encoding import canonical_bytes, hash_value, parse_json, sha256  # noqa: E402
from election.errors import FormatError, InvalidPoint  # noqa: E402
from election.group import ORDER, G, Point, scalar_to_hex  # noqa: E402
from election.keyceremony import TrusteePublic, lagrange_coefficient, public_share  # noqa: E402
from election.manifest import Manifest, sample_manifest  # noqa: E402
from election.proofs import PROOF_VERSION, RangeProof, challenge_of  # noqa: E402
from election.record import DirectoryRecord  # noqa: E402
from election.stations import parse_chain_lines  # noqa: E402
from election.tally import Results  # noqa: E402
from election.verify import CHECKS, verify_record  # noqa: E402

VECTORS = ROOT / "docs" / "test-vectors"
RECORD = VECTORS / "record"
FORMAT = "polling-station/test-vectors/v2"
GROUP_FORMAT = "polling-station/ristretto255-vectors/v2"

RFC9496_SMALL_MULTIPLES = (
    "0000000000000000000000000000000000000000000000000000000000000000",
    "e2f2ae0a6abc4e71a884a961c500515f58e30b6aa582dd8db6a65945e08d2d76",
    "6a493210f7499cd17fecb510ae0cea23a110e8d5b901f8acadd3095c73a3b919",
    "94741f5d5d52755ece4f23f044ee27d5d1ea1e2bd196b462166b16152a9d0259",
    "da80862773358b466ffadfe0b3293ab3d9fd53c5ea6c955358f568322daf6a57",
    "e882b131016b52c1d3337080187cf768423efccbb517bb495ab812c4160ff44e",
    "f64746d3c92b13050ed8d80236a7f0007c3b3f962f5ba793d19a601ebb1df403",
    "44f53520926ec81fbd5a387845beb7df85a96a24ece18738bdcfa6a7822a176d",
    "903293d8f2287ebe10e2374dc1a53e0bc887e592699f02d077d5263cdd55601c",
    "02622ace8f7303a31cafc63f8fc48fdc16e1c8c8d234b2f0d6685282a9076031",
    "20706fd788b2720a1ed2a5dad4952b01f413bcf0e7564de8cdc816689e2db95f",
    "bce83f8ba5dd2fa572864c24ba1810f9522bc6004afe95877ac73241cafdab42",
    "e4549ee16b9aa03099ca208c67adafcafa4c3f3e4e5303de6026e3ca8ff84460",
    "aa52e000df2e16f55fb1032fc33bc42742dad6bd5a8fc0be0167436c5948501f",
    "46376b80f409b29dc2b5f6f0c52591990896e5716f41477cd30085ab7f10301e",
    "e0c418f7c8d9c4cdd7395b93ea124f3ad99021bb681dfc3302a9d99a2e53e64e",
)
"""RFC 9496 Appendix A.1: the encodings of 0·B … 15·B (0·B, the identity, is 32 zero bytes)."""
RFC9496_BAD_ENCODINGS = {
    "non-canonical field encoding": (
        "00ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
        "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "f3ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    ),
    "negative field element": (
        "0100000000000000000000000000000000000000000000000000000000000000",
        "01ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "ed57ffd8c914fb201471d1c3d245ce3c746fcbe63a3679d51b6a516ebebe0e20",
        "c34c4e1826e5d403b78e246e88aa051c36ccf0aafebffe137d148a2bf9104562",
    ),
    "non-square x^2": (
        "26948d35ca62e643e26a83177332e6b6afeb9d08e4268b650f1f5bbd8d81d371",
        "4eac077a713c57b4f4397629a4145982c661f48044dd3f96427d40b147d9742f",
    ),
    "negative xy": (
        "3eb858e78f5a7254d8c9731174a94f76755fd3941c0ac93735c07ba14579630e",
        "a45fdc55c76448c049a1ab33f17023edfb2be3581e9c7aade8a6125215e04220",
    ),
    "s = -1 (y = 0)": ("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",),
}
"""RFC 9496 Appendix A.2 (a selection from each group): encodings every decoder must refuse."""


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
                    "signed_body_sha256": sha256(canonical_bytes(ballot.body_json())).hex(),
                    "ballot_hash": ballot.ballot_hash.hex(),
                }
            )
    devices = {}
    for path in sorted((record / "device_statements").glob("*.json")):
        statement = DeviceStatement.from_json(_read(path))
        hashes = sorted(bytes.fromhex(b["ballot_hash"]) for b in ballots if b["device_id"] == statement.device_id)
        devices[statement.device_id] = {
            "sorted_ballot_hashes": [h.hex() for h in hashes],
            "commitment_input_hex": (SET_DOMAIN + b"".join(hashes)).hex(),
            "commitment": sha256(SET_DOMAIN + b"".join(hashes)).hex(),
            "sealed": len(hashes),
            "signed_body_sha256": sha256(
                canonical_bytes(DeviceStatement.body(statement.device_id, statement.base_hash, statement.sealed,
                                                     statement.commitment))
            ).hex(),
        }  # fmt: skip
    stations = {}
    for folder in sorted((record / "stations").iterdir()):
        entries = list(parse_chain_lines((folder / "chain.jsonl").read_bytes()))
        checkpoint = _read(folder / "checkpoint.json")
        closing = _read(folder / "closing.json")
        stations[folder.name] = {
            "genesis_hash": genesis_hash(manifest.base_hash, folder.name).hex(),
            "entries": [
                {
                    "position": e.position,
                    "batch": e.batch,
                    "kind": e.kind,
                    "ballot_hash": e.ballot_hash.hex(),
                    "entry_hash": e.entry_hash.hex(),
                    "tracking_digest": sha256(TRACKING_DOMAIN + e.ballot_hash)[:10].hex(),
                    "tracking_code": e.tracking_code,
                }
                for e in entries
            ],
            "batches": [{"batch": batch, "last_position": end} for batch, end in batch_sizes(entries)],
            "checkpoint": {"position": checkpoint["position"], "head_hash": checkpoint["head_hash"]},
            "closed_position": closing["closed_position"],
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
        "device_statements": devices,
        "batch_min": manifest.batch_min,
        "mode": manifest.mode,
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


def compute_group_vectors() -> dict[str, Any]:
    """ristretto255 as the record uses it: RFC 9496's vectors through our group layer, scalar
    multiples, and exponential ElGamal of votes 0 and 1 under a fixed key and nonce."""
    multiples = [(n * G).hex() for n in range(len(RFC9496_SMALL_MULTIPLES))]
    key_scalar, nonce = 0x1234567890ABCDEF, 0xFEDCBA0987654321
    key = key_scalar * G
    return {
        "format": GROUP_FORMAT,
        "order": str(ORDER),
        "small_multiples": multiples,
        "bad_encodings": {reason: list(encodings) for reason, encodings in RFC9496_BAD_ENCODINGS.items()},
        "scalar_multiples": [
            {"scalar": scalar_to_hex(k), "point": (k * G).hex()} for k in (ORDER - 1, 2**128 + 1, key_scalar)
        ],
        "elgamal": {
            "key": key.hex(),
            "nonce": scalar_to_hex(nonce),
            "votes": {str(vote): encrypt(vote, nonce, key).to_json() for vote in (0, 1)},
        },
    }


def group_vectors() -> dict[str, Any]:
    return json.loads((VECTORS / "ristretto255.json").read_text(encoding="utf-8"))


def test_our_group_gives_rfc_9496s_small_multiples_and_refuses_its_bad_encodings() -> None:
    assert compute_group_vectors()["small_multiples"] == list(RFC9496_SMALL_MULTIPLES)
    assert Point.from_bytes(bytes(32), allow_identity=True).is_identity
    with pytest.raises(InvalidPoint):
        Point.from_bytes(bytes(32))  # the identity only where a caller allows it
    for encodings in RFC9496_BAD_ENCODINGS.values():
        for encoding in encodings:
            with pytest.raises(InvalidPoint):
                Point.from_bytes(bytes.fromhex(encoding), allow_identity=True)


def test_the_published_group_vectors_are_what_our_code_computes() -> None:
    assert group_vectors() == compute_group_vectors()


def test_golden_hashes_of_documented_documents() -> None:
    """Pins formats.md's worked examples: these bytes are format version 2."""
    assert hash_value(sample_manifest(2, 3, 1).to_json()).hex() == GOLDEN["sample_manifest_2_3_1"]
    genesis = genesis_hash(bytes(32), "station-1")
    assert genesis.hex() == GOLDEN["genesis_zero_station_1"]
    from election.chain import ChainEntry

    entry = ChainEntry(1, 1, genesis, bytes(range(32)), "cast")
    assert canonical_bytes(entry.to_json()).decode() == GOLDEN["entry_1_json"]
    assert entry.entry_hash.hex() == GOLDEN["entry_1_hash"]
    assert entry.tracking_code == GOLDEN["entry_1_tracking_code"]
    assert canonical_bytes(True) != canonical_bytes(1)
    assert hash_value({"v": True}) != hash_value({"v": 1})


GOLDEN = {
    "sample_manifest_2_3_1": "0fe1a0f495b2ca508312ed887ebf78bd77ad6f464d56e62a6bc9504fa2c27d75",
    "genesis_zero_station_1": "965de1abed4030aa57a633d802a1b2a3c68fb6dd8fe547400fa1996a33291ecc",
    "entry_1_json": (
        '{"ballot_hash":"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f","batch":1,"kind":"cast",'
        '"position":1,"prev_hash":"965de1abed4030aa57a633d802a1b2a3c68fb6dd8fe547400fa1996a33291ecc","version":2}'
    ),
    "entry_1_hash": "ab354bf707539c0eea26d621add6561c117750498ad0478488cec3ab7fbd667d",
    "entry_1_tracking_code": "P49G-E9SX-8HFF-7DRC",
}
"""Computed with the code of record format 2 (issues 16 and 18) and shown in formats.md."""


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit(
            "usage: tests/election/test_vectors.py --write   (regenerates docs/test-vectors/*.json but the record)"
        )
    for name, vectors in (("expected.json", compute_expected(RECORD)), ("ristretto255.json", compute_group_vectors())):
        text = json.dumps(vectors, indent=2, ensure_ascii=False, sort_keys=True) + "\n"
        (VECTORS / name).write_text(text, encoding="utf-8")
        print(f"wrote {VECTORS / name}")
