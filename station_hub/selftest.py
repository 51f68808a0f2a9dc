"""``station-hub self-test STATION_DIR``: is this hub ready to serve its terminals?

One line per check, ``PASS``, ``WARN`` or ``FAIL``, with what was found and what to do; exit
status 1 when any check fails; ``--json`` for scripts. It reads the station directory and
writes nothing (not even SQLite's ``-wal``/``-shm`` files: run as root on an installed hub, it
must leave no file a service's user cannot open), so it may run while the services run.

The checks, in order (each a pure ``judge_*`` function over what was read, or one of the shared
ones in :mod:`infra.selftest`):

- ``station.json`` opens; the election package (manifest and context) is valid;
- the station CA is valid and in date and ``ca/ca.key`` belongs to it; the CRL is signed by
  the CA and fresh (``now < next_update``; the broker refuses every client once it is stale);
- every service identity — ``broker`` (naming the station's host), ``ledger``, ``roll``, the
  ``forwarder`` and the central link once linked, each operator — has a certificate from the
  CA, in date, not revoked, for its role, and its private key matches;
- no terminal's private key is on the hub (a terminal makes its own key and enrols,
  docs/provisioning.md) — except on a training station, which ``station-hub init`` makes
  without ``STATION_ROLL_PASSPHRASE``: its roll token key is stored unsealed, and that is how a
  training station is recognised (init records nothing else);
- the roll's token key opens (if sealed: with ``STATION_ROLL_PASSPHRASE``; without it, a
  warning) and matches ``public/token.pem``; the roll salt is there, owner-only (0600);
- the JPKI issuing CAs are in date, each with a fresh CRL signed by it;
- the roll database opens at its schema version and lists voters; the ledger database opens
  at its schema version and its chain verifies (``LedgerStore.load``);
- the broker configuration and ACL exist and name existing files; ``mosquitto`` is on PATH;
  the station's port is free, or answers TLS with a certificate of the station CA.

An **early-voting or common polling place** (``STATION_DIR/municipal/link.json``, issue 17) has
no roll of its own: its roll service relays check-ins to the municipal roll, which signs tokens
with the municipality's key, installed as ``public/token.pem``. For such a station the roll
token key check asks instead that ``public/token.pem`` is the municipality's key as granted
(``municipal/token.pem``) and never the station's own ``roll/token.key``; a ``municipal link``
check judges the station roll's identity for the central broker (``<station>.roll``, from the
central CA, in date, its key matching); the relay's database replaces the roll database; the
roll salt and the JPKI trust are not used there and say so.
"""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import stat
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from election.chain import genesis_hash
from infra.certdir import BROKER_NAME
from infra.errors import SiteError
from infra.link import CentralLink
from infra.pki import Role
from infra.selftest import (
    CheckResult,
    MosquittoBinary,
    PortProbe,
    SelfTestReport,
    broker_config_files,
    ca_key_matches,
    check_broker_config,
    check_ca,
    check_crl,
    check_identity,
    check_mosquitto,
    check_port,
    failed,
    find_mosquitto,
    identity_result,
    open_read_only,
    passed,
    probe_port,
    public_der,
    read_certificate,
    read_crl,
    read_private_key,
    read_text,
    schema_version,
    usable_crl,
    warned,
)
from protocol.municipal import relay_identity
from station_hub.ledger_store import SCHEMA_VERSION as LEDGER_SCHEMA_VERSION
from station_hub.ledger_store import LedgerStore, attach_pool
from station_hub.municipal_relay import RELAY_SCHEMA_VERSION, MunicipalLink
from station_hub.roll import ROLL_SCHEMA_VERSION
from station_hub.station import ROLL_PASSPHRASE_ENV, Station

COMMAND = "station-hub self-test"


@dataclass(frozen=True)
class HubContext:
    directory: Path
    now: dt.datetime
    passphrase: bytes | None = None
    """The roll passphrase (``STATION_ROLL_PASSPHRASE``), if given."""
    mosquitto: Callable[[], MosquittoBinary] = find_mosquitto
    port_probe: Callable[[str, int, Path], PortProbe] = probe_port


# --- pure judges ------------------------------------------------------------------------


