"""``reconciliation.json``: the centre's reconciliation of check-ins, ballots and marks, in the
record (issue 17; ``docs/formats.md`` §13; verifier check 20).

Why it is in the record: early-voting and common polling places do not sign tokens with a key
of their own but with their municipality's, and a voter checks in at a station's roll (or the
municipal register) while the ballot goes to a separate ledger. Without this file an observer
could not tell which stations share a municipality's key, nor whether the check-ins counted by
each roll, the ballots each chain counts and the marks on each municipal register agree. With
it, the verifier recomputes what it can from the record itself (ballots from the chains,
check-ins from the ledgers' signed closing reports, every token of an early/common place
under its municipality's key) and checks the rest for consistency (sums, the rules of
``docs/municipal-roll.md``). The marks come from the municipal register, which no signature
in the record covers: they are the centre's statement, published so that it can be held to it.

The document (canonical JSON, exactly these fields)::

    {"version": 1, "type": "reconciliation", "base_hash": hex32,
     "stations": {station_id: {"kind": "election_day" | "early" | "common",
                               "municipality": id | null,
                               "check_ins": n | null, "ballots": n,
                               "marks": null | {"marked": n, "voted_twice": n, "not_registered": n}}},
     "municipalities": {id: {"token_key": hex(DER SubjectPublicKeyInfo), "polls": "pending" | "open" | "closed",
                             "registered": n, "check_ins": n | null, "ballots": n,
                             "marked_early": n, "marked_election_day": n,
                             "voted_twice": n, "not_registered": n}}}

A record of an election without municipalities lists every station as ``election_day`` with
``municipality: null`` and no municipality. This module is pure: a strict, total decoder
(every input gives a document or a ``FormatError``), the encoder, and the consistency rules.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from election.encoding import check_version, hex_bytes, strict_int
from election.errors import FormatError
from election.ids import check_station_id
from election.stations import parse_roll_key, roll_key_hex

RECONCILIATION = "reconciliation.json"
"""The file at the top of the record."""
RECONCILIATION_VERSION = 1
RECONCILIATION_TYPE = "reconciliation"
ELECTION_DAY = "election_day"
MUNICIPAL_KINDS = ("early", "common")
"""Stations that keep no roll of their own: they check in against their municipality's register
and their tokens are signed with the municipality's key."""
STATION_KINDS = (ELECTION_DAY, *MUNICIPAL_KINDS)
POLLS = ("pending", "open", "closed")
"""The municipal register's polls: pending → open → closed, never back."""
MAX_STATIONS = 100_000
"""Japan has about 47,000 polling places; a record of twice that still fits the 16 MiB file limit."""
MAX_MUNICIPALITIES = 2_000
"""Japan has 1,741 municipalities (plus Tokyo's 23 wards)."""
MAX_COUNT = 2**63 - 1

_STATION_FIELDS = frozenset({"kind", "municipality", "check_ins", "ballots", "marks"})
_MARKS_FIELDS = frozenset({"marked", "voted_twice", "not_registered"})
_MUNICIPALITY_FIELDS = frozenset({"token_key", "polls", "registered", "check_ins", "ballots", "marked_early",
                                  "marked_election_day", "voted_twice", "not_registered"})  # fmt: skip
_FIELDS = frozenset({"version", "type", "base_hash", "stations", "municipalities"})


@dataclass(frozen=True, slots=True)
class StationMarks:
    """An election-day station's marks as the municipal register took them after its close."""

    marked: int
    """Voters the marks marked on the register."""
    voted_twice: int
    """Voters the register had already marked (they voted at another place too)."""
    not_registered: int
    """Voters not on the municipality's register at all."""

    @property
    def total(self) -> int:
        return self.marked + self.voted_twice + self.not_registered

    def to_json(self) -> dict[str, int]:
        return {"marked": self.marked, "voted_twice": self.voted_twice, "not_registered": self.not_registered}


