"""The municipal roll: one roll per municipality at the central office, on PostgreSQL, for its
early-voting and common polling places (issue 17).

Stations of kind ``early`` or ``common`` keep no roll of their own: their roll service relays
each card-proven check-in over the central broker (protocol/municipal.py) and this service
judges it exactly as a station roll does — the same :class:`infra.rollcore.RollCore` (fresh
challenge per station and terminal, JPKI chain, fresh CRL, validity, card signature over
``checkin_binding(station, terminal, challenge, blinded)``, voter key derived here with the
municipality's roll salt) — then marks the voter **atomically** and blind-signs with the
municipality's token key, so every token of the municipality verifies against one key.

The atomic mark: ``UPDATE … SET blinded = %s WHERE … AND blinded IS NULL RETURNING``. Under
PostgreSQL's READ COMMITTED, a second writer of the same row waits for the first to commit and
re-checks the WHERE clause against the committed row, so of two stations checking in the same
card at the same instant exactly one update returns a row; the loser asks the core again with
what won (its own blinded value: the identical grant of a retry; another: ``already_voted``).

What is stored, per municipality (``mr_voters`` is partitioned by municipality — one
partition each, the unit a national deployment spreads over servers): the voter key and the
blinded value of its check-in, or NULL. No station, terminal or time is stored with a mark.
Residual (documented, not hidden): PostgreSQL's MVCC writes each mark as a new row version and
its WAL records the order of commits; the municipal roll never sees a ballot (the ledger and
the central store are separate services and databases), and the WAL must be kept no longer
than the election's recovery needs. A municipality's directory holds ``token.key`` (sealed with
a passphrase if one is given), ``token.pem``, ``salt.key`` and ``jpki/anchors``, ``jpki/crls``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import shutil
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from election.encoding import parse_json
from election.errors import FormatError
from election.ids import check_station_id
from gateway.errors import GatewayError
from infra.files import private_pem, write_private
from infra.mqtt import BrokerSite, connect, make_client
from infra.pki import PkiError, Role, StationCA, certificate_pem
from infra.rollcore import CHALLENGE_TTL, MAX_OPEN_CHALLENGES, Challenges, JpkiDirectory, RollCore, RollDecision
from protocol.errors import CheckinReason, Refusal
from protocol.messages import (
    CHALLENGE_BYTES,
    CheckinChallengeRequest,
    CheckinRefused,
    CheckinReply,
    CheckinRequest,
    decode_checkin_message,
)
from protocol.municipal import (
    MUNICIPAL_KINDS,
    MUNICIPAL_ROLL_NAME,
    MunicipalGrant,
    RollMarks,
    municipal_roll_identity,
    parse_checkin_topic,
    relay_identity,
    reply_topic,
    shared_checkin_subscription,
    station_of_identity,
)

log = logging.getLogger("gateway.municipal_roll")
TOKEN_KEY_BITS = 3072
POLLS_STATES = ("pending", "open", "closed")
POLLS_COMMANDS = {"open": ("pending", "open"), "close": ("open", "closed")}
"""command → (the state it leaves, the state it makes): pending → open → closed, never back."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS mr_municipalities (
    municipality text PRIMARY KEY,
    modulus_length integer NOT NULL,
    polls text NOT NULL DEFAULT 'pending' CHECK (polls IN ('pending', 'open', 'closed'))
);
CREATE TABLE IF NOT EXISTS mr_stations (
    station_id text PRIMARY KEY,
    municipality text NOT NULL REFERENCES mr_municipalities,
    kind text NOT NULL CHECK (kind IN ('early', 'common'))
);
CREATE TABLE IF NOT EXISTS mr_day_stations (
    station_id text PRIMARY KEY,
    municipality text NOT NULL REFERENCES mr_municipalities
);
CREATE TABLE IF NOT EXISTS mr_station_marks (
    station_id text PRIMARY KEY,
    municipality text NOT NULL,
    digest bytea NOT NULL,
    marked integer NOT NULL,
    voted_twice integer NOT NULL,
    not_registered integer NOT NULL
);
CREATE TABLE IF NOT EXISTS mr_challenges (
    challenge bytea PRIMARY KEY,
    holder text NOT NULL,
    expires timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS mr_challenges_holder ON mr_challenges (holder, expires);
CREATE TABLE IF NOT EXISTS mr_voters (
    municipality text NOT NULL,
    voter_key bytea NOT NULL CHECK (length(voter_key) = 32),
    blinded bytea,
    PRIMARY KEY (municipality, voter_key)
) PARTITION BY LIST (municipality);
"""
SCHEMA_LOCK = 0x6D756E69  # pg_advisory_xact_lock key: one schema writer at a time


def _partition(municipality: str) -> str:
    return "mr_voters_" + hashlib.sha256(municipality.encode()).hexdigest()[:20]


class MunicipalStore:
    """The register and the marks on PostgreSQL. One connection; give each thread its own store."""

    def __init__(self, url: str) -> None:
        import psycopg

        self.url = url
        try:
            self._db: Any = psycopg.connect(url, autocommit=True)
        except psycopg.Error as error:
            raise GatewayError(f"cannot reach the municipal roll's database: {error}") from error
        with self._db.transaction():
            self._db.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            self._db.execute(SCHEMA)
        self._lengths: dict[str, int] = {}

    # --- configuration (before the polls open) -------------------------------------------

    def add_municipality(self, municipality: str, modulus_length: int) -> None:
        check_station_id(municipality, "municipality")
        with self._db.transaction():
            self._db.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            self._db.execute(
                "INSERT INTO mr_municipalities (municipality, modulus_length) VALUES (%s, %s) "
                "ON CONFLICT (municipality) DO NOTHING",
                (municipality, modulus_length),
            )
            literal = municipality.replace("'", "''")  # a checked id: letters, digits, _ . -
            self._db.execute(
                f"CREATE TABLE IF NOT EXISTS {_partition(municipality)} PARTITION OF mr_voters "
                f"FOR VALUES IN ('{literal}')"
            )

    def add_station(self, station_id: str, municipality: str, kind: str) -> None:
        check_station_id(station_id)
        if kind not in MUNICIPAL_KINDS:
            raise GatewayError(f"a station on the municipal roll is early or common, not {kind!r}")
        day = self._db.execute("SELECT 1 FROM mr_day_stations WHERE station_id = %s", (station_id,)).fetchone()
        if day is not None:
            raise GatewayError(f"station {station_id} is an election-day station (its own roll), not {kind}")
        self._db.execute(
            "INSERT INTO mr_stations VALUES (%s, %s, %s) ON CONFLICT (station_id) "
            "DO UPDATE SET municipality = excluded.municipality, kind = excluded.kind",
            (station_id, municipality, kind),
        )

    def add_day_station(self, station_id: str, municipality: str) -> None:
        """An election-day station of ``municipality`` (its own roll; early marks in, its marks
        back at close). Known so that reconciliation lists it before its marks come back."""
        check_station_id(station_id)
        self.modulus_length(municipality)  # refuses an unknown municipality
        with self._db.transaction():
            if self.station(station_id) is not None:
                raise GatewayError(f"station {station_id} checks in at the municipal roll: it is not election-day")
            row = self._db.execute(
                "INSERT INTO mr_day_stations VALUES (%s, %s) ON CONFLICT (station_id) DO UPDATE "
                "SET station_id = excluded.station_id RETURNING municipality",
                (station_id, municipality),
            ).fetchone()
            if row[0] != municipality:
                raise GatewayError(f"station {station_id} is an election-day station of {row[0]}, not {municipality}")

    def stations(self) -> list[tuple[str, str, str]]:
        """(station, municipality, kind) of every station the municipal roll knows, by station id;
        kind ``early``, ``common`` or ``election_day``."""
        query = ("SELECT station_id, municipality, kind FROM mr_stations UNION ALL "
                 "SELECT station_id, municipality, 'election_day' FROM mr_day_stations ORDER BY 1")  # fmt: skip
        return [(row[0], row[1], row[2]) for row in self._db.execute(query).fetchall()]

    def municipalities(self) -> list[str]:
        query = "SELECT municipality FROM mr_municipalities ORDER BY municipality"
        return [row[0] for row in self._db.execute(query).fetchall()]

    def tallies(self, municipality: str) -> tuple[int, int, int]:
        """(eligible, checked in at early/common places, marked by election-day stations' marks)."""
        elsewhere = b"\xff" * self.modulus_length(municipality)
        row = self._db.execute(
            "SELECT count(*), count(blinded) FILTER (WHERE blinded <> %s), count(*) FILTER (WHERE blinded = %s) "
            "FROM mr_voters WHERE municipality = %s",
            (elsewhere, elsewhere, municipality),
        ).fetchone()
        return row[0], row[1], row[2]

    def change_polls(self, municipality: str, command: str) -> str:
        """``open`` (pending → open) or ``close`` (open → closed), never back; returns the new state."""
        if command not in POLLS_COMMANDS:
            raise GatewayError(f"polls command {command!r} is not open or close")
        before, after = POLLS_COMMANDS[command]
        row = self._db.execute(
            "UPDATE mr_municipalities SET polls = %s WHERE municipality = %s AND polls = %s RETURNING 1",
            (after, municipality, before),
        ).fetchone()
        if row is None:
            state = self.polls(municipality)
            done = {"open": "opened", "close": "closed"}[command]
            raise GatewayError(f"the polls of {municipality} are {state}: they cannot be {done}"
                               + (" again" if state == after else ""))  # fmt: skip
        return after

    def station(self, station_id: str) -> tuple[str, str] | None:
        """(municipality, kind) of a station on the municipal roll, None if it is not."""
        row = self._db.execute(
            "SELECT municipality, kind FROM mr_stations WHERE station_id = %s", (station_id,)
        ).fetchone()
        return (row[0], row[1]) if row else None

    def import_voters(
        self, municipality: str, keys: Iterable[bytes], progress: Callable[[str, int, int], None] | None = None
    ) -> int:
        """Add voter keys (before the polls open), in one transaction; returns how many were new.
        ``progress(stage, done, total)`` is told as rows are copied (a register of millions)."""
        if self.polls(municipality) != "pending":
            raise GatewayError("voters can only be imported before the polls open")
        rows = [(municipality, key) for key in sorted(set(keys))]
        if any(len(key) != 32 for _, key in rows):
            raise GatewayError("a voter key is 32 bytes")
        before = self.eligible(municipality)
        with self._db.transaction(), self._db.cursor() as cursor:
            cursor.execute("CREATE TEMP TABLE mr_import (municipality text, voter_key bytea) ON COMMIT DROP")
            with cursor.copy("COPY mr_import FROM STDIN") as copy:
                for done, row in enumerate(rows, 1):
                    copy.write_row(row)
                    if progress is not None and (done % 10_000 == 0 or done == len(rows)):
                        progress("copying voter keys", done, len(rows))
            cursor.execute(
                "INSERT INTO mr_voters (municipality, voter_key) SELECT municipality, voter_key FROM mr_import "
                "ON CONFLICT DO NOTHING"
            )
        return self.eligible(municipality) - before

    # --- the check-in path ---------------------------------------------------------------

    def modulus_length(self, municipality: str) -> int:
        if municipality not in self._lengths:
            row = self._db.execute(
                "SELECT modulus_length FROM mr_municipalities WHERE municipality = %s", (municipality,)
            ).fetchone()
            if row is None:
                raise GatewayError(f"municipality {municipality} is not on the municipal roll")
            self._lengths[municipality] = row[0]
        return self._lengths[municipality]

    def lookup(self, municipality: str, voter_key: bytes) -> bytes | None:
        """None: not on the roll; zeros: not checked in; else the blinded value it was checked in with."""
        row = self._db.execute(
            "SELECT blinded FROM mr_voters WHERE municipality = %s AND voter_key = %s", (municipality, voter_key)
        ).fetchone()
        if row is None:
            return None
        return bytes(row[0]) if row[0] is not None else bytes(self.modulus_length(municipality))

    def mark(self, municipality: str, voter_key: bytes, blinded: bytes) -> bool:
        """Mark the voter with ``blinded`` if nobody has yet (one statement, one commit): True if we did."""
        if len(blinded) != self.modulus_length(municipality) or not any(blinded):
            raise GatewayError("a blinded token has the wrong size for this municipality")
        row = self._db.execute(
            "UPDATE mr_voters SET blinded = %s WHERE municipality = %s AND voter_key = %s AND blinded IS NULL "
            "RETURNING 1",
            (blinded, municipality, voter_key),
        ).fetchone()
        return row is not None

    def polls(self, municipality: str) -> str:
        row = self._db.execute(
            "SELECT polls FROM mr_municipalities WHERE municipality = %s", (municipality,)
        ).fetchone()
        if row is None:
            raise GatewayError(f"municipality {municipality} is not on the municipal roll")
        return row[0]

    def set_polls(self, municipality: str, state: str) -> None:
        if state not in POLLS_STATES:
            raise GatewayError(f"polls state {state!r} is not one of {POLLS_STATES}")
        self._db.execute("UPDATE mr_municipalities SET polls = %s WHERE municipality = %s", (state, municipality))

    def eligible(self, municipality: str) -> int:
        query = "SELECT count(*) FROM mr_voters WHERE municipality = %s"
        return self._db.execute(query, (municipality,)).fetchone()[0]

    def checked_in(self, municipality: str) -> int:
        query = "SELECT count(*) FROM mr_voters WHERE municipality = %s AND blinded IS NOT NULL"
        return self._db.execute(query, (municipality,)).fetchone()[0]

    def mark_voted_elsewhere(self, municipality: str, keys: Iterable[bytes]) -> tuple[int, list[bytes], int]:
        """Marks an election-day station sent back: (newly marked, already marked = voted twice, not
        on the register). One transaction; a mark of a station carries no blinded value (all 0xff)."""
        length = self.modulus_length(municipality)
        keys = sorted(set(keys))
        with self._db.transaction(), self._db.cursor() as cursor:
            marked = set()
            for key in keys:
                row = cursor.execute(
                    "UPDATE mr_voters SET blinded = %s WHERE municipality = %s AND voter_key = %s "
                    "AND blinded IS NULL RETURNING voter_key",
                    (b"\xff" * length, municipality, key),
                ).fetchone()
                if row is not None:
                    marked.add(key)
            rest = [key for key in keys if key not in marked]
            known = {
                bytes(row[0])
                for row in cursor.execute(
                    "SELECT voter_key FROM mr_voters WHERE municipality = %s AND voter_key = ANY(%s)",
                    (municipality, rest),
                ).fetchall()
            }
        twice = [key for key in rest if key in known]
        return len(marked), twice, len(rest) - len(twice)

    def all_station_marks(self) -> dict[str, tuple[int, int, int]]:
        """station → (marked, voted twice, not registered) of every election-day station's marks."""
        query = "SELECT station_id, marked, voted_twice, not_registered FROM mr_station_marks"
        return {row[0]: (row[1], row[2], row[3]) for row in self._db.execute(query).fetchall()}

    def station_marks(self, station_id: str) -> tuple[bytes, int, int, int] | None:
        """(digest, marked, voted twice, not registered) of the station's imported marks, if any."""
        row = self._db.execute(
            "SELECT digest, marked, voted_twice, not_registered FROM mr_station_marks WHERE station_id = %s",
            (station_id,),
        ).fetchone()
        return (bytes(row[0]), row[1], row[2], row[3]) if row else None

    def record_station_marks(
        self, station_id: str, municipality: str, digest: bytes, counts: tuple[int, int, int]
    ) -> None:
        self._db.execute(
            "INSERT INTO mr_station_marks VALUES (%s, %s, %s, %s, %s, %s)", (station_id, municipality, digest, *counts)
        )

    def marked_keys(self, municipality: str) -> list[bytes]:
        """The voter keys checked in so far, sorted (the early marks; no order, no station)."""
        query = "SELECT voter_key FROM mr_voters WHERE municipality = %s AND blinded IS NOT NULL ORDER BY voter_key"
        return [bytes(row[0]) for row in self._db.execute(query, (municipality,)).fetchall()]

    def close(self) -> None:
        self._db.close()


class SharedChallenges(Challenges):
    """Challenges in PostgreSQL, so that any municipal-roll process redeems what another issued
    (each still once: ``DELETE … RETURNING``). They name a station's terminal and expire; no
    voter is ever written next to one, and a redeemed challenge is deleted."""

    def __init__(self, url: str, ttl: float = CHALLENGE_TTL) -> None:
        super().__init__(ttl)
        self._store = MunicipalStore(url)
        self._db = self._store._db
        self._issued = 0

    def issue(self, terminal: str) -> bytes:
        challenge = secrets.token_bytes(CHALLENGE_BYTES)
        with self._lock, self._db.transaction():
            self._db.execute(
                "INSERT INTO mr_challenges VALUES (%s, %s, now() + make_interval(secs => %s))",
                (challenge, terminal, self.ttl),
            )
            self._db.execute(
                "DELETE FROM mr_challenges WHERE challenge IN (SELECT challenge FROM mr_challenges "
                "WHERE holder = %s ORDER BY expires DESC OFFSET %s)",
                (terminal, MAX_OPEN_CHALLENGES),
            )
            self._issued += 1
            if self._issued % 256 == 0:
                self._db.execute("DELETE FROM mr_challenges WHERE expires <= now()")
        return challenge

    def redeem(self, terminal: str, challenge: bytes) -> str | None:
        with self._lock:
            row = self._db.execute(
                "DELETE FROM mr_challenges WHERE challenge = %s RETURNING holder, expires > now()", (challenge,)
            ).fetchone()
        if row is None:
            return "this challenge is unknown or was already used"
        if row[0] != terminal:
            return "this challenge was issued to another terminal"
        if not row[1]:
            return "this challenge has expired"
        return None

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT count(*) FROM mr_challenges WHERE expires > now()").fetchone()[0]

    def close(self) -> None:
        self._store.close()


# --- a municipality's keys -----------------------------------------------------------------


@dataclass(frozen=True)
class Municipality:
    """A municipality's directory: its token key, its roll salt and the JPKI trust it uses."""

    directory: Path
    municipality: str

    @property
    def token_key_file(self) -> Path:
        return self.directory / "token.key"

    @property
    def token_public_file(self) -> Path:
        return self.directory / "token.pem"

    @property
    def jpki_dir(self) -> Path:
        return self.directory / "jpki"

    @property
    def marks_public_file(self) -> Path:
        """The Ed25519 key election-day stations check the early marks with."""
        return self.directory / "marks.pem"

    def marks_key(self) -> ed25519.Ed25519PrivateKey:
        key = serialization.load_pem_private_key((self.directory / "marks.key").read_bytes(), None)
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise GatewayError(f"{self.directory}/marks.key is not an Ed25519 key")
        return key

    def token_public_key(self) -> rsa.RSAPublicKey:
        key = serialization.load_pem_public_key(self.token_public_file.read_bytes())
        if not isinstance(key, rsa.RSAPublicKey):
            raise GatewayError(f"{self.token_public_file} is not an RSA public key")
        return key

    def token_private_key(self, passphrase: bytes | None = None) -> rsa.RSAPrivateKey:
        try:
            key = serialization.load_pem_private_key(self.token_key_file.read_bytes(), passphrase)
        except (TypeError, ValueError) as error:
            raise GatewayError(f"{self.token_key_file}: cannot open the token key ({error})") from error
        if not isinstance(key, rsa.RSAPrivateKey):
            raise GatewayError(f"{self.token_key_file} is not an RSA private key")
        return key

    def roll_salt(self) -> bytes:
        return bytes.fromhex((self.directory / "salt.key").read_text().strip())

    def core(self, passphrase: bytes | None = None, challenges: Challenges | None = None) -> RollCore:
        """The decision for this municipality (``station_id`` is given per check-in).
        ``challenges``: shared ones (:class:`SharedChallenges`) when several processes serve."""
        return RollCore(
            self.token_private_key(passphrase),
            station_id="",
            roll_salt=self.roll_salt(),
            verifier=JpkiDirectory(self.jpki_dir),
            challenges=challenges,
        )


def create_municipality(
    directory: Path,
    municipality: str,
    *,
    jpki_anchors: list[Path],
    jpki_crls: list[Path],
    roll_salt: bytes | None = None,
    passphrase: bytes | None = None,
    key_bits: int = TOKEN_KEY_BITS,
) -> Municipality:
    """A municipality's token key, roll salt and JPKI trust in ``directory`` (made once)."""
    check_station_id(municipality, "municipality")
    directory = Path(directory)
    if (directory / "token.key").exists():
        raise GatewayError(f"{directory} already holds municipality {municipality}'s keys")
    key = rsa.generate_private_key(public_exponent=65537, key_size=key_bits)
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    )
    sealed = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    write_private(directory / "token.key", sealed)
    write_private(directory / "salt.key", (roll_salt or secrets.token_bytes(32)).hex().encode())
    (directory / "token.pem").write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    marks = ed25519.Ed25519PrivateKey.generate()
    write_private(directory / "marks.key", private_pem(marks))
    (directory / "marks.pem").write_bytes(
        marks.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    for sub, files in (("anchors", jpki_anchors), ("crls", jpki_crls)):
        (directory / "jpki" / sub).mkdir(parents=True, exist_ok=True)
        for path in files:
            shutil.copyfile(path, directory / "jpki" / sub / Path(path).name)
    return Municipality(directory, municipality)


def export_early_marks(municipality: Municipality, store: MunicipalStore, base_hash: bytes) -> bytes:
    """Everyone checked in so far in ``municipality``, signed with its marks key, for the
    election-day stations to import before they open (station_hub/municipal_marks.py)."""
    keys = tuple(store.marked_keys(municipality.municipality))
    return RollMarks(municipality.municipality, MUNICIPAL_ROLL_NAME, base_hash, keys).signed(municipality.marks_key())


@dataclass(frozen=True)
class MarksImport:
    station_id: str
    marked: int
    """Voters of the station's marks now marked on the municipal roll."""
    voted_twice: int
    """Voters the municipal roll had already marked (early, or at another station): to reconcile."""
    not_registered: int


def import_station_marks(
    central_dir: Path, store: MunicipalStore, municipality: str, station_id: str, payload: bytes, base_hash: bytes
) -> MarksImport:
    """An election-day station's marks after close, checked against its central-link certificate."""
    if store.station(station_id) is not None:
        raise GatewayError(f"station {station_id} checks in at the municipal roll: it has no marks of its own")
    path = Path(central_dir) / "certs" / f"{station_id}.pem"
    try:
        key = x509.load_pem_x509_certificate(path.read_bytes()).public_key()
    except (OSError, ValueError) as error:
        raise GatewayError(f"station {station_id} is not linked to the centre ({error})") from error
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise GatewayError(f"station {station_id}: its link certificate carries no Ed25519 key")
    try:
        marks = RollMarks.verify(payload, key, municipality=municipality, origin=station_id, base_hash=base_hash)
    except FormatError as error:
        raise GatewayError(f"station {station_id}: {error}") from error
    digest = hashlib.sha256(payload).digest()
    earlier = store.station_marks(station_id)
    if earlier is not None:  # once per station: the same document again is a no-op
        if earlier[0] != digest:
            raise GatewayError(f"station {station_id} already sent other marks: refused (reconcile by hand)")
        return MarksImport(station_id, *earlier[1:])
    store.add_day_station(station_id, municipality)
    marked, twice, unknown = store.mark_voted_elsewhere(municipality, marks.voter_keys)
    if twice:
        log.warning("station %s: %d voters were already marked on the municipal roll", station_id, len(twice))
    store.record_station_marks(station_id, municipality, digest, (marked, len(twice), unknown))
    return MarksImport(station_id, marked, len(twice), unknown)


def grant_relay_identity(central_dir: Path, station_id: str, csr_pem: bytes) -> bytes:
    """Certify a station roll's own key for the central broker (CN ``<station>.roll``, role roll).
    The station makes the key and sends the request; the centre never sees the private key."""
    try:
        request = x509.load_pem_x509_csr(csr_pem)
    except ValueError as error:
        raise GatewayError(f"station {station_id}: not a certificate signing request") from error
    names = [str(n.value) for n in request.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)]
    if names != [relay_identity(station_id)]:
        raise GatewayError(f"station {station_id}: the roll's request must name {relay_identity(station_id)}")
    try:
        return certificate_pem(StationCA.load(Path(central_dir) / "ca").issue_for_csr(csr_pem, Role.ROLL))
    except PkiError as error:
        raise GatewayError(f"station {station_id}: {error}") from error


def grant_municipal_link(central_dir: Path, csr_pem: bytes, municipality: str, kind: str) -> MunicipalGrant:
    """``gateway municipal-roll add-station``: make the station named by the request (its CN is
    ``<station>.roll``) an ``early`` or ``common`` polling place of ``municipality`` and answer
    with the grant it installs (``station-hub municipal-link``). A station already registered
    at the centre is refused unless it is already on the municipal roll (a renewed grant): its
    registration carried its own token key, and the centre would refuse the municipality's."""
    from gateway.central import Central

    central = Central.open(central_dir)
    config = MunicipalConfig.read(config_path(central.directory))
    chosen = config.municipality(municipality)
    if kind not in MUNICIPAL_KINDS:
        raise GatewayError(f"a polling place on the municipal roll is early or common, not {kind!r}")
    try:
        request = x509.load_pem_x509_csr(csr_pem)
    except ValueError as error:
        raise GatewayError("not a certificate signing request (`station-hub municipal-request` writes one)") from error
    names = [str(n.value) for n in request.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)]
    station_id = station_of_identity(names[0]) if len(names) == 1 else None
    if station_id is None:
        raise GatewayError(f"the request names {names}, not a station roll (<station>.roll)")
    if not request.is_signature_valid:
        raise GatewayError(f"station {station_id}: the request's signature does not verify")
    store = MunicipalStore(config.database)
    try:
        on_roll = store.station(station_id)
        if central.cert_file(station_id).exists() and on_roll is None:
            raise GatewayError(f"station {station_id} is already registered at the centre with its own token key: "
                               "it must join the municipal roll before `gateway register-station`")  # fmt: skip
        store.add_station(station_id, municipality, kind)  # refuses an election-day station
        certificate = grant_relay_identity(central.directory, station_id, csr_pem)
    finally:
        store.close()
    return MunicipalGrant(station_id, municipality, kind, central.host, central.port, central.ca_file.read_bytes(),
                          certificate, chosen.token_public_file.read_bytes())  # fmt: skip