def judge_terminal_keys(
    terminals: Sequence[str], key_names: Sequence[str], hub_identities: Sequence[str], training: bool
) -> CheckResult:
    """``key_names``: the names of the ``keys/<name>.key`` files on the hub."""
    name = "terminal keys"
    on_hub = sorted(set(key_names) & set(terminals))
    stray = sorted(set(key_names) - set(terminals) - set(hub_identities))
    extra = f"; other private keys in keys/: {', '.join(stray)}" if stray else ""
    if on_hub and training:
        return warned(
            name,
            f"training station: hub-made keys for {', '.join(on_hub)}{extra}",
            "never use it for a real election: real terminals make their own keys and enrol",
        )
    if on_hub:
        files = ", ".join(f"keys/{t}.key" for t in on_hub)
        return failed(
            name,
            f"a terminal's private key is on the hub ({files}): a terminal makes its own key "
            f"(docs/provisioning.md){extra}",
            "enrol each terminal from its own key (`station-hub enroll` revokes the hub-made certificate "
            "and deletes the key), or `station-hub revoke` it and delete the file",
        )
    if stray:
        return warned(
            name,
            f"no terminal key, but other private keys in keys/: {', '.join(stray)}",
            "remove what is no identity of this hub",
        )
    return passed(name, "no terminal private key on the hub")


def judge_token_key(public: rsa.RSAPublicKey | str, sealed: bool | str, private: Any) -> CheckResult:
    """``sealed``: whether roll/token.key is encrypted (a text: why it cannot be read);
    ``private``: the opened key, None when sealed and no passphrase was given, or a reason text."""
    name = "roll token key"
    if isinstance(public, str):
        return failed(name, f"public/token.pem: {public}", "restore it from the station backup")
    if isinstance(sealed, str):
        return failed(name, sealed, "restore roll/token.key from the station backup")
    bits = f"RSA-{public.key_size}"
    if private is None:
        return warned(
            name,
            f"{bits}; sealed, passphrase not given: cannot check that it opens and matches public/token.pem",
            f"set {ROLL_PASSPHRASE_ENV} to check it",
        )
    if isinstance(private, str):
        return failed(name, private, f"give the passphrase the station was made with in {ROLL_PASSPHRASE_ENV}")
    if not isinstance(private, rsa.RSAPrivateKey):
        return failed(name, "roll/token.key is not an RSA private key", "restore it from the station backup")
    if public_der(private.public_key()) != public_der(public):
        return failed(
            name,
            "roll/token.key does not match public/token.pem: terminals would blind tokens for a "
            "key the roll does not hold, and the ledger would refuse every ballot",
            "restore the matching pair from the station backup; do not open the polls",
        )
    if not sealed:
        return warned(
            name,
            f"{bits}, matches public/token.pem, but stored unsealed (a training station)",
            f"a real station is made with {ROLL_PASSPHRASE_ENV} set, which seals it",
        )
    return passed(name, f"{bits}, sealed, opens with the passphrase and matches public/token.pem")


def judge_relay_token_key(
    public: rsa.RSAPublicKey | str, granted: rsa.RSAPublicKey | str | None, own: Any, link: MunicipalLink
) -> CheckResult:
    """An early/common place blinds with its municipality's key: ``public`` (public/token.pem)
    must be ``granted`` (municipal/token.pem, the key the grant carried; None: a link installed
    before it was kept), and never the station's own roll key (``own``: the opened roll/token.key,
    or None/a reason when it could not be opened): with it the terminals would blind for a key
    the municipal roll does not sign with, and every check-in would fail at the booth."""
    name = "roll token key"
    place = f"{_article(link.kind)} {link.kind} polling place of {link.municipality}"
    regrant = f"install the municipal grant again: station-hub municipal-link {link.directory.parent} GRANT"
    if isinstance(public, str):
        return failed(name, f"public/token.pem: {public}", regrant)
    if isinstance(granted, str):
        return failed(name, f"municipal/token.pem: {granted}", regrant)
    bits = f"RSA-{public.key_size}"
    if isinstance(own, rsa.RSAPrivateKey) and public_der(own.public_key()) == public_der(public):
        if granted is not None and public_der(granted) == public_der(public):
            return failed(name, f"roll/token.key is {link.municipality}'s private token key: it must stay at the "
                                "municipal roll", "remove it from this hub and ask the central office to replace "
                                f"{link.municipality}'s token key")  # fmt: skip
        return failed(name, f"{place}, but public/token.pem is this station's own roll key, not "
                            f"{link.municipality}'s: the municipal roll's tokens would not verify",
                      f"{regrant}; then re-export the station package")  # fmt: skip
    if granted is None:
        return warned(name, f"{place}: public/token.pem ({bits}) cannot be compared with the key the grant "
                            "carried (municipal/token.pem is missing: the link predates it)", regrant)  # fmt: skip
    if public_der(granted) != public_der(public):
        return failed(name, f"{place}, but public/token.pem is not {link.municipality}'s token key as granted: "
                            "terminals would blind tokens the municipal roll does not sign",
                      f"{regrant}; then re-export the station package")  # fmt: skip
    return passed(name, f"{place}: public/token.pem is {link.municipality}'s token key ({bits}, as granted); "
                        "the municipal roll signs the tokens, this station's roll/token.key is not used")  # fmt: skip


