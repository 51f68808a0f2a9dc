"""The independent verifier: re-checks a whole election record from its files alone.

The checks are numbered and listed in :data:`CHECKS` (and in ``docs/verifier.md``). Every
check runs even when an earlier one failed, as far as the data allows; a check that cannot
run because what it needs is unreadable fails with that reason. Ballots are streamed: memory
holds only the running tally and one small entry per ballot (its hash, for chains and statements).

The record's layout is checked too: a stray file or folder inside a folder fails the check
that owns the folder (``trustees/`` 3, ``ballots/`` and ``spoiled/`` 6, ``device_statements/``
8, ``decryption/`` 14, ``stations/`` 16), a stray entry at the top fails check 19. Nothing in a
record goes unread.

Check 20 (issue 17) reads ``reconciliation.json``: the centre's figures per station and per
municipality, held to what the record recomputes (ballots from the chains, check-ins from the
signed closing reports), and every early/common polling place's roll key held to its
municipality's token key, each of its ballots' tokens verified under that key.

Record format 2 keeps no casting order, so completeness is shown without one: each device's
signed statement counts and commits to the set of its ballots (check 8), and each station's
chain is a chain of batches sorted by ballot hash (check 16).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from election.ballot import BALLOT_ID_SIZE, BallotOpening, SealedBallot, Token
from election.chain import COUNTED_KINDS, ChainEntry, Checkpoint, genesis_hash, verify_chain, verify_document
from election.context import ElectionContext
from election.devices import DeviceStatement
from election.encoding import check_version, hex_bytes
from election.errors import ElectionError, FormatError
from election.group import G
from election.ids import check_device_id, check_station_id, check_trustee_id
from election.keyceremony import TrusteePublic, joint_public_key
from election.manifest import Manifest
from election.pool import CHUNK, ordered_chunks
from election.reconciliation import ELECTION_DAY, MUNICIPAL_KINDS, RECONCILIATION, Reconciliation
from election.record import (
    BALLOTS,
    CONTEXT,
    DECRYPTION,
    DEVICE_STATEMENTS,
    DEVICES,
    FILE,
    FOLDER,
    FOLDERS,
    MANIFEST,
    OPTIONAL_ROOT_FILES,
    RECORD_VERSION,
    RESULTS,
    ROOT_FILES,
    SPOILED,
    TALLY,
    TRUSTEES,
    RecordSource,
)
from election.stations import (
    CHAIN_FILE,
    CHECKPOINT_FILE,
    CLOSING_FILE,
    MAX_CHAIN_FILE,
    OPTIONAL_STATION_FILES,
    STATION_FILE,
    STATION_FILES,
    STATIONS,
    StationKeys,
    parse_chain_lines,
    roll_key_hex,
)
from election.tally import DecryptionShare, EncryptedTally, Results, TallyAccumulator, combined_share
from election.tokens import verify as verify_token


@dataclass(frozen=True, slots=True)
class Check:
    number: int
    title: str


CHECKS: tuple[Check, ...] = (
    Check(1, "manifest is well-formed; its hash is the base hash"),
    Check(2, "context is well-formed and names the manifest's base hash and the trustees"),
    Check(3, "every trustee's commitments carry valid proofs of knowledge"),
    Check(4, "joint public key is the sum of the trustees' first commitments"),
    Check(5, "device list is well-formed"),
    Check(6, "every sealed ballot is well-formed and belongs to this election"),
    Check(7, "every sealed ballot's device signature verifies"),
    Check(8, "every device's final statement verifies and names exactly its ballots: their count and set"),
    Check(9, "no ballot id and no token is used twice"),
    Check(10, "every selection proof (encrypts 0 or 1) verifies"),
    Check(11, "every contest proof (at most its limit) verifies"),
    Check(12, "every spoiled ballot's opening reproduces it; spoiled ballots are not counted"),
    Check(13, "the encrypted tally is the sum of exactly the cast ballots"),
    Check(14, "decryption shares come from at least a quorum of trustees and verify"),
    Check(15, "the published results are what the tally decrypts to"),
    Check(16, "every station's chain of hash-sorted batches is unbroken and ends at its ledger's signed checkpoint"),
    Check(
        17, "every ballot is in exactly one batch of one station's chain, as what it is; every entry's ballot is here"
    ),
    Check(18, "every cast ballot spends a token its station's roll signed; spoiled ballots carry none"),
    Check(19, "the record folder holds exactly the documented files and folders"),
    Check(
        20,
        "the reconciliation's figures are the record's; every early/common place's roll key is its municipality's "
        "token key and each of its tokens verifies under it",
    ),
)
FOLDER_OWNERS = {TRUSTEES: 3, BALLOTS: 6, SPOILED: 6, DEVICE_STATEMENTS: 8, DECRYPTION: 14, STATIONS: 16}
"""The check that fails for a missing folder or a stray entry inside it."""
LAYOUT_CHECK = 19
RECONCILIATION_CHECK = 20
_TITLES = {check.number: check.title for check in CHECKS}
_MAX_PROBLEMS_SHOWN = 20


@dataclass(slots=True)
class CheckOutcome:
    check: Check
    problems: list[str] = field(default_factory=list)
    problem_count: int = 0

    @property
    def passed(self) -> bool:
        return self.problem_count == 0


@dataclass(slots=True)
class StationCounts:
    """What one station's chain counts, beside its roll's check-ins (from its closing report)."""

    cast: int = 0
    late: int = 0
    """Cast ballots chained after the final close (counted; docs/ledger.md)."""
    spoiled: int = 0
    check_ins: int | None = None
    """None when the record holds no closing report of the station with the roll's count."""

    @property
    def counted(self) -> int:
        return self.cast + self.late

    def describe(self, station_id: str) -> str:
        check_ins = "no closing report" if self.check_ins is None else f"{self.check_ins} check-ins"
        differ = "" if self.check_ins in (None, self.counted) else "  ← differs"
        return (f"station {station_id}: {check_ins}, {self.counted} ballots counted ({self.late} late), "
                f"{self.spoiled} spoiled{differ}")  # fmt: skip


