"""Reconciliation at the centre (issue 17): per station and per municipality, check-ins vs
ballots vs marks, for ``gateway status``.

Three stores hold the figures, each kept by a different service so that none can vouch for
itself:

- **check-ins** — each station's roll (or, at an early/common polling place, its roll relay)
  reports its count when the polls close; the ledger signs it into the closing report, which
  the central store holds once forwarded (``check_ins``);
- **ballots** — the same closing report's ``ballots`` (cast and late), which the centre has
  already checked against the chain it received;
- **marks** — the municipal register on PostgreSQL: who checked in at an early/common place
  (a blinded value), who was marked by an election-day station's marks after its close (and
  how many of those marks found the voter already marked: a voter who voted twice).

What must hold, once every station of a municipality has closed and sent its marks::

    per station        check-ins = ballots
    election-day       marks sent back = check-ins
    municipality       Σ check-ins at early/common places = marks with a blinded value
                       Σ check-ins = marks (early/common + election-day) + voted twice + not registered
                       voted twice = 0

The same figures go into the election record as ``reconciliation.json`` (gateway/export.py,
``election.reconciliation``), where the verifier's check 20 holds them to the chains and the
closing reports.

A figure not known yet (polls open, no closing report at the centre, marks not sent back) is
shown as pending, never as a discrepancy. Every discrepancy is a line starting ``!`` and makes
``gateway status`` exit 1. The figures are counts only: no voter key leaves the register here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from election.encoding import parse_json
from election.errors import FormatError
from gateway.errors import GatewayError


@dataclass(frozen=True)
class StationFigures:
    """One station as the centre sees it."""

    station_id: str
    municipality: str | None
    """None: the municipal roll does not know the station (a station of another kind of election)."""
    kind: str
    """``early``, ``common``, ``election_day`` or ``""`` (not on the municipal roll)."""
    check_ins: int | None
    """From the verified closing report at the centre (None: none yet, or without the roll's count)."""
    ballots: int | None
    marks: tuple[int, int, int] | None = None
    """Election-day stations: (marked, voted twice, not registered) of the marks it sent back."""


@dataclass(frozen=True)
class MunicipalFigures:
    municipality: str
    polls: str
    eligible: int
    early_marks: int
    """Voters marked with a blinded value: checked in at an early/common place."""
    day_marks: int
    """Voters marked by an election-day station's marks."""


@dataclass
class Reconciliation:
    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def text(self) -> list[str]:
        return [*self.lines, *(f"  ! {problem}" for problem in self.problems)]


def _count(value: Any) -> int | None:
    return value if type(value) is int and value >= 0 else None


def closing_counts(document: bytes | None) -> tuple[int | None, int | None]:
    """(check-ins, ballots) of a closing report the centre verified (None where absent)."""
    if document is None:
        return None, None
    try:
        body = parse_json(document)
    except FormatError:
        return None, None
    if not isinstance(body, dict):
        return None, None
    return _count(body.get("check_ins")), _count(body.get("ballots"))


def reconcile(stations: Iterable[StationFigures], municipalities: Iterable[MunicipalFigures]) -> Reconciliation:
    """The report (pure: the figures in, the lines and the discrepancies out)."""
    result = Reconciliation()
    stations = list(stations)
    for s in stations:
        where = f"{s.municipality}, {s.kind.replace('_', '-')}" if s.municipality else "not on the municipal roll"
        if s.check_ins is None or s.ballots is None:
            result.lines.append(f"  {s.station_id} ({where}): pending (no closing report with check-ins yet)")
        else:
            text = f"  {s.station_id} ({where}): {s.check_ins} check-ins, {s.ballots} ballots"
            if s.check_ins != s.ballots:
                result.problems.append(f"{s.station_id}: {s.check_ins} voters checked in but {s.ballots} ballots")
            if s.kind == "election_day":
                if s.marks is None:
                    text += ", marks not sent back yet"
                else:
                    marked, twice, unknown = s.marks
                    text += f", {marked + twice + unknown} marks sent back"
                    if marked + twice + unknown != s.check_ins:
                        result.problems.append(f"{s.station_id}: {s.check_ins} check-ins but "
                                               f"{marked + twice + unknown} marks sent back")  # fmt: skip
            elif s.kind in ("early", "common"):
                text += ", marked on the municipal register"
            result.lines.append(text)
        if s.marks is not None:
            _marked, twice, unknown = s.marks
            if twice:
                result.problems.append(f"{s.station_id}: {twice} voter(s) checked in here had already voted at another "
                                       "place of the municipality (voted twice)")  # fmt: skip
            if unknown:
                result.problems.append(f"{s.station_id}: {unknown} voter(s) checked in here are not on the "
                                       "municipal register")  # fmt: skip
    for m in municipalities:
        mine = [s for s in stations if s.municipality == m.municipality]
        places = [s for s in mine if s.kind in ("early", "common")]
        days = [s for s in mine if s.kind == "election_day"]
        text = (f"  {m.municipality}: polls {m.polls}, {m.eligible} on the register, marks {m.early_marks} at "
                f"early/common places + {m.day_marks} from election-day stations")  # fmt: skip
        places_done = all(s.check_ins is not None for s in places)
        if places and places_done and m.polls == "closed":
            early_check_ins = sum(s.check_ins or 0 for s in places)
            text += f"; {early_check_ins} check-ins at early/common places"
            if early_check_ins != m.early_marks:
                result.problems.append(f"{m.municipality}: {early_check_ins} check-ins at its early/common places but "
                                       f"{m.early_marks} marks on the register")  # fmt: skip
        all_done = (m.polls == "closed" and all(s.check_ins is not None and s.ballots is not None for s in mine)
                    and all(s.marks is not None for s in days))  # fmt: skip
        if mine and all_done:
            check_ins = sum(s.check_ins or 0 for s in mine)
            ballots = sum(s.ballots or 0 for s in mine)
            twice = sum(s.marks[1] for s in days if s.marks)
            unknown = sum(s.marks[2] for s in days if s.marks)
            expected = m.early_marks + m.day_marks + twice + unknown
            text += f"; in all {check_ins} check-ins, {ballots} ballots, {twice} voted twice"
            if check_ins != expected:
                result.problems.append(f"{m.municipality}: {check_ins} check-ins at its stations but {expected} marks "
                                       "(with voters who voted twice and voters not on the register)")  # fmt: skip
        else:
            text += "; totals pending (polls open, or a station's closing report or marks not in yet)"
        result.lines.append(text)
    return result


@dataclass(frozen=True)
class MunicipalSnapshot:
    """What the municipal roll knows, read once: for ``gateway status`` and for the record's
    ``reconciliation.json`` (gateway/export.py), so both show the same figures."""

    kinds: dict[str, tuple[str, str]]
    """station → (municipality, kind: ``early``, ``common`` or ``election_day``)."""
    marks: dict[str, tuple[int, int, int]]
    """election-day station → (marked, voted twice, not registered) of the marks it sent back."""
    municipalities: tuple[MunicipalFigures, ...]
    token_keys: dict[str, Any]
    """municipality → its token key (``rsa.RSAPublicKey``), which its early/common places use."""


def municipal_snapshot(central_dir: Path) -> MunicipalSnapshot | None:
    """The municipal roll's side of the reconciliation, if this central office runs one (else None)."""
    from gateway.municipal_roll import MunicipalConfig, MunicipalStore, config_path

    path = config_path(central_dir)
    if not path.exists():
        return None
    config = MunicipalConfig.read(path)
    roll = MunicipalStore(config.database)
    try:
        kinds = {station: (municipality, kind) for station, municipality, kind in roll.stations()}
        marks = roll.all_station_marks()
        municipalities = []
        for name in roll.municipalities():
            eligible, early, day = roll.tallies(name)
            municipalities.append(MunicipalFigures(name, roll.polls(name), eligible, early, day))
    finally:
        roll.close()
    keys = {m.municipality: config.municipality(m.municipality).token_public_key() for m in municipalities}
    return MunicipalSnapshot(kinds, marks, tuple(municipalities), keys)


def gather(central_dir: Path, store: Any) -> Reconciliation | None:
    """The figures of the central store (``store``: :class:`gateway.store.Store`, its public
    queries only) and of the municipal roll, if this central office runs one (else None)."""
    snapshot = municipal_snapshot(central_dir)
    if snapshot is None:
        return None
    stations = []
    for station_id in sorted(set(store.station_ids()) | set(snapshot.kinds)):
        check_ins, ballots = closing_counts(store.verified_closing_report(station_id))
        municipality, kind = snapshot.kinds.get(station_id, (None, ""))
        stations.append(StationFigures(station_id, municipality, kind, check_ins, ballots,
                                       snapshot.marks.get(station_id)))  # fmt: skip
    return reconcile(stations, snapshot.municipalities)


def report_lines(central_dir: Path, store: Any) -> tuple[list[str], bool]:
    """(lines for ``gateway status``, True if any discrepancy); no lines without a municipal roll."""
    try:
        found = gather(central_dir, store)
    except GatewayError as error:
        return [f"  ! municipal roll: {error}"], True
    if found is None:
        return [], False
    return ["municipal roll reconciliation (check-ins vs ballots vs marks):", *found.text()], bool(found.problems)