def judge_municipal_link(link: MunicipalLink | str, station_id: str, now: dt.datetime) -> CheckResult:
    """The station roll's identity for the central broker (``<station>.roll``), from the central
    CA the grant carried, in date, its key here: without it the relay reaches no municipal roll
    and every voter is told the roll is unreachable."""
    name = "municipal link"
    regrant = "ask the central office for a new grant (gateway municipal-roll add-station) and install it"
    if isinstance(link, str):
        return failed(name, link, regrant)
    if link.station_id != station_id:
        return failed(name, f"municipal/link.json is for station {link.station_id}, not {station_id}", regrant)
    ca = read_certificate(link.ca_file)
    if isinstance(ca, str):
        return failed(name, f"municipal/ca.pem: {ca}", regrant)
    result = check_identity(name, relay_identity(station_id), Role.ROLL, read_certificate(link.cert_file("")),
                            read_private_key(link.key_file("")), ca, None, now, reissue=regrant)  # fmt: skip
    if result.ok:
        return replace(result, detail=f"{link.kind} polling place of {link.municipality}, central broker "
                                      f"{link.host}:{link.port}, {result.detail}")  # fmt: skip
    return result


def judge_relay_db(state: StoreState) -> CheckResult:
    name = "roll relay database"
    if not state.exists:
        return passed(name, "not created yet: the relay makes municipal/relay.db at its first start")
    if state.error:
        return failed(name, f"municipal/relay.db: {state.error}", "restore it from the station backup")
    if state.version != RELAY_SCHEMA_VERSION:
        return failed(name, f"schema version {state.version}, this software reads {RELAY_SCHEMA_VERSION}",
                      "install the software version the station was made with")  # fmt: skip
    return passed(name, f"schema {state.version}, {state.facts['checked_in']} checked in here, "
                        f"polls {state.facts['polls']} (the register is the municipal roll's)")  # fmt: skip


def judge_salt(mode: int | str, salt: bytes | str) -> CheckResult:
    """``mode``: the file's permission bits (or why it could not be read)."""
    name = "roll salt"
    if isinstance(mode, str):
        return failed(name, mode, "restore roll/salt.key from the station backup (the roll cannot derive voter keys)")
    if mode & 0o077:
        return failed(name, f"roll/salt.key is readable by others (mode {mode:04o})", "chmod 600 roll/salt.key")
    if isinstance(salt, str):
        return failed(name, salt, "restore roll/salt.key from the station backup")
    if len(salt) < 16:
        return failed(name, f"only {len(salt)} bytes", "restore roll/salt.key from the station backup")
    return passed(name, f"{len(salt)} bytes, mode {mode:04o}")