@dataclass(slots=True)
class VerificationReport:
    outcomes: dict[int, CheckOutcome]
    ballots_checked: int = 0
    stations: dict[str, StationCounts] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(outcome.passed for outcome in self.outcomes.values())

    def failed_checks(self) -> list[int]:
        return [n for n, outcome in self.outcomes.items() if not outcome.passed]

    def fail(self, number: int, problem: str) -> None:
        outcome = self.outcomes[number]
        outcome.problem_count += 1
        if len(outcome.problems) < _MAX_PROBLEMS_SHOWN:
            outcome.problems.append(problem)


Progress = Callable[[int, int], None]
T = TypeVar("T")


@dataclass(slots=True)
class _ChainedBallot:
    station: str
    kind: str
    where: str
    found: bool = False


def verify_record(
    source: RecordSource, progress: Progress | None = None, *, workers: int = 1, cluster: str | None = None
) -> VerificationReport:
    """Run every check; ``workers`` processes share the per-ballot work (same report for any
    number). A record that cannot be reopened by path in another process (one in memory) is
    checked in this process whatever ``workers`` says. With ``cluster`` (a Dask scheduler
    address) the per-ballot work runs on that cluster's workers, which must see the record at
    the same path. A worker that dies for good raises :class:`election.pool.WorkerLost`: the
    record was not fully checked, never a partial pass."""
    report = VerificationReport({c.number: CheckOutcome(c) for c in CHECKS})
    _Verifier(source, report, progress, workers, cluster).run()
    return report