# --- the decision with the store -------------------------------------------------------------


def _refused(reason: CheckinReason, detail: str) -> CheckinRefused:
    return CheckinRefused(reason, detail)


class MunicipalRoll:
    """Check-ins of many stations against the municipal roll (one store connection: one thread)."""

    def __init__(self, store: MunicipalStore, cores: dict[str, RollCore]) -> None:
        self.store = store
        self.cores = cores

    def _station(self, station: str) -> str | CheckinRefused:
        entry = self.store.station(station)
        if entry is None or entry[0] not in self.cores:
            return _refused(CheckinReason.NOT_A_TERMINAL,
                            f"station {station} is not an early-voting or common polling place here")  # fmt: skip
        return entry[0]

    def handle(self, station: str, terminal: str, payload: bytes) -> CheckinReply:
        """A relayed check-in message (either round), strictly decoded, judged to the end."""
        municipality = self._station(station)
        if isinstance(municipality, CheckinRefused):
            return municipality
        try:
            message = decode_checkin_message(payload, self.store.modulus_length(municipality))
        except Refusal as error:
            return _refused(CheckinReason.MALFORMED, str(error))
        if isinstance(message, CheckinChallengeRequest):
            return self.cores[municipality].challenge(terminal, station=station)
        return self.check_in(station, terminal, message, municipality)

    def check_in(
        self, station: str, terminal: str, request: CheckinRequest, municipality: str | None = None
    ) -> CheckinReply:
        if municipality is None:
            found = self._station(station)
            if isinstance(found, CheckinRefused):
                return found
            municipality = found
        core = self.cores[municipality]
        proven = core.prove(terminal, request, station=station)
        if isinstance(proven, RollDecision):
            return proven.reply
        polls = self.store.polls(municipality)
        decision = core.judge(proven, request, polls, self.store.lookup(municipality, proven))
        if decision.mark and not self.store.mark(municipality, proven, request.blinded):
            # Another check-in of this card committed first: judge again with what it stored.
            decision = core.judge(proven, request, polls, self.store.lookup(municipality, proven))
            if decision.mark:
                raise GatewayError("the municipal roll lost a mark and found the voter unmarked")
        return decision.reply


