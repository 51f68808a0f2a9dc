"""Real records follow the schemas file by file, and hostile variants of each file do not.

The record comes from the project's own simulation (`election simulate`: ceremony, sealed
ballots, challenges, stations, tally, decryption), plus the published test-vector record.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hostile import root_variants, variants
from schema_tools import SCHEMAS, assert_invalid, assert_valid, errors

from election.cli import main as election_cli
from election.encoding import canonical_bytes, parse_json
from election.manifest import Manifest, sample_manifest
from election.record import DirectoryRecord, RecordWriter
from election.simulation import ceremony_to_files, simulate
from election.tally import Results
from election.verify import verify_record
from gateway.results import nist_results

TOP_FILES = {
    "manifest.json": "manifest.schema.json",
    "context.json": "context.schema.json",
    "devices.json": "devices.schema.json",
    "tally.json": "tally.schema.json",
    "results.json": "results.schema.json",
    "results-nist.json": "results-nist.schema.json",
    "reconciliation.json": "reconciliation.schema.json",
}
FOLDER_FILES = {
    "trustees": "trustee.schema.json",
    "ballots": "sealed-ballot.schema.json",
    "spoiled": "spoiled.schema.json",
    "decryption": "decryption-share.schema.json",
    "device_statements": "device-statement.schema.json",
}
STATION_FILES = {
    "station.json": "station.schema.json",
    "checkpoint.json": "checkpoint.schema.json",
    "chain.jsonl": "chain-entry.schema.json",
    "closing.json": "closing-report.schema.json",
}
OPTIONAL_FILES = {"closing-report.schema.json"}
"""Not checked on a simulated record: the simulation has no officials' cards, so its closing
report lacks the ``authorized_by`` the schema requires of every real ledger's (the real hub's
closing report is checked against it in test_schema_hub.py)."""


def schema_of(relative: str) -> str:
    """The schema of a record file by its path (KeyError: a file the schemas do not know)."""
    parts = relative.split("/")
    if len(parts) == 1:
        return TOP_FILES[parts[0]]
    if len(parts) == 2 and parts[1].endswith(".json"):
        return FOLDER_FILES[parts[0]]
    if len(parts) == 3 and parts[0] == "stations":
        return STATION_FILES[parts[2]]
    raise KeyError(relative)


def record_documents(root: Path) -> list[tuple[str, str, Any]]:
    """(file, schema, parsed document) for every file of a record (every line of a chain)."""
    found = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        relative = path.relative_to(root).as_posix()
        schema = schema_of(relative)
        if schema in OPTIONAL_FILES:
            continue
        data = path.read_bytes()
        if path.suffix == ".jsonl":
            lines = data.split(b"\n")
            assert lines[-1] == b"", f"{relative}: the last line must end with a newline"
            found += [(f"{relative}:{n}", schema, parse_json(line)) for n, line in enumerate(lines[:-1], 1)]
        else:
            found.append((relative, schema, parse_json(data)))
    return found


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real record: 2 stations, 3 devices, limit-2 contests, challenged ballots, 2 of 3 trustees."""
    out = tmp_path_factory.mktemp("simulated") / "record"
    result = CliRunner().invoke(election_cli, [
        "simulate", "--out", str(out), "--ballots", "12", "--contests", "2", "--selections", "3",
        "--limit", "2", "--trustees", "3", "--quorum", "2", "--devices", "3", "--stations", "2",
        "--spoil-rate", "0.4", "--seed", "7",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    manifest = Manifest.from_json(parse_json((out / "manifest.json").read_bytes()))
    results = Results.from_json(parse_json((out / "results.json").read_bytes()), manifest)
    # results-nist.json as `gateway tally` writes it (the simulation writes the core files only).
    nist = nist_results(manifest, results, "central-office")
    (out / "results-nist.json").write_bytes(canonical_bytes(nist))
    return out


def test_simulated_record_follows_the_schemas_file_by_file(simulated: Path):
    documents = record_documents(simulated)
    kinds = {schema for _, schema, _ in documents}
    expected = {*TOP_FILES.values(), *FOLDER_FILES.values(), *STATION_FILES.values()} - OPTIONAL_FILES
    assert kinds == expected, "every kind present"
    for relative, schema, document in documents:
        assert_valid(schema, document, relative)
    (simulated / "results-nist.json").unlink()
    assert verify_record(DirectoryRecord(simulated)).passed, "the record is a valid one, not only well-shaped"


def test_published_test_vector_record_follows_the_schemas():
    root = SCHEMAS.parent / "test-vectors" / "record"
    documents = record_documents(root)
    assert documents
    for relative, schema, document in documents:
        assert_valid(schema, document, relative)


def test_ceremony_files_follow_the_schemas(tmp_path: Path, simulated: Path):
    manifest = Manifest.from_json(parse_json((simulated / "manifest.json").read_bytes()))
    _context, key_files = ceremony_to_files(manifest, 3, 2, tmp_path / "package", tmp_path / "secrets")
    for path in key_files:
        assert_valid("trustee-key.schema.json", parse_json(path.read_bytes()), path.name)
    for relative, schema, document in record_documents(tmp_path / "package"):
        assert_valid(schema, document, relative)


def one_of_each(root: Path) -> dict[str, tuple[str, Any]]:
    picked: dict[str, tuple[str, Any]] = {}
    for relative, schema, document in record_documents(root):
        picked.setdefault(schema, (relative, document))
    return picked


def test_hostile_variants_of_every_record_file_are_refused(simulated: Path):
    checked = 0
    for schema, (relative, document) in sorted(one_of_each(simulated).items()):
        for label, variant in [*root_variants(document), *variants(document)]:
            assert_invalid(schema, variant, f"{relative}: {label}")
            checked += 1
    assert checked > 1000


@pytest.mark.parametrize(
    ("schema", "mutate", "what"),
    [
        ("manifest.schema.json", lambda d: d["contests"][0].update(limit=0), "limit 0"),
        ("manifest.schema.json", lambda d: d["name"].update(en="   "), "a blank name"),
        ("manifest.schema.json", lambda d: d["name"].update(fr="Élection"), "a third language"),
        ("manifest.schema.json", lambda d: d["contests"].clear(), "no contest"),
        ("manifest.schema.json", lambda d: d.update(election_id="Sample"), "an uppercase id"),
        ("manifest.schema.json", lambda d: d.update(election_id="-sample"), "an id starting with -"),
        ("manifest.schema.json", lambda d: d.update(election_id="s" * 65), "an id of 65 characters"),
        ("context.schema.json", lambda d: d.update(quorum=0), "quorum 0"),
        ("context.schema.json", lambda d: d["trustee_ids"].append(d["trustee_ids"][0]), "a trustee twice"),
        ("manifest.schema.json", lambda d: d.update(mode="production", batch_min=9), "production with batch_min 9"),
        ("manifest.schema.json", lambda d: d.update(batch_min=0), "batch_min 0"),
        ("manifest.schema.json", lambda d: d.update(mode="test"), "an unknown mode"),
        ("context.schema.json", lambda d: d.update(joint_public_key="00" * 32), "the identity as key"),
        ("sealed-ballot.schema.json", lambda d: d.update(device_seq=1), "format 1's device_seq"),
        ("sealed-ballot.schema.json", lambda d: d.update(version=1), "version 1"),
        ("sealed-ballot.schema.json", lambda d: d.update(device_id="terminal 1"), "a space in the device id"),
        ("sealed-ballot.schema.json", lambda d: d.update(device_id="términal"), "a non-ASCII device id"),
        ("sealed-ballot.schema.json", lambda d: d["token"].update(signature=""), "an empty token signature"),
        (
            "sealed-ballot.schema.json",
            lambda d: d["contests"][0]["selections"][0]["ciphertext"].update(alpha="00" * 32),
            "alpha the identity",
        ),
        (
            "sealed-ballot.schema.json",
            lambda d: d["contests"][0]["selections"][0]["proof"]["challenges"].append("00" * 32),
            "a selection proof with 3 challenges",
        ),
        (
            "sealed-ballot.schema.json",
            lambda d: d["contests"][0]["selections"][0]["proof"]["responses"].__setitem__(0, "ff" * 32),
            "a scalar of 2^256 − 1",
        ),
        (
            "spoiled.schema.json",
            lambda d: d["ballot"].update(token={"message": "00" * 32, "signature": "00" * 256}),
            "a spoiled ballot carrying a token",
        ),
        ("spoiled.schema.json", lambda d: d["opening"]["contests"][0]["selections"][0].update(vote=2), "vote 2"),
        ("spoiled.schema.json", lambda d: d["opening"]["contests"][0]["selections"][0].update(vote=True), "vote true"),
        ("results.schema.json", lambda d: d["trustees_present"].clear(), "no trustee present"),
        ("checkpoint.schema.json", lambda d: d.update(position=-1), "position −1"),
        ("chain-entry.schema.json", lambda d: d.update(kind="Cast"), "kind Cast"),
        ("chain-entry.schema.json", lambda d: d.update(position=0), "position 0"),
        ("chain-entry.schema.json", lambda d: d.update(batch=0), "batch 0"),
        ("chain-entry.schema.json", lambda d: d.pop("batch"), "no batch (format 1)"),
        ("device-statement.schema.json", lambda d: d.update(sealed=0), "sealed 0"),
        ("device-statement.schema.json", lambda d: d.update(sealed=True), "sealed true"),
        ("device-statement.schema.json", lambda d: d.update(type="statement"), "another type"),
        ("device-statement.schema.json", lambda d: d.update(commitment="AB" * 32), "an uppercase commitment"),
        ("station.schema.json", lambda d: d.update(roll_key="00" * 300), "a roll key that is no DER sequence"),
        ("station.schema.json", lambda d: d.update(station_id="station-1\n"), "a station id with a newline"),
        ("devices.schema.json", lambda d: d["devices"].append(d["devices"][0]), "a device listed twice"),
    ],
)
def test_targeted_hostile_record_values_are_refused(simulated: Path, schema: str, mutate: Any, what: str):
    relative, document = one_of_each(simulated)[schema]
    if schema == "sealed-ballot.schema.json":
        assert document["token"] is not None
    assert not errors(schema, document)
    mutate(document)
    assert_invalid(schema, document, f"{relative}: {what}")


@pytest.fixture(scope="module")
def municipal_reconciliation(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The ``reconciliation.json`` of a simulated record with an early, a common and an
    election-day station of one municipality (issue 17), beside an election-day station of none."""
    out = tmp_path_factory.mktemp("municipal") / "record"
    places = {"station-1": ("kaga", "early"), "station-2": ("kaga", "common"), "station-3": ("kaga", "election_day")}
    simulate(sample_manifest(1, 2, 1), RecordWriter(out), 8, trustee_count=1, quorum=1, device_count=4,
             station_count=4, spoil_rate=0.2, seed=5, places=places)  # fmt: skip
    assert verify_record(DirectoryRecord(out)).passed
    return parse_json((out / "reconciliation.json").read_bytes())


def test_a_municipal_reconciliation_follows_its_schema_and_hostile_variants_do_not(municipal_reconciliation: Any):
    assert_valid("reconciliation.schema.json", municipal_reconciliation)
    assert municipal_reconciliation["municipalities"]["kaga"]["check_ins"] is not None
    checked = 0
    for label, variant in [*root_variants(municipal_reconciliation), *variants(municipal_reconciliation)]:
        assert_invalid("reconciliation.schema.json", variant, label)
        checked += 1
    assert checked > 100


@pytest.mark.parametrize(
    ("mutate", "what"),
    [
        (lambda d: d["stations"]["station-1"].update(kind="late"), "an unknown kind"),
        (lambda d: d["stations"]["station-1"].update(kind="election-day"), "election-day with a hyphen"),
        (lambda d: d["stations"]["station-4"].update(municipality=""), "an empty municipality"),
        (lambda d: d["stations"]["station-3"]["marks"].update(extra=1), "an extra mark figure"),
        (lambda d: d["municipalities"]["kaga"].update(polls="closing"), "the station polls' closing state"),
        (lambda d: d["municipalities"]["kaga"].update(token_key="00" * 300), "a token key that is no DER sequence"),
        (lambda d: d["municipalities"].update({"Kaga City": d["municipalities"]["kaga"]}), "an id with a space"),
        (lambda d: d["stations"].update({"station-1\n": d["stations"]["station-1"]}), "a station id with a newline"),
    ],
)  # fmt: skip
def test_targeted_hostile_reconciliation_values_are_refused(municipal_reconciliation: Any, mutate: Any, what: str):
    document = copy.deepcopy(municipal_reconciliation)
    mutate(document)
    assert_invalid("reconciliation.schema.json", document, what)
