"""Check 20 and ``reconciliation.json`` (issue 17): the centre's figures held to the record, and
every early/common polling place's tokens held to its municipality's key.

The record is the project's own simulation with a municipality ``kaga`` (an early place, a
common place and an election-day station) and a municipality ``nomi`` (one early place), so
that a token or a key of the *other* municipality is at hand for the tampering. Each tampered
record is what a dishonest centre (or anyone who edits the record) could publish; check 20
must fail with a reason an observer understands. The parser is fuzzed with hypothesis: any
value, and the valid document with any field made hostile, gives a document or a FormatError.
"""

from __future__ import annotations

import contextlib
import copy
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from election.encoding import canonical_bytes, parse_json
from election.errors import ElectionError, FormatError
from election.manifest import sample_manifest
from election.reconciliation import RECONCILIATION, Reconciliation
from election.record import DirectoryRecord, RecordWriter
from election.simulation import simulate
from election.verify import CHECKS, RECONCILIATION_CHECK, verify_record

PLACES = {
    "station-1": ("kaga", "early"),
    "station-2": ("kaga", "common"),
    "station-3": ("kaga", "election_day"),
    "station-4": ("nomi", "early"),
}
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def municipal_record(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("municipal") / "record"
    simulate(sample_manifest(1, 2, 1), RecordWriter(root), 12, trustee_count=1, quorum=1, device_count=4,
             station_count=4, spoil_rate=0.2, seed=3, places=PLACES)  # fmt: skip
    return root


@pytest.fixture
def record(municipal_record: Path, tmp_path: Path) -> Path:
    target = tmp_path / "record"
    shutil.copytree(municipal_record, target)
    return target


def failed(root: Path) -> dict[int, list[str]]:
    report = verify_record(DirectoryRecord(root))
    return {n: o.problems for n, o in report.outcomes.items() if not o.passed}


def edit(path: Path, change: Callable[[Any], None]) -> None:
    document = json.loads(path.read_bytes())
    change(document)
    path.write_bytes(canonical_bytes(document))


def document(root: Path) -> dict[str, Any]:
    return json.loads((root / RECONCILIATION).read_bytes())


def test_a_record_with_early_common_and_election_day_places_passes_all_20_checks(municipal_record: Path):
    assert len(CHECKS) == 20 and CHECKS[-1].number == RECONCILIATION_CHECK
    assert failed(municipal_record) == {}
    found = Reconciliation.from_json(parse_json((municipal_record / RECONCILIATION).read_bytes(), canonical=True))
    kaga, nomi = found.municipality("kaga"), found.municipality("nomi")
    assert kaga is not None and nomi is not None and kaga.token_key_hex != nomi.token_key_hex
    assert [s.kind for s in found.stations] == ["early", "common", "election_day", "early"]
    assert kaga.check_ins == kaga.ballots == sum(s.ballots for s in found.stations[:3])
    station = json.loads((municipal_record / "stations/station-1/station.json").read_bytes())
    assert station["roll_key"] == kaga.token_key_hex, "an early place's roll key is its municipality's token key"
    assert canonical_bytes(found.to_json()) == (municipal_record / RECONCILIATION).read_bytes()


def test_a_record_without_municipalities_lists_election_day_stations_only(simulated_record: Path):
    found = Reconciliation.from_json(parse_json((simulated_record / RECONCILIATION).read_bytes()))
    assert found.municipalities == () and {s.kind for s in found.stations} == {"election_day"}
    assert all(s.municipality is None and s.marks is None for s in found.stations)
    assert failed(simulated_record) == {}


def test_an_early_place_whose_roll_key_is_not_its_municipalitys_fails(record: Path):
    """station-3 signed its tokens with its own key: called an early place of kaga, it is caught
    twice — its key is not kaga's, and not one of its tokens verifies under kaga's key."""
    edit(record / RECONCILIATION, lambda d: d["stations"]["station-3"].update(kind="early", marks=None))
    found = failed(record)
    assert list(found) == [RECONCILIATION_CHECK], found
    problems = found[RECONCILIATION_CHECK]
    assert any("station station-3: an early polling place of kaga whose roll key is its own" in p for p in problems)
    assert any("chained at station-3, a polling place of kaga, its token does not verify under kaga's token key" in p
               for p in problems)  # fmt: skip


def test_a_token_signed_by_another_municipalitys_key_fails(record: Path):
    """nomi's early place relabelled as kaga's, its station.json given kaga's key so that its
    roll key looks right: its tokens were signed with nomi's key, and the verifier says so."""
    kaga_key = document(record)["municipalities"]["kaga"]["token_key"]
    edit(record / "stations/station-4/station.json", lambda d: d.update(roll_key=kaga_key))

    def move(d: dict[str, Any]) -> None:
        line = d["stations"]["station-4"]
        line["municipality"] = "kaga"
        for name, sign in (("kaga", 1), ("nomi", -1)):
            figures = d["municipalities"][name]
            for field in ("check_ins", "ballots", "marked_early", "registered"):
                figures[field] += sign * line["ballots" if field == "ballots" else "check_ins"]

    edit(record / RECONCILIATION, move)
    found = failed(record)
    assert set(found) == {18, RECONCILIATION_CHECK}, found
    assert all("token does not verify under kaga's token key, it is signed by municipality nomi's key" in p
               for p in found[RECONCILIATION_CHECK]), found  # fmt: skip


def test_an_election_day_station_holding_a_municipalitys_key_fails(record: Path):
    """An early place listed as election-day would drop out of its municipality's sums."""

    def relabel(d: dict[str, Any]) -> None:
        d["stations"]["station-1"].update(kind="election_day", municipality=None)
        kaga, line = d["municipalities"]["kaga"], d["stations"]["station-1"]
        kaga["check_ins"] -= line["check_ins"]
        kaga["ballots"] -= line["ballots"]

    edit(record / RECONCILIATION, relabel)
    found = failed(record)
    assert any("station station-1: listed as election-day, yet its roll key is municipality kaga's token key" in p
               for p in found[RECONCILIATION_CHECK]), found  # fmt: skip


@pytest.mark.parametrize(
    ("what", "change", "words"),
    [
        ("ballots", lambda d: d["stations"]["station-2"].update(ballots=d["stations"]["station-2"]["ballots"] + 1),
         "station station-2: "),
        ("check-ins", lambda d: d["stations"]["station-3"].update(check_ins=99), "station station-3: 99 check-ins"),
        ("a station left out", lambda d: d["stations"].pop("station-2"),
         "station station-2 of the record is not listed"),
        ("a station added", lambda d: d["stations"].update({"station-9": d["stations"]["station-3"]}),
         "station station-9 is listed but not in the record"),
        ("a municipality's sum", lambda d: d["municipalities"]["kaga"].update(ballots=1), "is not the sum over"),
        ("voters marked twice", lambda d: (d["stations"]["station-3"]["marks"].update(voted_twice=1),
                                           d["municipalities"]["kaga"].update(voted_twice=1)), "voted twice"),
        ("marks that miss check-ins", lambda d: d["municipalities"]["kaga"].update(marked_early=1),
         "check-ins at its early/common places but 1 voters marked"),
        ("two municipalities with one key", lambda d: d["municipalities"]["nomi"].update(
            token_key=d["municipalities"]["kaga"]["token_key"]), "the same token key as municipality kaga"),
        ("another election", lambda d: d.update(base_hash="00" * 32), "made for another election"),
        ("an unknown municipality", lambda d: d["stations"]["station-4"].update(municipality="kanazawa"),
         "municipality kanazawa is not listed"),
        ("marks at an early place", lambda d: d["stations"]["station-1"].update(
            marks={"marked": 0, "voted_twice": 0, "not_registered": 0}), "only an election-day station"),
    ],
)  # fmt: skip
def test_figures_that_are_not_the_records_fail_check_20(record: Path, what: str, change: Any, words: str):
    edit(record / RECONCILIATION, change)
    found = failed(record)
    assert RECONCILIATION_CHECK in found, what
    assert any(words in p for p in found[RECONCILIATION_CHECK]), (what, found[RECONCILIATION_CHECK])


def test_a_missing_or_malformed_reconciliation_fails_check_20(record: Path):
    (record / RECONCILIATION).write_bytes(b'{"version":1}')
    assert "reconciliation.json: reconciliation: expected exactly the fields" in failed(record)[20][0]
    (record / RECONCILIATION).unlink()
    assert failed(record) == {20: ["reconciliation.json is missing"]}


# --- the parser: total on anything -------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.text(max_size=12)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
HOSTILE = st.sampled_from([
    None, True, False, 0, -1, 1, 2**63, 2**63 - 1, -(2**63), "", "0", "early ", "Early", "election-day", "kaga\n",
    "\ud800", "é", "a" * 65, "00" * 32, "30" * 300, [], {}, [1], {"marked": 1}, "closing", "closed",
]) | json_values  # fmt: skip


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a document where a value can be replaced (keys of maps included)."""
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, child in value.items():
            found += paths(child, (*prefix, key))
    return found


def decode(data: Any) -> Reconciliation | None:
    try:
        return Reconciliation.from_json(data)
    except FormatError:
        return None


@FUZZ
@given(json_values)
def test_any_json_value_is_a_document_or_a_format_error(value: Any):
    decode(value)


@FUZZ
@given(st.data())
def test_the_valid_document_with_one_hostile_value_is_refused_or_still_strict(municipal_record: Path, data: Any):
    original = parse_json((municipal_record / RECONCILIATION).read_bytes())
    target = data.draw(st.sampled_from(paths(original)))
    mutated = copy.deepcopy(original)
    holder = mutated
    for key in target[:-1]:
        holder = holder[key]
    if data.draw(st.booleans()):
        holder[target[-1]] = data.draw(HOSTILE)
    else:  # rename a key: an unknown field, a bad station or municipality id
        holder[data.draw(st.sampled_from(["", "Kaga City", "x\n", "station-1", "extra", "\ud800"]))] = holder.pop(
            target[-1]
        )
    found = decode(mutated)
    if found is not None:  # accepted: then it must be exactly what it writes back
        with contextlib.suppress(FormatError):
            assert decode(parse_json(canonical_bytes(found.to_json()))) == found


@FUZZ
@given(st.binary(max_size=400))
def test_random_bytes_never_crash_the_whole_path(data: bytes):
    with contextlib.suppress(ElectionError):
        Reconciliation.from_json(parse_json(data, canonical=True))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("check_ins", True), ("check_ins", -1), ("check_ins", 2**63), ("ballots", None), ("ballots", "3"),
        ("kind", "late"), ("kind", "Early"), ("municipality", "kaga\n"), ("municipality", ""),
        ("marks", {"marked": 1, "voted_twice": 0}), ("marks", {"marked": 1, "voted_twice": 0, "not_registered": False}),
    ],
)  # fmt: skip
def test_targeted_hostile_station_values_are_refused(municipal_record: Path, field: str, value: Any):
    data = parse_json((municipal_record / RECONCILIATION).read_bytes())
    data["stations"]["station-3"][field] = value
    with pytest.raises(FormatError):
        Reconciliation.from_json(data)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("token_key", "30" * 300), ("token_key", "AB"), ("token_key", None), ("polls", "closing"),
        ("polls", "Closed"), ("registered", -1), ("voted_twice", True), ("marked_early", 1.5),
    ],
)  # fmt: skip
def test_targeted_hostile_municipality_values_are_refused(municipal_record: Path, field: str, value: Any):
    data = parse_json((municipal_record / RECONCILIATION).read_bytes())
    data["municipalities"]["kaga"][field] = value
    with pytest.raises(FormatError):
        Reconciliation.from_json(data)


def test_a_token_key_that_is_not_canonical_der_or_too_small_is_refused(municipal_record: Path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    small = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
    der = small.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo).hex()
    data = parse_json((municipal_record / RECONCILIATION).read_bytes())
    data["municipalities"]["kaga"]["token_key"] = der
    with pytest.raises(FormatError, match="2048 to 8192 bits"):
        Reconciliation.from_json(data)
    data["stations"] = {f"s{i}": data["stations"]["station-1"] for i in range(100_001)}
    with pytest.raises(FormatError, match="more than 100000"):
        Reconciliation.from_json(data)