def judge_jpki(
    anchors: Sequence[tuple[str, x509.Certificate | str]],
    crls: Sequence[tuple[str, Any]],
    now: dt.datetime,
    directory: Path,
) -> CheckResult:
    """Every JPKI issuing CA in date with a fresh CRL it signed (the roll refuses a card of a CA
    without one: ``stale_crl``)."""
    name = "JPKI trust"
    refresh = f"install fresh CRLs: station-hub jpki-crl {directory} CRL…"
    if not anchors:
        return failed(
            name,
            "jpki/anchors/ holds no JPKI issuing CA: the roll can check no card",
            "install them (`station-hub init --jpki-ca`)",
        )
    bad = [f"jpki/anchors/{file}: {c}" for file, c in anchors if isinstance(c, str)]
    bad += [f"jpki/crls/{file}: {c}" for file, c in crls if isinstance(c, str)]
    if bad:
        return failed(name, "; ".join(bad), "replace the unreadable files")
    problems, soonest = [], None
    for file, anchor in anchors:
        assert not isinstance(anchor, str)
        if not anchor.not_valid_before_utc <= now <= anchor.not_valid_after_utc:
            problems.append(
                f"{file} is not in date (valid {anchor.not_valid_before_utc:%Y-%m-%d} to "
                f"{anchor.not_valid_after_utc:%Y-%m-%d})"
            )
            continue
        mine = [crl for _f, crl in crls if crl.issuer == anchor.subject and crl.is_signature_valid(anchor.public_key())]
        if not mine:
            problems.append(f"no CRL signed by {file}: the roll refuses its cards (stale_crl)")
            continue
        newest = max(mine, key=lambda crl: crl.last_update_utc)
        due = newest.next_update_utc
        if due is None or not newest.last_update_utc <= now < due:
            problems.append(
                f"the CRL of {file} is stale (next update {due:%Y-%m-%d %H:%M} UTC)"
                if due
                else f"the CRL of {file} has no next update"
            )
            continue
        soonest = due if soonest is None else min(soonest, due)
    if problems:
        return failed(name, "; ".join(problems), refresh)
    return passed(name, f"{len(anchors)} issuing CA(s), {len(crls)} CRL(s), fresh until {soonest:%Y-%m-%d %H:%M} UTC")


@dataclass(frozen=True)
class StoreState:
    exists: bool
    error: str | None = None
    version: int | None = None
    facts: dict[str, Any] = field(default_factory=dict)


def judge_roll_db(state: StoreState, directory: Path) -> CheckResult:
    name = "roll database"
    if not state.exists:
        return failed(
            name,
            "roll/roll.db does not exist: no voter is on the roll",
            f"station-hub import-voters {directory} VOTER-KEYS",
        )
    if state.error:
        return failed(name, f"roll/roll.db: {state.error}", "restore it from the station backup")
    if state.version != ROLL_SCHEMA_VERSION:
        return failed(
            name,
            f"schema version {state.version}, this software reads {ROLL_SCHEMA_VERSION}",
            "install the software version the station was made with",
        )
    eligible = state.facts.get("eligible", 0)
    if not eligible:
        return failed(name, "no voter is on the roll", f"station-hub import-voters {directory} VOTER-KEYS")
    return passed(
        name,
        f"schema {state.version}, {eligible} voters, {state.facts.get('checked_in', 0)} checked in, "
        f"polls {state.facts.get('polls', 'pending')}",
    )


def judge_ledger_db(state: StoreState) -> CheckResult:
    name = "ledger database"
    if not state.exists:
        return passed(name, "not created yet: the ledger service makes it at its first start (empty chain)")
    if state.error:
        return failed(
            name,
            f"ledger/ledger.db: {state.error}",
            "stop the ledger, keep the file as evidence, restore it from the last backup or ask "
            "the central office for the forwarded chain; do not open the polls",
        )
    if state.version != LEDGER_SCHEMA_VERSION:
        return failed(
            name,
            f"schema version {state.version}, this software reads {LEDGER_SCHEMA_VERSION}",
            "install the software version the station was made with",
        )
    facts = state.facts
    return passed(
        name,
        f"schema {state.version}, chain of {facts['entries']} entries verifies "
        f"(head {facts['head'][:16]}…), {facts['pool']} ballot(s) held for the next batch, polls {facts['polls']}",
    )


# --- probes (read only) -------------------------------------------------------------------