# --- the service on the central broker ------------------------------------------------------


class MunicipalRollService:
    """Answers relayed check-ins on the central broker (identity ``municipal-roll-<n>``: run one
    process per core, each with its own identity; they share the check-ins and the challenges).

    ``workers`` threads judge check-ins, each with its own PostgreSQL connection (RSA signing
    and the JPKI checks run in parallel; the atomic mark serialises only same-voter races).
    """

    def __init__(
        self,
        site: BrokerSite,
        database_url: str,
        municipalities: list[Municipality],
        *,
        workers: int = 2,
        passphrases: dict[str, bytes] | None = None,
        identity: str = municipal_roll_identity(1),
    ) -> None:
        self.site = site
        self.database_url = database_url
        passphrases = passphrases or {}
        # Challenges in PostgreSQL: any process of the municipal roll redeems what another issued.
        self.challenges = SharedChallenges(database_url)
        self.cores = {m.municipality: m.core(passphrases.get(m.municipality), self.challenges) for m in municipalities}
        setup = MunicipalStore(database_url)
        try:
            for m in municipalities:
                setup.add_municipality(m.municipality, self.cores[m.municipality].modulus_length)
        finally:
            setup.close()
        self._local = threading.local()
        self._stores: list[MunicipalStore] = []
        self._stores_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="municipal-roll")
        self._stop = threading.Event()
        self.connected = threading.Event()
        self.answered = 0
        self.client = make_client(site, identity)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *a: self.connected.clear()
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.identity = identity

    def _roll(self) -> MunicipalRoll:
        roll = getattr(self._local, "roll", None)
        if roll is None:
            store = MunicipalStore(self.database_url)
            with self._stores_lock:
                self._stores.append(store)
            roll = self._local.roll = MunicipalRoll(store, self.cores)
        return roll

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            log.error("the central broker refused the municipal roll: %s", reason)
            return
        client.subscribe(shared_checkin_subscription(), qos=1)  # several processes split the load

    def _on_subscribe(self, *args: Any) -> None:
        log.info("%s serving check-ins of %s on the central broker", self.identity, ", ".join(sorted(self.cores)))
        self.connected.set()

    def _on_message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self._pool.submit(self._handle, message)

    def _handle(self, message: mqtt.MQTTMessage) -> None:
        try:
            where = parse_checkin_topic(message.topic)
            if where is None:
                log.warning("ignored a message on %s (not a station roll's check-in topic)", message.topic)
                return
            station, terminal = where
            try:
                reply = self._roll().handle(station, terminal, bytes(message.payload))
            except Exception:  # one message never stops the roll; nobody is marked unless mark() returned
                log.exception("internal error judging a relayed check-in; refused it")
                reply = _refused(CheckinReason.INTERNAL_ERROR, "the municipal roll could not judge this check-in")
            if isinstance(reply, CheckinRefused):
                log.info("check-in refused for %s: %s", station, reply.reason.value)  # never the card or key
            properties = Properties(PacketTypes.PUBLISH)
            correlation = getattr(message.properties, "CorrelationData", None)
            if correlation:
                properties.CorrelationData = correlation
            # Only the sending station's reply topic (a forged response topic cannot redirect it).
            self.client.publish(reply_topic(station), reply.encode(), qos=1, properties=properties)
            self.answered += 1
        finally:
            self.client.ack(message.mid, message.qos)

    def start(self) -> MunicipalRollService:
        connect(self.client, self.site, session_expiry=0)
        return self

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        self._pool.shutdown(wait=True)
        self.challenges.close()
        with self._stores_lock:
            for store in self._stores:
                store.close()
            self._stores.clear()

    def run(self) -> None:
        self.start()
        try:
            self._stop.wait()
        finally:
            self.close()