class _Verifier:
    def __init__(
        self,
        source: RecordSource,
        report: VerificationReport,
        progress: Progress | None,
        workers: int = 1,
        cluster: str | None = None,
    ):
        self.source = source
        self.report = report
        self.workers = max(1, workers)
        self.cluster = cluster if getattr(source, "shareable", False) else None
        self.progress = progress or (lambda done, total: None)
        self.chained: dict[bytes, _ChainedBallot] = {}
        self.roll_keys: dict[str, rsa.RSAPublicKey] = {}
        self.municipal_keys: dict[str, tuple[str, rsa.RSAPublicKey, bool]] = {}
        """Each early/common station → (its municipality, the municipality's token key, whether
        that is the station's roll key: then check 18's token verification answers for 20)."""
        self.token_keys: dict[str, rsa.RSAPublicKey] = {}
        """Every municipality's token key, to name the one a stray token was signed with."""
        self.unverified_closing: set[str] = set()
        """Stations whose closing report is present but failed check 16 (or whose chain did, so
        it could not be held to it): check 20 does not fail them again for their check-ins."""

    def read(self, number: int, name: str) -> Any:
        """One file's JSON; None (after failing check ``number``) if missing, unreadable or ``null``
        (no record file is ``null``: taking it for a missing optional value would skip its checks)."""
        try:
            data = self.source.read(name)
            if data is None:
                raise FormatError("null is not a document of the record")
            return data
        except FileNotFoundError:
            self.report.fail(number, f"{name} is missing")
        except (FormatError, OSError) as exc:
            self.report.fail(number, f"{name}: {exc}")
        return None

    def load(self, number: int, name: str, parse: Callable[[Any], T]) -> T | None:
        """Read and parse one file; a missing or malformed one fails check ``number``."""
        data = self.read(number, name)
        if data is None:
            return None
        try:
            return parse(data)
        except ElectionError as exc:
            self.report.fail(number, f"{name}: {exc}")
            return None

    def fail_from(self, first: int, reason: str) -> None:
        for check in CHECKS:  # the layout check never depends on content
            if check.number >= first and check.number != LAYOUT_CHECK:
                self.report.fail(check.number, f"not checked: {reason}")

    def run(self) -> None:
        self.check_layout()
        manifest = self.load_manifest()
        if manifest is None:
            self.fail_from(2, "no valid manifest")
            return
        context = self.load_context(manifest)
        trustees = self.load_trustees(manifest, context)
        if context is None:
            self.fail_from(4, "no valid context")
            return
        if trustees and joint_public_key(trustees) != context.joint_public_key:
            self.report.fail(4, "context.json joint_public_key is not the sum of the commitments")
        elif not trustees:
            self.report.fail(4, "no trustee data to derive the joint public key from")
        devices = self.load_devices()
        self.load_stations(manifest)
        self.check_reconciliation(manifest)
        accumulator = self.check_ballots(manifest, context, devices)
        tally = self.check_tally(manifest, accumulator)
        shares = self.check_shares(manifest, context, trustees, tally)
        self.check_results(manifest, context, tally, shares, trustees)

    def check_layout(self) -> None:
        """Mandatory folders exist; nothing stray anywhere (formats.md §12)."""
        root = self.source.listing("")
        if root is None:
            self.report.fail(LAYOUT_CHECK, "the record folder does not exist")
            return
        for name, kind in sorted(root.items()):
            expected = (
                FILE if name in ROOT_FILES or name in OPTIONAL_ROOT_FILES else FOLDER if name in FOLDERS else None
            )
            if expected is None:
                self.report.fail(LAYOUT_CHECK, f"stray {kind} {name!r} at the top of the record")
            elif kind != expected:
                self.report.fail(LAYOUT_CHECK, f"{name} must be a {expected}, it is a {kind}")
        named = {
            TRUSTEES: check_trustee_id,
            DECRYPTION: check_trustee_id,
            BALLOTS: _ballot_name,
            SPOILED: _ballot_name,
            DEVICE_STATEMENTS: check_device_id,
        }
        for folder, number in FOLDER_OWNERS.items():
            entries = self.source.listing(folder)
            if entries is None:
                self.report.fail(number, f"the mandatory folder {folder}/ is missing")
                continue
            for name, kind in sorted(entries.items()):
                if folder == STATIONS:
                    self.check_station_layout(name, kind)
                elif kind != FILE or not name.endswith(".json") or not _valid(named[folder], name[: -len(".json")]):
                    self.report.fail(number, f"{folder}/{name}: stray {kind} (only <id>.json files belong here)")

    def check_station_layout(self, name: str, kind: str) -> None:
        if kind != FOLDER or not _valid(check_station_id, name):
            self.report.fail(16, f"{STATIONS}/{name}: stray {kind} (only <station_id>/ folders belong here)")
            return
        entries = self.source.listing(f"{STATIONS}/{name}") or {}
        for entry, entry_kind in sorted(entries.items()):
            if entry not in (*STATION_FILES, *OPTIONAL_STATION_FILES) or entry_kind != FILE:
                self.report.fail(16, f"{STATIONS}/{name}/{entry}: stray {entry_kind}")
        for required in STATION_FILES:
            if required not in entries:
                self.report.fail(16, f"{STATIONS}/{name}/{required} is missing")

    def load_manifest(self) -> Manifest | None:
        return self.load(1, MANIFEST, Manifest.from_json)

    def load_context(self, manifest: Manifest) -> ElectionContext | None:
        context = self.load(2, CONTEXT, ElectionContext.from_json)
        if context is None:
            return None
        if context.base_hash != manifest.base_hash:
            self.report.fail(2, "context.base_hash is not the manifest's hash")
        files = self.source.names(TRUSTEES)
        if sorted(context.trustee_ids) != files:
            self.report.fail(2, f"trustee files {files} differ from context {list(context.trustee_ids)}")
        return context

    def load_trustees(self, manifest: Manifest, context: ElectionContext | None) -> list[TrusteePublic]:
        """Every trustee file that parses, names itself and sits at its index.

        Trustee ``context.trustee_ids[i]`` has index ``i + 1``: the order of the context is
        the order of the Lagrange indices. A trustee at another index is left out, so that two
        trustees can never share an index (their Lagrange weight would divide by zero).
        """
        trustees = []
        positions = {tid: i + 1 for i, tid in enumerate(context.trustee_ids)} if context else {}
        for name in self.source.names(TRUSTEES):
            trustee = self.load(3, f"{TRUSTEES}/{name}.json", TrusteePublic.from_json)
            if trustee is None:
                continue
            if trustee.trustee_id != name:
                self.report.fail(3, f"{TRUSTEES}/{name}.json holds trustee {trustee.trustee_id}")
                continue
            quorum = context.quorum if context else len(trustee.commitments)
            for problem in trustee.problems(manifest.base_hash, quorum):
                self.report.fail(3, problem)
            if context is not None and positions.get(name) != trustee.index:
                self.report.fail(3, f"{name} has index {trustee.index}, its place in context.trustee_ids is "
                                    f"{positions.get(name, 'none')}")  # fmt: skip
                continue
            trustees.append(trustee)
        indices = sorted(t.index for t in trustees)
        if context is None and indices != list(range(1, len(trustees) + 1)):
            self.report.fail(3, f"trustee indices {indices} are not 1..{len(trustees)}")
        return trustees

    def load_devices(self) -> dict[str, Ed25519PublicKey]:
        data = self.read(5, DEVICES)
        devices: dict[str, Ed25519PublicKey] = {}
        if data is None:
            return devices
        try:
            if not isinstance(data, dict) or set(data) != {"version", "devices"}:
                raise FormatError("expected exactly version and devices")
            check_version(data, RECORD_VERSION, "devices")
            if not isinstance(data["devices"], list):
                raise FormatError("devices must be a list")
        except FormatError as exc:
            self.report.fail(5, f"devices.json: {exc}")
            return devices
        entries = data["devices"]
        for i, entry in enumerate(entries):
            try:
                if not isinstance(entry, dict) or set(entry) != {"device_id", "public_key"}:
                    raise FormatError("expected device_id and public_key")
                device_id = check_device_id(entry["device_id"])
                if device_id in devices:
                    raise FormatError(f"device {device_id} listed twice")
                key = hex_bytes(entry["public_key"], 32, "public_key")
                devices[device_id] = Ed25519PublicKey.from_public_bytes(key)
            except (ElectionError, ValueError) as exc:
                self.report.fail(5, f"devices[{i}]: {exc}")
        return devices

    def load_stations(self, manifest: Manifest) -> None:
        stations = self.source.folders(STATIONS)
        if not stations:
            self.report.fail(16, "the record holds no station chains")
        for station_id in stations:
            folder = f"{STATIONS}/{station_id}"
            keys = self.load(16, f"{folder}/{STATION_FILE}", StationKeys.from_json)
            if keys is None:
                continue
            if keys.station_id != station_id:
                self.report.fail(16, f"{folder}/{STATION_FILE} describes station {keys.station_id}")
                continue
            self.roll_keys[station_id] = keys.roll_key
            closing = self.load_closing(folder, station_id, manifest, keys.ledger_key)
            closed_position = None if closing is None else closing["closed_position"]
            try:
                data = self.source.read_bytes(f"{folder}/{CHAIN_FILE}", max_size=MAX_CHAIN_FILE)
                entries = list(parse_chain_lines(data))
            except (ElectionError, OSError) as exc:
                self.report.fail(16, f"{folder}/{CHAIN_FILE}: {exc}")
                continue
            try:
                hashes = verify_chain(
                    genesis_hash(manifest.base_hash, station_id),
                    entries,
                    batch_min=manifest.batch_min,
                    closed_position=closed_position,
                )
            except ElectionError as exc:
                # The chain's fault is check 16's alone: its readable entries still say which
                # ballots the station chained, so check 17 is not failed for every one of them.
                self.report.fail(16, f"{folder}/{CHAIN_FILE}: {exc}")
                hashes = None
            counts = self.report.stations.setdefault(station_id, StationCounts())
            for entry in entries:
                setattr(counts, entry.kind, getattr(counts, entry.kind) + 1)
            if hashes is not None:
                self.check_heads(folder, station_id, manifest, keys.ledger_key, entries, hashes, closing, counts)
            if (
                CLOSING_FILE in (self.source.listing(folder) or {})
                and counts.check_ins is None
                and (closing is None or closing["check_ins"] is not None)
            ):
                self.unverified_closing.add(station_id)
            for entry in entries:
                where = f"{folder} entry {entry.position}"
                if entry.ballot_hash in self.chained:
                    self.report.fail(17, f"{where}: ballot already in {self.chained[entry.ballot_hash].where}")
                self.chained[entry.ballot_hash] = _ChainedBallot(station_id, entry.kind, where)

    def check_heads(self, folder: str, station_id: str, manifest: Manifest, ledger_key: Ed25519PublicKey,
                    entries: list[ChainEntry], hashes: list[bytes], closing: dict[str, Any] | None,
                    counts: StationCounts) -> None:  # fmt: skip
        """The signed checkpoint is the head of a verified chain; the closing report describes it."""
        checkpoint = self.load(
            16, f"{folder}/{CHECKPOINT_FILE}", lambda doc, key=ledger_key: Checkpoint.from_signed(doc, key)
        )
        if checkpoint is not None and (
            checkpoint.station_id != station_id
            or checkpoint.base_hash != manifest.base_hash
            or checkpoint.head.position != len(entries)
            or not checkpoint.matches(genesis_hash(manifest.base_hash, station_id), hashes)
        ):
            self.report.fail(16, f"{folder}: the signed checkpoint is not the head of the published chain")
        if closing is not None:
            self.check_closing(folder, station_id, manifest, closing, entries, hashes, counts)

    def load_closing(
        self, folder: str, station_id: str, manifest: Manifest, ledger_key: Ed25519PublicKey
    ) -> dict[str, Any] | None:
        """The optional signed closing report's body, if its signature and shape hold (else
        check 16 fails and the chain is held to ``batch_min`` throughout). Its
        ``closed_position`` is where the polls closed: only batches ending there or after may
        hold fewer than ``batch_min`` ballots."""
        name = f"{folder}/{CLOSING_FILE}"
        if CLOSING_FILE not in (self.source.listing(folder) or {}):
            return None
        document = self.read(16, name)
        if document is None:
            return None
        try:
            body = verify_document(document, ledger_key)
            if body.get("type") != "closing_report" or body.get("station_id") != station_id:
                raise FormatError("not this station's closing report")
            if body.get("base_hash") != manifest.base_hash.hex():
                raise FormatError("signed for another election")
            position, closed_position = body.get("position"), body.get("closed_position")
            if type(position) is not int or type(closed_position) is not int or not 0 <= closed_position <= position:
                raise FormatError("closed_position must be a chain position at or before the report's position")
            check_ins = body.get("check_ins")
            if check_ins is not None and (type(check_ins) is not int or check_ins < 0):
                raise FormatError("check_ins must be a count")
        except ElectionError as exc:
            self.report.fail(16, f"{name}: {exc}")
            return None
        return body

    def check_closing(self, folder: str, station_id: str, manifest: Manifest, body: dict[str, Any],
                      entries: list[ChainEntry], hashes: list[bytes], counts: StationCounts) -> None:  # fmt: skip
        """The closing report describes this chain, and no more ballots are counted than the roll
        checked voters in (a voter may check in and not vote: fewer is fine)."""
        name = f"{folder}/{CLOSING_FILE}"
        position, check_ins = body["position"], body["check_ins"]
        try:
            if not position <= len(entries):
                raise FormatError("its position is not in the chain")
            head = genesis_hash(manifest.base_hash, station_id) if position == 0 else hashes[position - 1]
            if body.get("head_hash") != head.hex():
                raise FormatError(f"its head is not the chain's entry at position {position}")
            counted = sum(1 for entry in entries[:position] if entry.kind in COUNTED_KINDS)
            if body.get("ballots") != counted:
                raise FormatError(f"it counts {body.get('ballots')} ballots, the chain {counted} up to it")
        except ElectionError as exc:
            self.report.fail(16, f"{name}: {exc}")
            return
        counts.check_ins = check_ins
        if check_ins is not None and counts.counted > check_ins:
            self.report.fail(18, f"{folder}: {counts.counted} ballots counted, the roll checked in only {check_ins}")

    def check_reconciliation(self, manifest: Manifest) -> None:
        """Check 20 on ``reconciliation.json`` (formats.md §13), before the ballots are read so
        that each early/common place's tokens are checked under its municipality's key as they
        stream past (``check_station_membership``).

        What the record recomputes is compared: the station list (every station folder, no
        other), each station's counted ballots (its chain) and check-ins (its verified closing
        report). What it cannot (the kinds, the marks of the municipal registers) is held to
        the keys and to the file's own rules (``Reconciliation.problems``): a station the centre
        calls early or common must hold its municipality's token key as its roll key, and a
        station called election-day must not hold any municipality's (it would be a municipal
        place kept out of its municipality's sums)."""
        number = RECONCILIATION_CHECK
        document = self.load(number, RECONCILIATION, Reconciliation.from_json)
        if document is None:
            return
        if document.base_hash != manifest.base_hash:
            self.report.fail(number, f"{RECONCILIATION}: made for another election")
        for problem in document.problems():
            self.report.fail(number, f"{RECONCILIATION}: {problem}")
        self.token_keys = {m.municipality: m.token_key for m in document.municipalities}
        owners = {m.token_key_hex: m.municipality for m in document.municipalities}
        folders = {name for name in self.source.folders(STATIONS) if _valid(check_station_id, name)}
        listed = {s.station_id for s in document.stations}
        for station_id in sorted(folders - listed):
            self.report.fail(number, f"{RECONCILIATION}: station {station_id} of the record is not listed")
        for station_id in sorted(listed - folders):
            self.report.fail(number, f"{RECONCILIATION}: station {station_id} is listed but not in the record")
        for line in document.stations:
            where = f"{RECONCILIATION}: station {line.station_id}"
            if line.station_id not in folders:
                continue
            counts = self.report.stations.get(line.station_id)
            if counts is None:
                self.report.fail(number, f"{where}: not checked: its chain could not be read (check 16)")
            else:
                if line.ballots != counts.counted:
                    self.report.fail(number, f"{where}: {line.ballots} ballots, its chain counts {counts.counted}")
                if line.check_ins != counts.check_ins and line.station_id not in self.unverified_closing:
                    signed = "no verified closing report with check-ins" if counts.check_ins is None else (
                        f"{counts.check_ins} in its signed closing report")  # fmt: skip
                    self.report.fail(number, f"{where}: {line.check_ins} check-ins, {signed}")
            roll_key = self.roll_keys.get(line.station_id)
            municipality = document.municipality(line.municipality)
            if roll_key is None:
                self.report.fail(number, f"{where}: not checked: its station.json could not be read (check 16)")
                continue
            owner = owners.get(roll_key_hex(roll_key))
            if line.kind in MUNICIPAL_KINDS and municipality is not None:
                same = owner == municipality.municipality
                self.municipal_keys[line.station_id] = (municipality.municipality, municipality.token_key, same)
                if not same:
                    held = f"municipality {owner}'s" if owner else "its own"
                    name = municipality.municipality
                    self.report.fail(number, f"{where}: {_article(line.kind)} {line.kind} polling place of {name} "
                                             f"whose roll key is {held}, not {name}'s token key")  # fmt: skip
            elif line.kind == ELECTION_DAY and owner is not None:
                self.report.fail(number, f"{where}: listed as election-day, yet its roll key is municipality "
                                         f"{owner}'s token key")  # fmt: skip

    def check_station_membership(self, where: str, ballot: _BallotFacts, kind: str) -> None:
        """Checks 17 and 18 for one ballot: its chain entry and its token."""
        if kind == "spoiled" and ballot.token is not None:
            self.report.fail(18, f"{where}: a spoiled ballot must not carry the voter's token")
        if kind == "cast" and ballot.token is None:
            self.report.fail(18, f"{where}: a cast ballot without a token")
        chained = self.chained.get(ballot.ballot_hash)
        if chained is None:
            self.report.fail(17, f"{where}: in no station's chain")
            return
        chained.found = True
        if ("cast" if chained.kind == "late" else chained.kind) != kind:
            self.report.fail(17, f"{where}: recorded as {kind}, chained as {chained.kind} ({chained.where})")
        if kind != "cast" or ballot.token is None:
            return
        token = ballot.token
        roll_key = self.roll_keys.get(chained.station)
        valid = roll_key is not None and verify_token(roll_key, token.message, token.signature)
        if not valid:
            self.report.fail(18, f"{where}: the token is not signed by station {chained.station}'s roll")
        municipal = self.municipal_keys.get(chained.station)
        if municipal is None:
            return
        name, key, same = municipal
        if not (valid if same else verify_token(key, token.message, token.signature)):
            signer = None
            if len(self.report.outcomes[RECONCILIATION_CHECK].problems) < _MAX_PROBLEMS_SHOWN:  # bounded work
                others = (other for other, k in self.token_keys.items()
                          if other != name and verify_token(k, token.message, token.signature))  # fmt: skip
                signer = next(others, None)
            by = f", it is signed by municipality {signer}'s key" if signer else ""
            self.report.fail(RECONCILIATION_CHECK, f"{where}: chained at {chained.station}, a polling place of "
                                                   f"{name}, its token does not verify under {name}'s token "
                                                   f"key{by}")  # fmt: skip

    def check_ballots(
        self, manifest: Manifest, context: ElectionContext, devices: dict[str, Ed25519PublicKey]
    ) -> TallyAccumulator:
        """Checks 6–12 on every ballot, then 8, 9, 17, 18 and 20 (municipal tokens) across them.

        The per-ballot work (parsing and validating every point, the device signature, every
        proof, a spoiled ballot's opening) is stateless and runs in ``workers`` processes over
        chunks of ballots; what ties ballots together is merged here, in the record's order, so
        the report is the same for any number of workers.
        """
        accumulator = TallyAccumulator(manifest)
        merge = _Merge(self, accumulator)
        names = [(folder, name) for folder in (BALLOTS, SPOILED) for name in self.source.names(folder)]
        total = len(names)
        judge = _Judge(self.source, manifest, context, devices)
        workers = self.workers if getattr(self.source, "shareable", False) else 1
        chunk = _chunk_size(total, workers)
        done = 0
        for count, (judged, partial) in ordered_chunks(judge.chunk, names, workers, chunk=chunk, cluster=self.cluster):
            for item in judged:
                merge.take(item)
            accumulator.merge(partial)
            done += count
            self.progress(done, total)
        self.check_device_statements(manifest, devices, merge.sealed)
        for chained in self.chained.values():
            if not chained.found:
                self.report.fail(17, f"{chained.where}: its ballot is missing from the record")
        return accumulator

    def check_device_statements(
        self, manifest: Manifest, devices: dict[str, Ed25519PublicKey], sealed: dict[str, list[bytes]]
    ) -> None:
        """Check 8: every device's final statement is signed by it and states exactly the set of
        its ballots in the record (cast and spoiled), so no ballot of a device can be dropped,
        added or replaced unnoticed, whatever order the ballots were chained in."""
        stated: set[str] = set()
        for name in self.source.names(DEVICE_STATEMENTS):
            where = f"{DEVICE_STATEMENTS}/{name}.json"
            stated.add(name)  # a malformed statement fails here, not again as a missing one
            statement = self.load(8, where, DeviceStatement.from_json)
            if statement is None:
                continue
            if statement.device_id != name:
                self.report.fail(8, f"{where}: holds the statement of device {statement.device_id}")
                continue
            if statement.base_hash != manifest.base_hash:
                self.report.fail(8, f"{where}: made for another election")
            device_key = devices.get(name)
            if device_key is None:
                self.report.fail(8, f"{where}: device {name} is not in devices.json")
                continue
            try:
                statement.verify(device_key)
            except ElectionError as exc:
                self.report.fail(8, f"{where}: {exc}")
                continue
            found = sealed.get(name, [])
            if not statement.matches(found):
                self.report.fail(8, f"{where}: the device sealed {statement.sealed} ballots, the record holds "
                                    f"{len(found)} of it and not that set")  # fmt: skip
        for device_id in sorted(set(sealed) - stated):
            self.report.fail(8, f"device {device_id}: {len(sealed[device_id])} ballots and no device statement")

    def check_tally(self, manifest: Manifest, accumulator: TallyAccumulator) -> EncryptedTally | None:
        tally = self.load(13, TALLY, lambda data: EncryptedTally.from_json(data, manifest))
        if tally is None:
            return None
        expected = accumulator.result()
        if tally.base_hash != manifest.base_hash:
            self.report.fail(13, "tally.json belongs to another election")
        if tally.ballot_count != expected.ballot_count:
            self.report.fail(13, f"tally counts {tally.ballot_count} ballots, the record holds {expected.ballot_count}")
        for position, ciphertext in expected.sums.items():
            if tally.sums[position] != ciphertext:
                self.report.fail(13, f"tally of {position[0]}/{position[1]} is not the sum of the cast ballots")
        return tally

    def check_shares(
        self,
        manifest: Manifest,
        context: ElectionContext,
        trustees: list[TrusteePublic],
        tally: EncryptedTally | None,
    ) -> list[DecryptionShare]:
        if tally is None:
            self.report.fail(14, "not checked: no valid tally")
            return []
        known = {t.trustee_id: t for t in trustees}
        shares = []
        for name in self.source.names(DECRYPTION):
            where = f"{DECRYPTION}/{name}.json"
            loaded = self.load(14, where, lambda data: (DecryptionShare.from_json(data, manifest), data))
            if loaded is None:
                continue
            share, _ = loaded
            if share.trustee_id != name or name not in known:
                self.report.fail(14, f"{where}: not the share of a known trustee {name}")
                continue
            problems = share.failures(tally, known[name], trustees)
            if share.base_hash != manifest.base_hash or share.ballot_count != tally.ballot_count:
                problems.insert(0, "made for another election or tally")
            for problem in problems:
                self.report.fail(14, f"{where}: {problem}")
            if not problems:  # only a share that passes check 14 in full is used for check 15
                shares.append(share)
        if len(shares) < context.quorum:
            self.report.fail(14, f"{len(shares)} valid shares, the quorum is {context.quorum}")
        return shares

    def check_results(
        self,
        manifest: Manifest,
        context: ElectionContext,
        tally: EncryptedTally | None,
        shares: list[DecryptionShare],
        trustees: list[TrusteePublic],
    ) -> None:
        results = self.load(15, RESULTS, lambda data: Results.from_json(data, manifest))
        if results is None:
            return
        if tally is None or len(shares) < context.quorum:
            self.report.fail(15, "not checked: no valid tally or too few valid shares")
            return
        if results.base_hash != manifest.base_hash or results.ballot_count != tally.ballot_count:
            self.report.fail(15, "results.json is for another election or ballot count")
        if sorted(results.trustees_present) != sorted(s.trustee_id for s in shares):
            self.report.fail(15, "results.json names other trustees than the decryption shares")
        indices = {t.trustee_id: t.index for t in trustees}
        for position, ciphertext in tally.sums.items():
            total = results.totals[position]
            if not 0 <= total <= tally.ballot_count:
                self.report.fail(15, f"{position[0]}/{position[1]}: total {total} out of range")
                continue
            decrypted = ciphertext.beta - combined_share(position, shares, indices)
            if decrypted != total * G:
                self.report.fail(15, f"{position[0]}/{position[1]}: the tally does not decrypt to {total}")
        for contest in manifest.contests:
            marked = sum(results.totals[contest.id, s.id] for s in contest.selections)
            if marked > contest.limit * tally.ballot_count:
                self.report.fail(15, f"{contest.id}: {marked} marks exceed what {tally.ballot_count} ballots allow")