class _ReadOnlyLedger(LedgerStore):
    """The ledger store over a read-only connection (LedgerStore itself opens read-write and
    would create the database): ``load`` re-checks every link of the chain."""

    def __init__(self, path: Path) -> None:  # no super().__init__(): it would write
        self.path = path
        self._db = open_read_only(path)


def observe_ledger(station: Station) -> StoreState:
    path = station.ledger_db
    if not path.exists():
        return StoreState(False)
    try:
        base_hash = station.election().manifest.base_hash
    except (SiteError, OSError):
        return StoreState(True, "the chain cannot be verified without a valid election package")
    try:
        store = _ReadOnlyLedger(path)
    except (OSError, sqlite3.Error) as error:
        return StoreState(True, str(error))
    try:
        version = schema_version(store._db)
        if version != LEDGER_SCHEMA_VERSION:
            return StoreState(True, None, version)
        attach_pool(store._db, path, read_only=True)
        state = store.load(genesis_hash(base_hash, station.station_id), base_hash)
        facts = {"entries": state.head.position, "head": state.head.entry_hash.hex(), "pool": len(state.pool),
                 "polls": state.polls}  # fmt: skip
        return StoreState(True, None, version, facts)
    except (sqlite3.Error, SiteError, ValueError, KeyError) as error:
        return StoreState(True, str(error))
    finally:
        store._db.close()


def _observe_sqlite(
    path: Path, version_wanted: int, facts: Callable[[sqlite3.Connection], dict[str, Any]]
) -> StoreState:
    """A service's SQLite store, read-only: absent, unreadable, of another schema, or its facts."""
    if not path.exists():
        return StoreState(False)
    try:
        db = open_read_only(path)
    except (OSError, sqlite3.Error) as error:
        return StoreState(True, str(error))
    try:
        version = schema_version(db)
        if version != version_wanted:
            return StoreState(True, None, version)
        return StoreState(True, None, version, facts(db))
    except sqlite3.Error as error:
        return StoreState(True, str(error))
    finally:
        db.close()


def _polls(db: sqlite3.Connection) -> str:
    row = db.execute("SELECT value FROM meta WHERE name = 'polls'").fetchone()
    return row[0] if row else "pending"


def observe_roll(station: Station) -> StoreState:
    def facts(db: sqlite3.Connection) -> dict[str, Any]:
        eligible = db.execute("SELECT count(*) FROM voters").fetchone()[0]
        try:
            modulus = (station.token_public_key().key_size + 7) // 8
            checked = db.execute("SELECT count(*) FROM voters WHERE blinded != ?", (bytes(modulus),)).fetchone()[0]
        except (OSError, SiteError, ValueError):
            checked = "?"
        return {"eligible": eligible, "checked_in": checked, "polls": _polls(db)}

    return _observe_sqlite(station.roll_db, ROLL_SCHEMA_VERSION, facts)


def observe_relay(link: MunicipalLink) -> StoreState:
    def facts(db: sqlite3.Connection) -> dict[str, Any]:
        return {"checked_in": db.execute("SELECT count(*) FROM granted").fetchone()[0], "polls": _polls(db)}

    return _observe_sqlite(link.relay_db, RELAY_SCHEMA_VERSION, facts)


def _granted_key(link: MunicipalLink) -> rsa.RSAPublicKey | str | None:
    try:
        key = serialization.load_pem_public_key(link.token_key_file.read_bytes())
    except FileNotFoundError:
        return None
    except OSError as error:
        return f"cannot read it: {error.strerror}"
    except (ValueError, TypeError):
        return "not a PEM public key"
    return key if isinstance(key, rsa.RSAPublicKey) else "not an RSA public key"


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def _pem_folder(folder: Path, load: Callable[[bytes], Any]) -> list[tuple[str, Any]]:
    if not folder.is_dir():
        return []
    found: list[tuple[str, Any]] = []
    for path in sorted(folder.iterdir()):
        if not path.is_file():
            continue
        try:
            found.append((path.name, load(path.read_bytes())))
        except (OSError, ValueError, TypeError) as error:
            found.append((path.name, f"not readable as PEM or DER ({error})"))
    return found


def _certificate(raw: bytes) -> x509.Certificate:
    return (
        x509.load_pem_x509_certificate(raw)
        if raw.lstrip().startswith(b"-----")
        else x509.load_der_x509_certificate(raw)
    )


