"""The terminal's durable stores: the ballot outbox, and apart from it the uncast check-ins.

**Ballot outbox** (``outbox.db``, docs/booth.md "Durability") — the ballots this terminal
sealed and sent, kept so that nothing is lost and nothing keeps the order they were cast in
(docs/design-record-v2.md §3):

- ``outbox``: each sealed ballot (cast or spoiled) not yet acknowledged, as the exact
  submission bytes that go to the hub (ballot, opening if spoiled, and the device statement
  signed when it was committed), so every resend carries the same statement. Keyed by ballot
  hash, without row ids: no casting order even while it waits. The ledger's held ack deletes
  the row;
- ``sealed``: the SET of the hashes of every ballot this terminal sealed and sent, keyed by
  hash, without row ids, no time: what each device statement counts and commits to;
- ``tally``: one row, ballots cast (the terminal status) and how many of them the audit log
  has counted (``ballots_cast`` per interval, never one entry per ballot).

It uses the check-in store's discipline: rollback journal, ``secure_delete=ON`` and
``synchronous=EXTRA`` (infra/store.py): an acknowledged ballot's row is zeroed and no WAL
frame keeps old pages in commit order. It holds nothing of a check-in. A cast ballot carries
its token (message and signature): that is public, it is published anyway.

**Check-in store** (``checkins.db`` beside it: :class:`CheckinStore`, docs/booth.md
"Durability") — a check-in request (token message, blinded value, blinding inverse) written
*before* it is sent, so a voter whose session was interrupted by a crash gets the identical
request, and the roll's identical grant, on the next try. Everything in it is made useless on
the medium in three ways at once:

- rollback journal (``journal_mode=DELETE``), ``secure_delete=ON``, ``synchronous=EXTRA``: a
  deleted row is overwritten with zeros in the database file and the journal is gone (and the
  directory fsynced) when the commit returns — no WAL frames keep old rows;
- rows are found by ``HMAC(slot key, card handle)`` and sealed with AES-256-GCM, with keys
  that live only in a file in RAM (tmpfs: ``$RUNTIME_DIRECTORY``, ``/run`` or ``/dev/shm``),
  never on the medium. The card handle is an *unkeyed* hash of card issuer and serial that
  anyone holding the card's certificate can recompute; keyed, it names nothing without the RAM
  key. Copies that the file system or the SD card's wear levelling keep of an unlinked journal
  hold only ciphertext;
- the sealing key is replaced at every cast (the other uncast rows are re-sealed in the same
  transaction and the old key is dropped from RAM): whatever copy of the cast voter's row
  remains anywhere can no longer be opened, not even with the RAM key file read later.

A ballot is cast in the ballot outbox first and its check-in is removed right after (found by
the token message, ``HMAC(slot key, message)``); a crash between the two is repaired when the
outbox is opened again, before anything is sent. The polls closed (the ledger's retained
status says ``closed``): every check-in never cast is purged, the key files deleted, and the
store takes no new check-in until the booth restarts (then it learns the polls state again
on connecting and purges again; the roll grants nothing once the polls closed).

Trade-off (docs/threat-model.md): the RAM key survives a crash and restart of the booth
process but not a power cut or reboot. After one, the stored check-ins cannot be read and are
purged; a voter whose check-in the roll had already granted gets a *new* blinded request, which
the roll refuses as ``already_voted`` — that voter is sent to a poll worker.

A ballot is removed only when the ledger's held ack names it (``ballot_hash`` of the sealed
ballot); the broker's PUBACK means nothing here.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import resource
import secrets
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from election.ballot import BallotOpening, DeviceSigner, SealedBallot
from election.devices import DeviceStatement
from election.encoding import parse_json, sha256
from election.errors import FormatError
from election.manifest import Manifest
from infra.failpoints import failpoint
from infra.store import open_store
from protocol.messages import BallotSubmission

log = logging.getLogger("appliance.outbox")

OUTBOX_SCHEMA = """
CREATE TABLE outbox (
    ballot_hash BLOB PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('cast', 'spoiled')),
    payload_hash BLOB NOT NULL UNIQUE,
    payload BLOB NOT NULL,
    refused TEXT
) WITHOUT ROWID;
CREATE TABLE sealed (
    ballot_hash BLOB PRIMARY KEY
) WITHOUT ROWID;
CREATE TABLE tally (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    ballots_cast INTEGER NOT NULL,
    audited INTEGER NOT NULL
);
INSERT INTO tally VALUES (1, 0, 0)
"""
OUTBOX_SCHEMA_VERSION = 2
"""The record format 2 outbox (format 1 kept a device chain in a WAL store: refused on open)."""

CHECKIN_SCHEMA = """
CREATE TABLE checkins (
    slot BLOB PRIMARY KEY,
    tag BLOB NOT NULL UNIQUE,
    sealed BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    key_id BLOB NOT NULL
)
"""
CHECKIN_SCHEMA_VERSION = 1
CHECKIN_FILE = "checkins.db"

RUNTIME_DIR_ENV = "RUNTIME_DIRECTORY"
"""Set by systemd for ``RuntimeDirectory=`` (docs/operations.md: the booth unit's RAM directory)."""
RUN_DIR = Path("/run/polling-station-booth")
RAM_FILESYSTEMS = frozenset({"tmpfs", "ramfs"})
KEY_BYTES = 32
NONCE_BYTES = 12
DOMAIN = b"polling-station/booth-checkin/v1/"


class OutboxError(Exception):
    """The outbox was written by record format 1 software, or the check-in store has no place
    in RAM for its keys."""


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """One submission owed to the hub: ``payload`` is sent as it is, every time."""

    kind: str
    ballot_hash: bytes
    payload_hash: bytes
    payload: bytes


@dataclass(frozen=True, slots=True)
class StoredCheckin:
    message: bytes
    blinded: bytes
    inverse: bytes

    def __repr__(self) -> str:  # never print a check-in in a log line or a traceback
        return "StoredCheckin(…)"


def forbid_core_dumps() -> None:
    """A process holding check-ins and tokens in memory must never write them out in a core file
    (systemd-coredump honours a zero RLIMIT_CORE; the unit sets ``LimitCORE=0`` as well)."""
    with contextlib.suppress(OSError, ValueError):
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


# --- the RAM directory for the check-in keys -------------------------------------------------


def filesystem_of(path: Path) -> str | None:
    """The file-system type holding ``path`` (longest mount point in /proc/self/mountinfo)."""
    target, best, kind = str(path.resolve()), "", None
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        left, _, right = line.partition(" - ")
        fields = left.split()
        if len(fields) < 5 or not right:
            continue
        mount = fields[4].replace("\\040", " ")
        inside = target == mount or target.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best):
            best, kind = mount, right.split()[0]
    return kind