@dataclass(frozen=True, slots=True)
class _Judged:
    """What one ballot file showed on its own: enough to check what ties ballots together."""

    where: str
    problems: tuple[tuple[int, str], ...]
    facts: _BallotFacts | None
    """None when the file could not be read as a sealed ballot of this election (check 6)."""
    kind: str


@dataclass(frozen=True, slots=True)
class _BallotFacts:
    """The few fields of a ballot that the cross-ballot checks need (not its ciphertexts)."""

    ballot_id: bytes
    ballot_hash: bytes
    device_id: str
    token: Token | None

    @classmethod
    def of(cls, ballot: SealedBallot) -> _BallotFacts:
        return cls(ballot.ballot_id, ballot.ballot_hash, ballot.device_id, ballot.token)


class _Judge:
    """The stateless per-ballot checks (6, 7, 10, 11, 12), picklable for a worker process."""

    def __init__(
        self, source: RecordSource, manifest: Manifest, context: ElectionContext, devices: dict[str, Ed25519PublicKey]
    ) -> None:
        self.source = source
        self.manifest = manifest
        self.key = context.joint_public_key
        self.devices = devices

    def __getstate__(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "manifest": self.manifest.to_json(),
            "key": self.key,
            "devices": {name: key.public_bytes_raw() for name, key in self.devices.items()},
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.source = state["source"]
        self.manifest = Manifest.from_json(state["manifest"])
        self.key = state["key"]
        self.devices = {name: Ed25519PublicKey.from_public_bytes(raw) for name, raw in state["devices"].items()}

    def chunk(self, names: list[tuple[str, str]]) -> tuple[list[_Judged], TallyAccumulator]:
        """Judge a run of ballot files; the cast ones that are well-formed are summed here."""
        partial = TallyAccumulator(self.manifest)
        judged = []
        for folder, name in names:
            item, ballot = self.one(folder, name)
            judged.append(item)
            if ballot is not None and item.kind == "cast":
                partial.add(ballot)
        return judged, partial

    def one(self, folder: str, name: str) -> tuple[_Judged, SealedBallot | None]:
        where = f"{folder}/{name}.json"
        kind = "cast" if folder == BALLOTS else "spoiled"
        problems: list[tuple[int, str]] = []
        try:
            data, encoded = self.source.read_document(where)
        except FileNotFoundError:
            return _Judged(where, ((6, f"{where} is missing"),), None, kind), None
        except (FormatError, OSError) as exc:
            return _Judged(where, ((6, f"{where}: {exc}"),), None, kind), None
        opening = None
        try:
            if folder == SPOILED:
                if not isinstance(data, dict) or set(data) != {"version", "ballot", "opening"}:
                    raise FormatError("expected version, ballot and opening")
                check_version(data, RECORD_VERSION, "spoiled ballot")
                data, opening, encoded = data["ballot"], data["opening"], None
            ballot = SealedBallot.from_json(data, self.manifest, encoded=encoded)
        except ElectionError as exc:
            return _Judged(where, ((6, f"{where}: {exc}"),), None, kind), None
        if ballot.ballot_id.hex() != name:
            problems.append((6, f"{where}: holds ballot {ballot.ballot_id.hex()}"))
        if ballot.base_hash != self.manifest.base_hash:
            problems.append((6, f"{where}: belongs to another election"))
        device_key = self.devices.get(ballot.device_id)
        if device_key is None:
            problems.append((7, f"{where}: device {ballot.device_id} is not in devices.json"))
        elif not ballot.signature_valid(device_key):
            problems.append((7, f"{where}: device signature does not verify"))
        for failure in ballot.proof_failures(self.manifest, self.key):
            problems.append((11 if failure.startswith("contest") else 10, f"{where}: {failure}"))
        if opening is not None:
            try:
                failures = BallotOpening.from_json(opening, self.manifest).opening_failures(
                    ballot, self.manifest, self.key
                )
            except ElectionError as exc:
                failures = [str(exc)]
            problems += [(12, f"{where}: {failure}") for failure in failures]
        return _Judged(where, tuple(problems), _BallotFacts.of(ballot), kind), ballot


class _Merge:
    """What ties ballots together, checked in the record's order: 8's sets, 9, 17 and 18."""

    def __init__(self, verifier: _Verifier, accumulator: TallyAccumulator) -> None:
        self.verifier = verifier
        self.report = verifier.report
        self.sealed: dict[str, list[bytes]] = {}
        """Each device's ballot hashes in the record, for its statement (check 8)."""
        self.seen_ids: set[bytes] = set()
        self.seen_tokens: set[bytes] = set()

    def take(self, item: _Judged) -> None:
        for number, problem in item.problems:
            self.report.fail(number, problem)
        ballot = item.facts
        if ballot is None:
            return
        self.report.ballots_checked += 1
        where = item.where
        self.sealed.setdefault(ballot.device_id, []).append(ballot.ballot_hash)
        if ballot.ballot_id in self.seen_ids:
            self.report.fail(9, f"{where}: ballot id used twice")
        self.seen_ids.add(ballot.ballot_id)
        if ballot.token is not None:
            if ballot.token.message in self.seen_tokens:
                self.report.fail(9, f"{where}: token used twice")
            self.seen_tokens.add(ballot.token.message)
        self.verifier.check_station_membership(where, ballot, item.kind)


_CHUNKS_PER_WORKER = 16
_MIN_CHUNK = 8


def _chunk_size(total: int, workers: int) -> int:
    """Ballots per task: :data:`CHUNK`, or fewer in a small record so that each worker (at
    least two, on a cluster whose size this process does not know) gets about
    :data:`_CHUNKS_PER_WORKER` tasks: the last task then leaves the other workers idle for a
    moment only (a 2 × 4 ballot takes ~10 ms: 64 of them, over half a second)."""
    return max(_MIN_CHUNK, min(CHUNK, -(-total // (max(workers, 2) * _CHUNKS_PER_WORKER))))


def check_title(number: int) -> str:
    return _TITLES[number]


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def _valid(check: Callable[[str, str], str], name: str) -> bool:
    try:
        check(name, "name")
    except FormatError:
        return False
    return True


def _ballot_name(value: str, what: str) -> str:
    """A ballot file's stem: the ballot id, 32 lowercase hex digits."""
    hex_bytes(value, BALLOT_ID_SIZE, what)
    return value