MUNICIPAL_DIR = "municipal"
"""The municipal roll's folder inside the central office's directory: ``config.json`` and one
folder per municipality (its keys, salt and JPKI trust)."""
CONFIG_VERSION = 1
PASSPHRASE_ENV = "MUNICIPAL_TOKEN_PASSPHRASE"
"""Seals the municipalities' token keys (as ``STATION_ROLL_PASSPHRASE`` seals a station's)."""
MAX_MUNICIPALITIES = 2000
"""Japan has 1,741 municipalities (plus Tokyo's 23 wards); one process may serve them all."""


def config_path(central_dir: Path) -> Path:
    return Path(central_dir) / MUNICIPAL_DIR / "config.json"


@dataclass(frozen=True)
class MunicipalConfig:
    """``{"version": 1, "database": URL, "municipalities": [directory, …]}``: the PostgreSQL
    server of the municipal roll and the municipalities it serves (a directory's name is its
    municipality; a relative directory is relative to the file's folder)."""

    path: Path
    database: str
    directories: tuple[Path, ...]

    @classmethod
    def read(cls, path: Path) -> MunicipalConfig:
        path = Path(path)
        try:
            data = parse_json(path.read_bytes(), max_size=1_000_000)
        except OSError as error:
            raise GatewayError(f"{path}: {error.strerror} (run `gateway municipal-roll init` first)") from error
        except FormatError as error:
            raise GatewayError(f"{path}: {error}") from error
        if not isinstance(data, dict) or set(data) - {"version"} != {"database", "municipalities"}:
            raise GatewayError(f"{path}: expected database and municipalities")
        database, directories = data["database"], data["municipalities"]
        if not (isinstance(database, str) and database.startswith(("postgresql://", "postgres://"))):
            raise GatewayError(f"{path}: database must be a PostgreSQL URL (postgresql://…)")
        if not (isinstance(directories, list) and len(directories) <= MAX_MUNICIPALITIES
                and all(isinstance(d, str) and d for d in directories)):  # fmt: skip
            raise GatewayError(f"{path}: municipalities must be a list of directories")
        resolved = tuple(path.parent / d for d in directories)
        for directory in resolved:
            try:
                check_station_id(directory.name, "municipality")
            except FormatError as error:
                raise GatewayError(f"{path}: {error}") from error
        return cls(path, database, resolved)

    def municipalities(self) -> list[Municipality]:
        return [Municipality(directory, directory.name) for directory in self.directories]

    def municipality(self, name: str) -> Municipality:
        for municipality in self.municipalities():
            if municipality.municipality == name:
                return municipality
        known = ", ".join(m.municipality for m in self.municipalities()) or "none yet"
        raise GatewayError(f"municipality {name} is not on the municipal roll (it has: {known})")

    def write(self) -> None:
        names = [os.path.relpath(d, self.path.parent) for d in self.directories]
        document = {"version": CONFIG_VERSION, "database": self.database, "municipalities": names}
        write_private(self.path, (json.dumps(document, indent=1) + "\n").encode())  # the URL may hold a password