def _private_dir(path: Path) -> Path | None:
    """``path`` as a directory of ours, mode 0700, in RAM; None if it cannot be that."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = path.stat()
    except OSError:
        return None
    if info.st_uid != os.getuid() or info.st_mode & 0o077 or not os.access(path, os.W_OK):
        log.warning("%s is not a private directory of this user: not used for check-in keys", path)
        return None
    if filesystem_of(path) not in RAM_FILESYSTEMS:
        return None
    return path


def runtime_dir() -> Path:
    """Where the check-in keys live: ``$RUNTIME_DIRECTORY`` (systemd), ``/run/polling-station-booth``
    or ``/dev/shm/polling-station-booth-<uid>`` — the first that is a private directory in RAM."""
    configured = os.environ.get(RUNTIME_DIR_ENV)
    candidates = [Path(configured.split(":")[0])] if configured else []
    candidates += [RUN_DIR, Path(f"/dev/shm/polling-station-booth-{os.getuid()}")]
    for candidate in candidates:
        found = _private_dir(candidate)
        if found is not None:
            return found
    raise OutboxError(f"no private RAM directory for the check-in keys (tried {', '.join(map(str, candidates))})")


# --- the check-in store -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Keys:
    slot: bytes  # names rows (card handle) and tags them (token message): fixed for the day
    seal: bytes  # AES-256-GCM key of the rows: replaced at every cast

    @classmethod
    def fresh(cls, slot: bytes | None = None) -> _Keys:
        return cls(slot or secrets.token_bytes(KEY_BYTES), secrets.token_bytes(KEY_BYTES))

    @classmethod
    def parse(cls, data: bytes) -> _Keys | None:
        return cls(data[:KEY_BYTES], data[KEY_BYTES:]) if len(data) == 2 * KEY_BYTES else None

    @property
    def key_id(self) -> bytes:
        return hashlib.sha256(DOMAIN + b"key-id" + self.slot + self.seal).digest()[:16]

    def slot_of(self, handle: str) -> bytes:
        return hmac.new(self.slot, DOMAIN + b"slot" + handle.encode(), hashlib.sha256).digest()

    def tag_of(self, message: bytes) -> bytes:
        return hmac.new(self.slot, DOMAIN + b"message" + message, hashlib.sha256).digest()

    def seal_row(self, slot: bytes, checkin: StoredCheckin) -> bytes:
        parts = (checkin.message, checkin.blinded, checkin.inverse)
        plain = b"".join(len(part).to_bytes(4, "big") + part for part in parts)
        nonce = secrets.token_bytes(NONCE_BYTES)
        return nonce + AESGCM(self.seal).encrypt(nonce, plain, DOMAIN + slot)

    def open_row(self, slot: bytes, sealed: bytes) -> StoredCheckin | None:
        try:
            plain = AESGCM(self.seal).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], DOMAIN + slot)
        except (InvalidTag, ValueError):
            return None
        parts, at = [], 0
        for _ in range(3):
            size = int.from_bytes(plain[at : at + 4], "big")
            parts.append(plain[at + 4 : at + 4 + size])
            at += 4 + size
        return StoredCheckin(*parts) if at == len(plain) else None


class CheckinStore:
    """Uncast check-ins, keyed and sealed with keys held only in RAM (see the module docstring).

    Thread-safe: the booth's worker stores, looks up and spends; the MQTT thread purges when
    the polls close.
    """

    def __init__(self, path: Path, key_dir: Path | None = None) -> None:
        self.path = path
        key_dir = key_dir if key_dir is not None else runtime_dir()
        name = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
        self.key_file = key_dir / f"checkin-keys-{name}"
        self._next_file = key_dir / f"checkin-keys-{name}.next"
        self._lock = threading.Lock()
        self._db = open_store(path, CHECKIN_SCHEMA, CHECKIN_SCHEMA_VERSION, journal="delete", secure_delete=True,
                              synchronous="extra")  # fmt: skip
        self._keys: _Keys | None = None
        try:
            self._recover()
        except BaseException:
            self._db.close()
            raise

    # --- opening ------------------------------------------------------------------------------

    def _recover(self) -> None:
        row = self._db.execute("SELECT key_id FROM state").fetchone()
        current, following = self._read_keys(self.key_file), self._read_keys(self._next_file)
        if row is not None and current is not None and current.key_id == row[0]:
            self._keys = current
        elif row is not None and following is not None and following.key_id == row[0]:
            os.replace(self._next_file, self.key_file)  # a crash right after a rotation's commit
            self._keys = following
        else:
            keys = _Keys.fresh()
            self._write_keys(self.key_file, keys)
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                lost = self._db.execute("DELETE FROM checkins").rowcount
                self._db.execute("INSERT OR REPLACE INTO state VALUES (1, ?)", (keys.key_id,))
            self._keys = keys
            if lost:
                log.warning("%d uncast check-in(s) could not be read (their RAM keys are gone: the booth was "
                            "powered off or rebooted) and were purged; a voter whose check-in was granted is "
                            "refused as already voted and must see a poll worker", lost)  # fmt: skip
        with contextlib.suppress(FileNotFoundError):
            self._next_file.unlink()

    @staticmethod
    def _read_keys(path: Path) -> _Keys | None:
        try:
            return _Keys.parse(path.read_bytes())
        except OSError:
            return None

    @staticmethod
    def _write_keys(path: Path, keys: _Keys) -> None:
        temporary = path.with_name(path.name + ".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, keys.slot + keys.seal)
        finally:
            os.close(fd)
        os.replace(temporary, path)

    def _delete_key_files(self) -> None:
        for path in (self.key_file, self._next_file):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    # --- check-ins ----------------------------------------------------------------------------

    @property
    def polls_closed(self) -> bool:
        return self._keys is None

    def lookup(self, handle: str) -> StoredCheckin | None:
        with self._lock:
            keys = self._keys
            if keys is None:
                return None
            slot = keys.slot_of(handle)
            row = self._db.execute("SELECT sealed FROM checkins WHERE slot = ?", (slot,)).fetchone()
        return None if row is None else keys.open_row(slot, row[0])

    def store(self, handle: str, checkin: StoredCheckin) -> bool:
        """Keep ``checkin`` for ``handle`` durably; False (nothing written) once the polls closed."""
        with self._lock, self._db:
            keys = self._keys
            if keys is None:
                return False
            slot = keys.slot_of(handle)
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("INSERT OR REPLACE INTO checkins VALUES (?, ?, ?)",
                             (slot, keys.tag_of(checkin.message), keys.seal_row(slot, checkin)))  # fmt: skip
        return True

    def spend(self, message: bytes) -> bool:
        """The ballot with this token message is cast: remove its check-in, re-seal the others
        under a new key and drop the old one from RAM. False if no check-in had this message."""
        with self._lock:
            keys = self._keys
            if keys is None:
                return False
            fresh = _Keys.fresh(keys.slot)
            self._write_keys(self._next_file, fresh)
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                spent = self._db.execute("DELETE FROM checkins WHERE tag = ?", (keys.tag_of(message),)).rowcount
                if spent:
                    for slot, sealed in self._db.execute("SELECT slot, sealed FROM checkins").fetchall():
                        checkin = keys.open_row(slot, sealed)
                        if checkin is None:
                            self._db.execute("DELETE FROM checkins WHERE slot = ?", (slot,))
                        else:
                            self._db.execute("UPDATE checkins SET sealed = ? WHERE slot = ?",
                                             (fresh.seal_row(slot, checkin), slot))  # fmt: skip
                    self._db.execute("UPDATE state SET key_id = ?", (fresh.key_id,))
            if spent:
                os.replace(self._next_file, self.key_file)
                self._keys = fresh
            else:
                self._next_file.unlink()
        return bool(spent)

    def discard(self, handle: str) -> bool:
        """Drop the check-in of ``handle`` that the roll refused for good (already voted, not
        eligible, card refused, polls not open): it will never be granted, so it is not kept."""
        with self._lock, self._db:
            keys = self._keys
            if keys is None:
                return False
            self._db.execute("BEGIN IMMEDIATE")
            return self._db.execute("DELETE FROM checkins WHERE slot = ?", (keys.slot_of(handle),)).rowcount == 1

    def close_polls(self) -> int:
        """The polls closed: purge every check-in never cast, delete the keys, take no new one.
        Returns how many were purged (idempotent: 0 the second time)."""
        with self._lock:
            if self._keys is None:
                return 0
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                purged = self._db.execute("DELETE FROM checkins").rowcount
            self._keys = None
            self._delete_key_files()
        return purged

    def pending(self) -> int:
        with self._lock:
            return self._db.execute("SELECT count(*) FROM checkins").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._keys = None
            self._db.close()


# --- the ballot outbox ------------------------------------------------------------------------


def _refuse_format_1(path: Path) -> None:
    """An outbox of record format 1 (with its device chain) is refused, not converted: its ballots
    carry a device order and no format 2 ledger takes them. Provisioning a terminal for a new
    election moves the old outbox aside (appliance/provision.py), so only a terminal whose
    software was upgraded without re-provisioning meets this."""
    if not path.exists():
        return
    db = sqlite3.connect(path)
    try:
        legacy = db.execute("SELECT count(*) FROM sqlite_master WHERE name = 'device_chain'").fetchone()[0]
    finally:
        db.close()
    if legacy:
        raise OutboxError(
            f"{path} was written by record format 1 software: move it aside (and send what it holds with "
            "that software) and provision this terminal for the election (flash.sh)"
        )


class Outbox:
    """Thread-safe: the booth's worker adds and releases, the MQTT thread sends and acknowledges.

    ``checkins``: the check-in store's file (default ``checkins.db`` beside the outbox);
    ``key_dir``: its RAM directory (default :func:`runtime_dir`).
    """

    def __init__(self, path: Path, *, checkins: Path | None = None, key_dir: Path | None = None) -> None:
        forbid_core_dumps()
        _refuse_format_1(path)
        self.path = path
        self._lock = threading.Lock()
        self._held: dict[bytes, OutboxItem] = {}
        self._db = open_store(path, OUTBOX_SCHEMA, OUTBOX_SCHEMA_VERSION, journal="delete", secure_delete=True,
                              synchronous="extra")  # fmt: skip
        self.checkins = CheckinStore(checkins or path.with_name(CHECKIN_FILE), key_dir)
        for item in self.unacknowledged():  # a crash between casting and removing the check-in
            message = _token_message(item)
            if message is not None and self.checkins.spend(message):
                log.info("removed the check-in of a ballot cast before a crash")

    # --- ballots --------------------------------------------------------------------------

    def add(
        self, ballot: SealedBallot, opening: BallotOpening | None, signer: DeviceSigner, manifest: Manifest
    ) -> list[OutboxItem]:
        """Commit one sealed ballot — cast, or spoiled with its ``opening`` — with the device
        statement over this device's ballot set including it, in one durable transaction that
        also adds its hash to the set. Returns what may be sent now.

        A spoiled ballot is held (nothing to send) until the same voter's cast ballot is
        committed, which releases it: both go out in one burst and fall in the same ledger
        batch, so no order tells them apart (docs/design-record-v2.md §4). A session that ends
        without a cast releases it alone (:meth:`release`). Holding lives in RAM: after a crash
        the voter's session is gone and everything is sent.

        A cast ballot's check-in (found by its token message) is removed from the check-in store
        right after the commit — never before: a crash in between leaves a check-in whose ballot
        is cast, which the next open removes, rather than a voter with a token but no ballot.
        """
        kind = "cast" if opening is None else "spoiled"
        with self._lock:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                hashes = sorted([*(row[0] for row in self._db.execute("SELECT ballot_hash FROM sealed")),
                                 ballot.ballot_hash])  # fmt: skip
                statement = DeviceStatement.make(signer, ballot.base_hash, hashes)
                payload = BallotSubmission(ballot, opening, statement).encode(manifest)
                item = OutboxItem(kind, ballot.ballot_hash, sha256(payload), payload)
                self._rewrite_set(hashes)
                self._db.execute("INSERT INTO outbox VALUES (?, ?, ?, ?, NULL)",
                                 (item.ballot_hash, kind, item.payload_hash, payload))  # fmt: skip
                self._db.execute("UPDATE tally SET ballots_cast = ballots_cast + ?", (int(kind == "cast"),))
            if kind == "spoiled":  # held before the lock is let go: no resend may slip it out alone
                self._held[item.ballot_hash] = item
                return []
        if ballot.token is not None:
            failpoint("booth-before-checkin-spent")
            self.checkins.spend(ballot.token.message)
        return [*self.release(), item]

    def _rewrite_set(self, hashes: list[bytes]) -> None:
        """Write the whole set again, in hash order. Inserting one hash into the B-tree would put
        its cell's bytes beside the others' in insertion order (a page fills from its end down),
        so the file's layout would keep the casting order; emptied (secure_delete zeroes the old
        cells) and refilled in hash order, the layout follows the hashes alone."""
        self._db.execute("DELETE FROM sealed")
        self._db.executemany("INSERT INTO sealed VALUES (?)", ((h,) for h in hashes))

    def release(self) -> list[OutboxItem]:
        """The held spoiled ballots, which may be sent now (their voter cast, or left)."""
        with self._lock:
            released, self._held = list(self._held.values()), {}
        return released

    def unacknowledged(self) -> list[OutboxItem]:
        """Everything still owed to the hub and not held, in ballot-hash order (no casting order)."""
        with self._lock:
            rows = self._db.execute("SELECT kind, ballot_hash, payload_hash, payload FROM outbox").fetchall()
            held = set(self._held)
        return [OutboxItem(*row) for row in rows if row[1] not in held]

    def depth(self) -> int:
        with self._lock:
            return self._db.execute("SELECT count(*) FROM outbox").fetchone()[0]

    def ballots_cast(self) -> int:
        with self._lock:
            return self._db.execute("SELECT ballots_cast FROM tally").fetchone()[0]

    def count_cast_since_last(self) -> int:
        """Ballots cast since the previous call (durably counted): the audit log's ``ballots_cast``
        per interval, so that no audit entry stands for one ballot."""
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            cast, audited = self._db.execute("SELECT ballots_cast, audited FROM tally").fetchone()
            if cast != audited:
                self._db.execute("UPDATE tally SET audited = ballots_cast")
        return cast - audited

    def acknowledge(self, ballot_hash: bytes) -> bool:
        """The ledger holds this ballot: drop it (secure_delete zeroes its row). False if it was
        not (or no longer) here."""
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            cursor = self._db.execute("DELETE FROM outbox WHERE ballot_hash = ?", (ballot_hash,))
        return cursor.rowcount == 1

    def mark_refused(self, payload_hash: bytes, reason: str) -> bool:
        """Record the ledger's refusal; the ballot stays (an operator must look at it)."""
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            cursor = self._db.execute("UPDATE outbox SET refused = ? WHERE payload_hash = ?", (reason, payload_hash))
        return cursor.rowcount == 1

    # --- check-in requests (the check-in store) -------------------------------------------

    def stored_checkin(self, card_handle: str) -> StoredCheckin | None:
        return self.checkins.lookup(card_handle)

    def store_checkin(self, card_handle: str, checkin: StoredCheckin) -> None:
        """Durable before the request is sent; once the polls closed nothing is written (the roll
        grants no new check-in then anyway)."""
        if not self.checkins.store(card_handle, checkin):
            log.info("the polls are closed: a check-in request is not stored")

    def discard_checkin(self, card_handle: str) -> bool:
        """The roll refused this check-in for good: remove it now rather than at the close."""
        return self.checkins.discard(card_handle)

    def purge_checkins(self) -> int:
        """The polls closed: every check-in never cast is removed (CheckinStore.close_polls)."""
        return self.checkins.close_polls()

    def close(self) -> None:
        with self._lock:
            self._db.close()
        self.checkins.close()


def _token_message(item: OutboxItem) -> bytes | None:
    """The token message of one of our own cast ballots (None for a spoiled one)."""
    if item.kind != "cast":
        return None
    try:
        token = parse_json(item.payload)["ballot"]["token"]
        return bytes.fromhex(token["message"]) if isinstance(token, dict) else None
    except (FormatError, ValueError, KeyError, TypeError):
        return None