@dataclass(frozen=True, slots=True)
class StationLine:
    """One station of the record: what it is and its three figures."""

    station_id: str
    kind: str
    municipality: str | None
    check_ins: int | None
    """The roll's count signed into the station's closing report (None: no closing report, or
    it carries no count)."""
    ballots: int
    """Counted (cast and late) entries of the station's chain."""
    marks: StationMarks | None = None
    """Election-day stations of a municipality: their marks, once sent back (else None)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "municipality": self.municipality,
            "check_ins": self.check_ins,
            "ballots": self.ballots,
            "marks": None if self.marks is None else self.marks.to_json(),
        }


@dataclass(frozen=True, slots=True)
class MunicipalityLine:
    """One municipality: its token key, its register's state and the sums over its stations."""

    municipality: str
    token_key: rsa.RSAPublicKey
    polls: str
    registered: int
    check_ins: int | None
    """Σ of its stations' check-ins (None while any of them is None)."""
    ballots: int
    marked_early: int
    """Voters marked on the register with a blinded value: checked in at an early/common place."""
    marked_election_day: int
    """Voters marked by its election-day stations' marks."""
    voted_twice: int
    not_registered: int

    @property
    def token_key_hex(self) -> str:
        return roll_key_hex(self.token_key)

    def to_json(self) -> dict[str, Any]:
        return {
            "token_key": self.token_key_hex,
            "polls": self.polls,
            "registered": self.registered,
            "check_ins": self.check_ins,
            "ballots": self.ballots,
            "marked_early": self.marked_early,
            "marked_election_day": self.marked_election_day,
            "voted_twice": self.voted_twice,
            "not_registered": self.not_registered,
        }


@dataclass(frozen=True, slots=True)
class Reconciliation:
    """The whole file; ``stations`` and ``municipalities`` sorted by id (as canonical JSON
    writes a map's keys anyway)."""

    base_hash: bytes
    stations: tuple[StationLine, ...]
    municipalities: tuple[MunicipalityLine, ...] = ()

    @classmethod
    def make(
        cls, base_hash: bytes, stations: Iterable[StationLine], municipalities: Iterable[MunicipalityLine] = ()
    ) -> Reconciliation:
        return cls(
            base_hash,
            tuple(sorted(stations, key=lambda s: s.station_id)),
            tuple(sorted(municipalities, key=lambda m: m.municipality)),
        )

    def station(self, station_id: str) -> StationLine | None:
        return next((s for s in self.stations if s.station_id == station_id), None)

    def municipality(self, name: str | None) -> MunicipalityLine | None:
        return next((m for m in self.municipalities if m.municipality == name), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": RECONCILIATION_VERSION,
            "type": RECONCILIATION_TYPE,
            "base_hash": self.base_hash.hex(),
            "stations": {s.station_id: s.to_json() for s in self.stations},
            "municipalities": {m.municipality: m.to_json() for m in self.municipalities},
        }

    @classmethod
    def from_json(cls, data: Any) -> Reconciliation:
        """Strict and total: exactly the documented fields and values, or ``FormatError``."""
        _fields(data, _FIELDS, "reconciliation")
        check_version(data, RECONCILIATION_VERSION, "reconciliation")
        if data["type"] != RECONCILIATION_TYPE:
            raise FormatError(f"reconciliation: type must be {RECONCILIATION_TYPE!r}")
        base_hash = hex_bytes(data["base_hash"], 32, "reconciliation.base_hash")
        stations = _map(data["stations"], MAX_STATIONS, "reconciliation.stations")
        municipalities = _map(data["municipalities"], MAX_MUNICIPALITIES, "reconciliation.municipalities")
        return cls.make(
            base_hash,
            (_station(name, value) for name, value in stations.items()),
            (_municipality(name, value) for name, value in municipalities.items()),
        )

    def problems(self) -> list[str]:
        """What the file itself shows to be wrong, without the rest of the record: a station of
        an unknown municipality, a municipality's sums that are not the sums of its stations,
        and, once its polls are closed and every figure is in, the rules of the reconciliation
        (docs/municipal-roll.md): Σ check-ins at its early/common places = marks with a blinded
        value; Σ check-ins = every mark + voted twice + not on the register; nobody voted twice
        and nobody checked in off the register."""
        found: list[str] = []
        for s in self.stations:
            where = f"station {s.station_id}"
            if s.kind in MUNICIPAL_KINDS and s.municipality is None:
                found.append(f"{where}: an early or common polling place must name its municipality")
            if s.municipality is not None and self.municipality(s.municipality) is None:
                found.append(f"{where}: municipality {s.municipality} is not listed")
            if s.marks is not None and (s.kind != ELECTION_DAY or s.municipality is None):
                found.append(f"{where}: only an election-day station of a municipality sends marks back")
        keys: dict[str, str] = {}
        for m in self.municipalities:
            where = f"municipality {m.municipality}"
            mine = [s for s in self.stations if s.municipality == m.municipality]
            places = [s for s in mine if s.kind in MUNICIPAL_KINDS]
            days = [s for s in mine if s.kind == ELECTION_DAY]
            check_ins = _sum_or_none(s.check_ins for s in mine)
            if m.check_ins != check_ins:
                found.append(f"{where}: check_ins {m.check_ins} is not the sum over its stations ({check_ins})")
            if m.ballots != sum(s.ballots for s in mine):
                found.append(f"{where}: ballots {m.ballots} is not the sum over its stations "
                             f"({sum(s.ballots for s in mine)})")  # fmt: skip
            twice = sum(s.marks.voted_twice for s in days if s.marks is not None)
            unknown = sum(s.marks.not_registered for s in days if s.marks is not None)
            if (m.voted_twice, m.not_registered) != (twice, unknown):
                found.append(f"{where}: voted_twice {m.voted_twice} and not_registered {m.not_registered} are not the "
                             f"sums of its election-day stations' marks ({twice}, {unknown})")  # fmt: skip
            if m.marked_early + m.marked_election_day > m.registered:
                found.append(f"{where}: more voters marked ({m.marked_early + m.marked_election_day}) than on its "
                             f"register ({m.registered})")  # fmt: skip
            if m.voted_twice:
                found.append(f"{where}: {m.voted_twice} voter(s) voted twice (checked in at an election-day station "
                             "after voting at another place)")  # fmt: skip
            if m.not_registered:
                found.append(f"{where}: {m.not_registered} voter(s) checked in at an election-day station are not on "
                             "its register")  # fmt: skip
            if m.token_key_hex in keys:
                found.append(f"{where}: the same token key as municipality {keys[m.token_key_hex]}")
            keys.setdefault(m.token_key_hex, m.municipality)
            final = m.polls == "closed" and check_ins is not None and all(s.marks is not None for s in days)
            if not final:
                continue
            early = sum(s.check_ins or 0 for s in places)
            if early != m.marked_early:
                found.append(f"{where}: {early} check-ins at its early/common places but {m.marked_early} "
                             "voters marked on the register")  # fmt: skip
            expected = m.marked_early + m.marked_election_day + m.voted_twice + m.not_registered
            if check_ins != expected:
                found.append(f"{where}: {check_ins} check-ins at its stations but {expected} marks (with voters "
                             "who voted twice and voters not on the register)")  # fmt: skip
        return found


