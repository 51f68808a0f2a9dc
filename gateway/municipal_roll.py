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
import logging
import secrets
import shutil
import signal
import threading
from collections.abc import Iterable
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
    MUNICIPAL_ROLL_NAME,
    RollMarks,
    municipal_roll_identity,
    parse_checkin_topic,
    relay_identity,
    reply_topic,
    shared_checkin_subscription,
)

log = logging.getLogger("gateway.municipal_roll")
TOKEN_KEY_BITS = 3072
MUNICIPAL_KINDS = ("early", "common")
POLLS_STATES = ("pending", "open", "closed")

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
        self._db.execute(
            "INSERT INTO mr_stations VALUES (%s, %s, %s) ON CONFLICT (station_id) "
            "DO UPDATE SET municipality = excluded.municipality, kind = excluded.kind",
            (station_id, municipality, kind),
        )

    def station(self, station_id: str) -> tuple[str, str] | None:
        """(municipality, kind) of a station on the municipal roll, None if it is not."""
        row = self._db.execute(
            "SELECT municipality, kind FROM mr_stations WHERE station_id = %s", (station_id,)
        ).fetchone()
        return (row[0], row[1]) if row else None

    def import_voters(self, municipality: str, keys: Iterable[bytes]) -> int:
        """Add voter keys (before the polls open); returns how many were new."""
        if self.polls(municipality) != "pending":
            raise GatewayError("voters can only be imported before the polls open")
        rows = [(municipality, key) for key in sorted(set(keys))]
        if any(len(key) != 32 for _, key in rows):
            raise GatewayError("a voter key is 32 bytes")
        before = self.eligible(municipality)
        with self._db.transaction(), self._db.cursor() as cursor:
            cursor.execute("CREATE TEMP TABLE mr_import (municipality text, voter_key bytea) ON COMMIT DROP")
            with cursor.copy("COPY mr_import FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
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
    path = Path(central_dir) / "certs" / f"{station_id}.pem"
    try:
        key = x509.load_pem_x509_certificate(path.read_bytes()).public_key()
    except (OSError, ValueError) as error:
        raise GatewayError(f"station {station_id} is not linked to the centre ({error})") from error
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise GatewayError(f"station {station_id}: its link certificate carries no Ed25519 key")
    if store.station(station_id) is not None:
        raise GatewayError(f"station {station_id} checks in at the municipal roll: it has no marks of its own")
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
        self.client.on_subscribe = lambda *a: self.connected.set()
        self.client.on_message = self._on_message

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


def read_municipal_config(path: Path) -> dict[str, Any]:
    """``{"database": URL, "municipalities": [directory, …]}`` (a directory's name is its municipality)."""
    try:
        data = parse_json(Path(path).read_bytes(), max_size=1_000_000)
    except (OSError, FormatError) as error:
        raise GatewayError(f"{path}: {error}") from error
    if not isinstance(data, dict) or set(data) != {"database", "municipalities"}:
        raise GatewayError(f"{path}: expected database and municipalities")
    return data


def serve(site: BrokerSite, config_path: Path, *, workers: int = 2, identity: str = municipal_roll_identity(1)) -> None:
    """Run one municipal-roll process until SIGTERM (run one per core: they share the check-ins)."""
    config = read_municipal_config(config_path)
    municipalities = [Municipality(Path(d), Path(d).name) for d in config["municipalities"]]
    service = MunicipalRollService(site, config["database"], municipalities, workers=workers, identity=identity)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: service.stop())
    service.run()


def main(argv: list[str] | None = None) -> None:
    """``python -m gateway.municipal_roll CENTRAL_DIR CONFIG [--workers N]``."""
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