def read_municipal_config(path: Path) -> MunicipalConfig:
    return MunicipalConfig.read(path)


def init_municipal_roll(central_dir: Path, database: str, processes: int) -> MunicipalConfig:
    """The municipal roll at a central office: its configuration, its schema on ``database``, and
    a central-broker identity ``municipal-roll-N`` for each of ``processes`` serving processes.
    Run again to add processes (the configuration and the register are kept)."""
    from gateway.central import Central

    central = Central.open(central_dir)
    path = config_path(central.directory)
    if path.exists():
        config = MunicipalConfig.read(path)
        if config.database != database:
            raise GatewayError(f"{path} already names another database; edit it by hand to move the register")
    else:
        config = MunicipalConfig(path, database, ())
    path.parent.mkdir(parents=True, exist_ok=True)
    MunicipalStore(database).close()  # reachable, schema made
    config.write()
    for index in range(1, processes + 1):
        if not central.cert_file(municipal_roll_identity(index)).exists():
            central.issue(municipal_roll_identity(index), Role.ROLL)
    return config


def add_municipality(
    central_dir: Path,
    name: str,
    *,
    jpki_anchors: list[Path],
    jpki_crls: list[Path],
    roll_salt: bytes | None = None,
    passphrase: bytes | None = None,
    key_bits: int = TOKEN_KEY_BITS,
) -> Municipality:
    """A new municipality on the municipal roll: its keys and trust in its own folder, its
    partition of the register; its voters come next (``import-voters``), then its stations."""
    config = MunicipalConfig.read(config_path(central_dir))
    try:
        check_station_id(name, "municipality")
    except FormatError as error:
        raise GatewayError(str(error)) from error
    if any(m.municipality == name for m in config.municipalities()):
        raise GatewayError(f"municipality {name} is already on the municipal roll")
    if not jpki_anchors or not jpki_crls:
        raise GatewayError("a municipality needs the JPKI issuing CA (--jpki-ca) and its CRL (--jpki-crl)")
    store = MunicipalStore(config.database)  # reachable before any key is made
    try:
        municipality = create_municipality(config.path.parent / name, name, jpki_anchors=jpki_anchors,
                                           jpki_crls=jpki_crls, roll_salt=roll_salt, passphrase=passphrase,
                                           key_bits=key_bits)  # fmt: skip
        store.add_municipality(name, (municipality.token_public_key().key_size + 7) // 8)
    finally:
        store.close()
    MunicipalConfig(config.path, config.database, (*config.directories, municipality.directory)).write()
    return municipality


def serve(site: BrokerSite, config_path: Path, *, workers: int = 2, identity: str = municipal_roll_identity(1)) -> None:
    """Run one municipal-roll process until SIGTERM (run one per core: they share the check-ins)."""
    from infra.service import run_service

    config = MunicipalConfig.read(config_path)
    secret = os.environ.get(PASSPHRASE_ENV)
    passphrases = {m.municipality: secret.encode() for m in config.municipalities()} if secret else None
    service = MunicipalRollService(site, config.database, config.municipalities(), workers=workers,
                                   identity=identity, passphrases=passphrases)  # fmt: skip
    run_service(service, identity)


def main(argv: list[str] | None = None) -> None:
    """``python -m gateway.municipal_roll CENTRAL_DIR CONFIG [--workers N]`` (also
    ``gateway municipal-roll serve``)."""
    import argparse

    from gateway.central import Central

    parser = argparse.ArgumentParser(prog="python -m gateway.municipal_roll")
    parser.add_argument("central", type=Path)
    parser.add_argument("config", type=Path)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--identity", default=municipal_roll_identity(1), help="municipal-roll-N (certs/<it>.pem)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    serve(Central.open(args.central), args.config, workers=args.workers, identity=args.identity)


if __name__ == "__main__":
    main()