def _crl(raw: bytes) -> x509.CertificateRevocationList:
    return x509.load_pem_x509_crl(raw) if raw.lstrip().startswith(b"-----") else x509.load_der_x509_crl(raw)


def _token_key_state(station: Station, passphrase: bytes | None) -> tuple[Any, bool | str, Any]:
    try:
        public: Any = station.token_public_key()
    except (OSError, SiteError, ValueError) as error:
        public = str(error) if not isinstance(error, OSError) else f"cannot read it: {error.strerror}"
    try:
        data = station.token_key_file.read_bytes()
    except OSError as error:
        return public, f"cannot read roll/token.key: {error.strerror} (run the self-test as root)", None
    sealed = b"ENCRYPTED" in data
    if sealed and passphrase is None:
        return public, True, None
    try:
        private = serialization.load_pem_private_key(data, passphrase if sealed else None)
    except (TypeError, ValueError):
        what = "does not open with the given passphrase" if sealed else "is not a PEM private key"
        return public, sealed, f"roll/token.key {what}"
    return public, sealed, private


def _salt_state(station: Station) -> tuple[int | str, bytes | str]:
    path = station.roll_salt_file
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return "roll/salt.key is missing", ""
    except OSError as error:
        return f"cannot read roll/salt.key: {error.strerror}", ""
    try:
        return mode, bytes.fromhex(path.read_text().strip())
    except OSError as error:
        return mode, f"cannot read roll/salt.key: {error.strerror} (run the self-test as root)"
    except ValueError:
        return mode, "roll/salt.key does not hold hex"


# --- the checks -------------------------------------------------------------------------


def _crl_renew(directory: Path) -> str:
    ca = Path(directory).resolve() / "ca"
    return (
        f"re-sign it with the station CA: {sys.executable} -c 'from infra.pki import StationCA; "
        f'StationCA.load("{ca}").write_crl()\', reload the broker, re-export the station package'
    )


def hub_checks(station: Station, context: HubContext) -> list[CheckResult]:
    now, directory = context.now, station.directory
    results = []
    try:
        election = station.election()
        manifest = election.manifest
        results.append(
            passed(
                "election package",
                f"{manifest.election_id}: {len(manifest.contests)} contests, "
                f"base hash {manifest.base_hash.hex()[:16]}…",
            )
        )
    except (SiteError, OSError) as error:
        results.append(
            failed(
                "election package",
                str(error),
                "install the election package again (election/manifest.json, election/context.json)",
            )
        )

    ca = read_certificate(station.ca_file)
    ca_ok = None if isinstance(ca, str) else ca
    results.append(
        check_ca("station CA", ca, now, f"{station.station_id}-ca", ca_key_matches(station, ca_ok) if ca_ok else None)
    )
    crl = read_crl(station.crl_file)
    results.append(check_crl("station CRL", crl, ca_ok, now, _crl_renew(directory)))
    crl_ok = usable_crl(crl, ca_ok)

    restore = "restore certs/{0}.pem and keys/{0}.key from the station backup (`station-hub init` made them)"
    identities: list[tuple[str, Role, dict[str, Any]]] = [
        (BROKER_NAME, Role.BROKER, {"hostnames": (station.host,)}),
        ("ledger", Role.LEDGER, {}),
        ("roll", Role.ROLL, {}),
    ]
    linked = CentralLink.exists(directory)
    if linked:
        identities.append(("forwarder", Role.FORWARDER, {}))
    identities += [(operator, Role.OPERATOR, {}) for operator in station.operators]
    for cn, role, extra in identities:
        reissue = (
            f"run `station-hub link {directory} LINK` again (it certifies the forwarder)"
            if role is Role.FORWARDER
            else restore.format(cn)
        )
        results.append(
            identity_result(station, f"identity {cn}", cn, role, ca_ok, crl_ok, now, reissue=reissue, **extra)
        )
    if linked:
        results.append(check_central_link(directory, now))

    public, sealed, private = _token_key_state(station, context.passphrase)
    keys_dir = directory / "keys"
    key_names = sorted(p.name.removesuffix(".key") for p in keys_dir.glob("*.key")) if keys_dir.is_dir() else []
    hub_identities = [cn for cn, _role, _extra in identities] + ["forwarder"]
    results.append(judge_terminal_keys(station.terminals, key_names, hub_identities, training=sealed is False))
    relay: MunicipalLink | str | None = None
    if MunicipalLink.exists(directory):
        try:
            relay = MunicipalLink.open(directory)
        except (SiteError, OSError) as error:
            relay = f"municipal/link.json: {error}"
        results.append(judge_municipal_link(relay, station.station_id, now))
    if isinstance(relay, MunicipalLink):
        results.append(judge_relay_token_key(public, _granted_key(relay), private, relay))
        unused = f"not used at {_article(relay.kind)} {relay.kind} polling place: the municipal roll "
        results.append(passed("roll salt", unused + "derives the voter keys"))
        results.append(passed("JPKI trust", unused + "checks the cards"))
        results.append(judge_relay_db(observe_relay(relay)))
    else:
        results.append(judge_token_key(public, sealed, private))
        results.append(judge_salt(*_salt_state(station)))
        results.append(
            judge_jpki(
                _pem_folder(station.jpki_dir / "anchors", _certificate),
                _pem_folder(station.jpki_dir / "crls", _crl),
                now,
                directory,
            )
        )
        results.append(judge_roll_db(observe_roll(station), directory))
    results.append(judge_ledger_db(observe_ledger(station)))

    config = read_text(station.broker_config)
    files = broker_config_files(config) if config else []
    results.append(
        check_broker_config(
            "broker configuration",
            config,
            read_text(station.acl_file),
            station.host,
            station.port,
            [(f, Path(f).exists()) for f in files],
            "restore broker/ from the station backup (`station-hub init` generates it; "
            "`station-hub revoke` rewrites the ACL)",
        )
    )
    results.append(check_mosquitto("mosquitto", context.mosquitto()))
    ca_file = station.ca_file
    results.append(check_port("broker port", context.port_probe(station.host, station.port, ca_file)))
    return results


