"""The election manifest: contests, their selections and selection limits.

Validated on load with errors that say where the problem is. Its canonical hash is the
election's base hash, which every proof, ballot and record file is bound to.

Version 2 adds how the station ledgers mix ballots (docs/design-record-v2.md §2): ``batch_min``,
the fewest ballots a station chains together in one hash-sorted batch while the polls are
open, and ``mode``. A ``production`` election with batches smaller than
:data:`PRODUCTION_BATCH_MIN` does not parse, so a small batch (which would keep casting order
within a few voters) can only be a ``rehearsal``, and every report says so. Both are in the
base hash, so every party sees the same values.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from election.encoding import check_version, hash_value, strict_int
from election.errors import ManifestError
from election.ids import check_name_id

MANIFEST_VERSION = 2
MODES = ("production", "rehearsal")
PRODUCTION_BATCH_MIN = 10
"""The smallest ``batch_min`` a production election may set."""
MAX_BATCH_MIN = 100_000
MAX_NAME_LENGTH = 1000
"""Most characters of one language's name of the election, a contest or a selection."""
_LANGUAGES = ("en", "ja")


def _text(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, dict) or set(value) != set(_LANGUAGES):
        raise ManifestError(f"{where}: a name gives exactly the languages {list(_LANGUAGES)}")
    for lang, text in value.items():
        if not isinstance(text, str) or not text.strip() or len(text) > MAX_NAME_LENGTH:
            raise ManifestError(f"{where}.{lang}: must be a non-empty string of at most {MAX_NAME_LENGTH} characters")
    return dict(value)


def _identifier(value: Any, where: str) -> str:
    return check_name_id(value, where, ManifestError)


def _fields(data: Any, where: str, required: set[str]) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ManifestError(f"{where}: expected an object")
    missing, extra = required - set(data), set(data) - required
    if missing:
        raise ManifestError(f"{where}: missing {sorted(missing)}")
    if extra:
        raise ManifestError(f"{where}: unknown fields {sorted(extra)}")
    return data


@dataclass(frozen=True, slots=True)
class Selection:
    id: str
    name: dict[str, str]


@dataclass(frozen=True, slots=True)
class Contest:
    id: str
    name: dict[str, str]
    limit: int
    selections: tuple[Selection, ...]

    def selection_ids(self) -> list[str]:
        return [selection.id for selection in self.selections]


@dataclass(frozen=True, slots=True)
class Manifest:
    election_id: str
    name: dict[str, str]
    contests: tuple[Contest, ...]
    batch_min: int
    mode: str
    _base_hash: bytes | None = field(default=None, init=False, repr=False, compare=False)
    """:attr:`base_hash`, once computed (every ballot checked asks for it)."""

    @property
    def rehearsal(self) -> bool:
        return self.mode == "rehearsal"

    @classmethod
    def from_json(cls, data: Any) -> Manifest:
        data = _fields(data, "manifest", {"version", "election_id", "name", "contests", "batch_min", "mode"})
        check_version(data, MANIFEST_VERSION, "manifest.version", ManifestError)
        if type(data["mode"]) is not str or data["mode"] not in MODES:
            raise ManifestError(f"manifest.mode: must be one of {list(MODES)}")
        lowest = PRODUCTION_BATCH_MIN if data["mode"] == "production" else 1
        batch_min = strict_int(
            data["batch_min"], "manifest.batch_min", minimum=lowest, maximum=MAX_BATCH_MIN, error=ManifestError
        )
        contests_data = data["contests"]
        if not isinstance(contests_data, list) or not contests_data:
            raise ManifestError("manifest.contests: at least one contest is required")
        contests = []
        for i, item in enumerate(contests_data):
            where = f"manifest.contests[{i}]"
            item = _fields(item, where, {"id", "name", "limit", "selections"})
            selections_data = item["selections"]
            if not isinstance(selections_data, list) or not selections_data:
                raise ManifestError(f"{where}.selections: at least one selection is required")
            selections = []
            for j, raw in enumerate(selections_data):
                at = f"{where}.selections[{j}]"
                raw = _fields(raw, at, {"id", "name"})
                selections.append(Selection(_identifier(raw["id"], f"{at}.id"), _text(raw["name"], f"{at}.name")))
            ids = [s.id for s in selections]
            if len(set(ids)) != len(ids):
                raise ManifestError(f"{where}.selections: selection ids must be unique")
            limit = strict_int(item["limit"], f"{where}.limit", minimum=1, maximum=len(selections), error=ManifestError)
            contests.append(
                Contest(
                    _identifier(item["id"], f"{where}.id"),
                    _text(item["name"], f"{where}.name"),
                    limit,
                    tuple(selections),
                )
            )
        contest_ids = [c.id for c in contests]
        if len(set(contest_ids)) != len(contest_ids):
            raise ManifestError("manifest.contests: contest ids must be unique")
        return cls(
            _identifier(data["election_id"], "manifest.election_id"),
            _text(data["name"], "manifest.name"),
            tuple(contests),
            batch_min,
            data["mode"],
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "version": MANIFEST_VERSION,
            "election_id": self.election_id,
            "name": self.name,
            "contests": [
                {
                    "id": c.id,
                    "name": c.name,
                    "limit": c.limit,
                    "selections": [{"id": s.id, "name": s.name} for s in c.selections],
                }
                for c in self.contests
            ],
            "batch_min": self.batch_min,
            "mode": self.mode,
        }

    @property
    def base_hash(self) -> bytes:
        """SHA-256 of the manifest's canonical JSON: the election's identity."""
        if self._base_hash is None:
            object.__setattr__(self, "_base_hash", hash_value(self.to_json()))
        return self._base_hash  # type: ignore[return-value]

    def contest(self, contest_id: str) -> Contest:
        for contest in self.contests:
            if contest.id == contest_id:
                return contest
        raise KeyError(contest_id)

    def positions(self) -> Iterator[tuple[Contest, Selection]]:
        for contest in self.contests:
            for selection in contest.selections:
                yield contest, selection


def sample_manifest(contests: int = 2, selections: int = 3, limit: int = 1, batch_min: int = 2) -> Manifest:
    """A synthetic rehearsal manifest for simulations, tests and benchmarks (contest ``c``,
    selection ``s``)."""
    return Manifest.from_json(
        {
            "version": MANIFEST_VERSION,
            "election_id": "sample",
            "name": {"en": "Sample election", "ja": "サンプル選挙"},
            "contests": [
                {
                    "id": f"contest-{c + 1}",
                    "name": {"en": f"Contest {c + 1}", "ja": f"選挙区 {c + 1}"},
                    "limit": min(limit, selections),
                    "selections": [
                        {
                            "id": f"candidate-{s + 1}",
                            "name": {"en": f"Candidate {s + 1}", "ja": f"候補者 {s + 1}"},
                        }
                        for s in range(selections)
                    ],
                }
                for c in range(contests)
            ],
            "batch_min": batch_min,
            "mode": "rehearsal",
        }
    )