def _fields(data: Any, fields: frozenset[str], what: str) -> None:
    if not isinstance(data, dict) or set(data) != fields:
        raise FormatError(f"{what}: expected exactly the fields {sorted(fields)}")


def _map(data: Any, limit: int, what: str) -> Mapping[str, Any]:
    if not isinstance(data, dict):
        raise FormatError(f"{what}: expected an object")
    if len(data) > limit:
        raise FormatError(f"{what}: more than {limit} entries")
    return data


def _count(value: Any, what: str) -> int:
    return strict_int(value, what, minimum=0, maximum=MAX_COUNT)


def _optional_count(value: Any, what: str) -> int | None:
    return None if value is None else _count(value, what)


def _sum_or_none(values: Iterable[int | None]) -> int | None:
    total = 0
    for value in values:
        if value is None:
            return None
        total += value
    return total


def _one_of(value: Any, allowed: tuple[str, ...], what: str) -> str:
    if type(value) is not str or value not in allowed:
        raise FormatError(f"{what}: one of {', '.join(allowed)}")
    return value


def _station(name: str, data: Any) -> StationLine:
    station_id = check_station_id(name, "reconciliation station")
    where = f"reconciliation.stations.{station_id}"
    _fields(data, _STATION_FIELDS, where)
    kind = _one_of(data["kind"], STATION_KINDS, f"{where}.kind")
    municipality = data["municipality"]
    if municipality is not None:
        check_station_id(municipality, f"{where}.municipality")
    marks = data["marks"]
    if marks is not None:
        _fields(marks, _MARKS_FIELDS, f"{where}.marks")
        marks = StationMarks(*(_count(marks[f], f"{where}.marks.{f}") for f in ("marked", "voted_twice",
                                                                               "not_registered")))  # fmt: skip
    return StationLine(station_id, kind, municipality, _optional_count(data["check_ins"], f"{where}.check_ins"),
                       _count(data["ballots"], f"{where}.ballots"), marks)  # fmt: skip


def _municipality(name: str, data: Any) -> MunicipalityLine:
    municipality = check_station_id(name, "reconciliation municipality")
    where = f"reconciliation.municipalities.{municipality}"
    _fields(data, _MUNICIPALITY_FIELDS, where)
    polls = _one_of(data["polls"], POLLS, f"{where}.polls")
    names = ("registered", "ballots", "marked_early", "marked_election_day", "voted_twice", "not_registered")
    counts = {f: _count(data[f], f"{where}.{f}") for f in names}
    return MunicipalityLine(
        municipality,
        parse_roll_key(data["token_key"], f"{where}.token_key"),
        polls,
        check_ins=_optional_count(data["check_ins"], f"{where}.check_ins"),
        **counts,
    )