def check_central_link(directory: Path, now: dt.datetime) -> CheckResult:
    """The hub's credentials for the central broker (``central/``): the central CA's certificate
    for this station and its key."""
    name = "central link"
    try:
        link = CentralLink.open(directory)
    except SiteError as error:
        return failed(name, str(error), "install the link grant again: station-hub link")
    ca = read_certificate(link.ca_file)
    if isinstance(ca, str):
        return failed(name, ca, "install the link grant again: station-hub link")
    result = check_identity(
        name,
        link.station_id,
        Role.LEDGER,
        read_certificate(link.cert_file("")),
        read_private_key(link.key_file("")),
        ca,
        None,
        now,
        reissue="register again at the central office and install the new grant",
    )
    if result.ok:
        return replace(result, detail=f"{link.host}:{link.port}, {result.detail}")
    return result


def run_selftest(
    directory: Path, *, now: dt.datetime | None = None, passphrase: bytes | None = None, **probes: Any
) -> SelfTestReport:
    """Every check of the hub in ``directory``. ``passphrase`` defaults to the
    ``STATION_ROLL_PASSPHRASE`` environment variable; ``probes``: ``mosquitto``, ``port_probe``
    (tests replace them)."""
    directory = Path(directory)
    if passphrase is None and os.environ.get(ROLL_PASSPHRASE_ENV):
        passphrase = os.environ[ROLL_PASSPHRASE_ENV].encode()
    context = HubContext(directory, now or dt.datetime.now(dt.UTC), passphrase, **probes)
    try:
        station = Station.open(directory)
    except SiteError as error:
        result = failed(
            "station.json",
            str(error),
            "give the station directory (`station-hub init` made it); nothing else was checked",
        )
        return SelfTestReport(COMMAND, str(directory), (result,))
    opened = passed(
        "station.json",
        f"station {station.station_id}, broker {station.host}:{station.port}, "
        f"terminals {', '.join(station.terminals) or 'none'}, operators {', '.join(station.operators) or 'none'}",
    )
    return SelfTestReport(COMMAND, str(directory), (opened, *hub_checks(station, context)))
