"""Provision one booth terminal from its station package: the Python behind `flash.sh`
(docs/provisioning.md).

Two phases. **Check**: every input is read and checked first — the station package (strictly
decoded), the terminal id (the package must list it), the data directory already there (an
election, station or terminal swap is refused while the outbox holds ballots), a certificate
given with ``--certificate`` (issued by the package's station CA for this terminal's own key),
the reader settings, the companion board (reachable with mpremote). Nothing is written until all
of that passed: a bad input leaves the terminal exactly as it was. **Apply**: each step looks at
what is there and only then acts, so running it twice changes nothing the second time and says
so; ``--dry-run`` reports what each step would do and stops there.

The terminal makes its own Ed25519 key; the key never leaves it. Until the hub has certified
that key, flash.sh writes a certificate request (``DATA/device/request.csr``) for
``station-hub enroll`` and exits with status 3 ("waiting for the certificate"); re-run with
``--certificate FILE`` to install what the hub issued.

Configuration (``DATA/config.json``): provisioning owns ``schema``, ``station``, ``terminal``,
``broker``, ``election``, ``companion_firmware_sha256``, ``token_key`` and the card trust lists
(``card.mode``, ``card.trust_anchors``, ``card.crls``); ``reader`` and ``companion_port`` are set
when given on the command line and kept otherwise. Every other setting (``ui_port``,
``timeouts``, paths, anything a site added) is kept as it is.

The companion firmware goes to the board with the real `mpremote`: changed files are copied
under a temporary name (`NAME.new`), read back by sha256 on the board, and only when every
staged file verified are they renamed over the old ones in one step on the board (main.py
last). A copy that fails therefore leaves the previous firmware in place.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID

from appliance.drivers.companion import firmware_sources, listing_hash
from infra.files import write_atomically, write_private
from infra.pki import PkiError, Role, common_name, verify_certificate
from protocol.errors import Refusal
from protocol.station_package import StationPackage

CONFIG_SCHEMA = "polling-station/terminal-config/1"
RENEW_BEFORE_DAYS = 30
MPREMOTE_TIMEOUT = 60
READER_KINDS = ("pcsc", "pn532-uart", "pn532-i2c", "pn532-spi")
EXIT_WAITING_FOR_CERTIFICATE = 3
DEFAULT_OUTBOX = "outbox/outbox.db"
OWNED_KEYS = frozenset({"schema", "station", "terminal", "broker", "companion_port", "reader", "election",
                        "companion_firmware_sha256", "card", "token_key"})  # fmt: skip
"""config.json keys flash.sh writes; every other key is a site setting it keeps."""


class ProvisionError(Exception):
    """A provisioning step failed; the message says what state things were left in."""


@dataclass(frozen=True)
class TerminalFiles:
    """Where a provisioned terminal keeps its identity, configuration and election."""

    root: Path

    @property
    def device_key(self) -> Path:
        return self.root / "device" / "device.key"

    @property
    def device_certificate(self) -> Path:
        return self.root / "device" / "device.pem"

    @property
    def certificate_request(self) -> Path:
        return self.root / "device" / "request.csr"

    @property
    def ca_certificate(self) -> Path:
        return self.root / "device" / "ca.pem"

    @property
    def crl(self) -> Path:
        return self.root / "device" / "crl.pem"

    @property
    def token_key(self) -> Path:
        return self.root / "device" / "token.pem"

    @property
    def card_dir(self) -> Path:
        return self.root / "card"

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def election_package(self) -> Path:
        return self.root / "election"

    def read_config(self) -> dict[str, Any]:
        config = json.loads(self.config.read_text(encoding="utf-8"))
        if not isinstance(config, dict) or config.get("schema") != CONFIG_SCHEMA:
            raise ValueError(f"{self.config} is not a terminal configuration ({CONFIG_SCHEMA})")
        return config


def _package_files(path: Path) -> dict[str, bytes]:
    if path.is_file():
        return {path.name: path.read_bytes()}
    files = {str(p.relative_to(path)): p.read_bytes() for p in path.rglob("*") if p.is_file()}
    if not files:
        raise ProvisionError(f"election package {path} is empty")
    return files


def election_package_hash(path: Path) -> str:
    """Identity of an election package (a file or a directory): its sha256sum-listing hash."""
    return listing_hash(_package_files(path))


@dataclass(frozen=True)
class Outcome:
    step: str
    action: str  # created, updated, unchanged, waiting, or "would ..." in a dry run
    detail: str

    @property
    def changed(self) -> bool:
        return self.action not in ("unchanged", "checked")

    def line(self) -> str:
        return f"{self.step}: {self.action} — {self.detail}"


@dataclass(frozen=True)
class ReaderSettings:
    """``config.json``'s ``reader``: which card reader the booth opens (appliance/config.py)."""

    kind: str
    port: str | None = None  # pn532-uart: serial port
    name: str | None = None  # pcsc: reader name (None: the first reader)
    address: int | None = None  # pn532-i2c: I2C address (None: the pin map's)

    def __post_init__(self) -> None:
        if self.kind not in READER_KINDS:
            raise ProvisionError(f"reader: one of {', '.join(READER_KINDS)}, not {self.kind!r}")
        if self.kind == "pn532-uart" and not self.port:
            raise ProvisionError("reader pn532-uart needs --reader-port (e.g. /dev/serial0)")
        if self.port and self.kind != "pn532-uart":
            raise ProvisionError(f"--reader-port is for pn532-uart, not {self.kind}")
        if self.name and self.kind != "pcsc":
            raise ProvisionError(f"--reader-name is for pcsc, not {self.kind}")
        if self.address is not None and (self.kind != "pn532-i2c" or not 0x08 <= self.address <= 0x77):
            raise ProvisionError("--reader-address is an I2C address (0x08-0x77) for pn532-i2c")

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"kind": self.kind}
        if self.kind == "pcsc":
            data["name"] = self.name
        if self.port:
            data["port"] = self.port
        if self.address is not None:
            data["address"] = self.address
        return data


@dataclass(frozen=True)
class ProvisionRequest:
    terminal_id: str
    package: Path
    data_dir: Path
    board_port: str | None = None
    """The companion board's serial port; None keeps the configured one."""
    no_board: bool = False
    """Training only: this terminal has no companion board (no keypad, no tamper switch)."""
    reader: ReaderSettings | None = None
    """None keeps the configured reader."""
    certificate: Path | None = None
    """The certificate `station-hub enroll` issued for this terminal's request."""
    broker: str | None = None
    """Override the package's broker address (host:port)."""
    dry_run: bool = False


def _verb(dry_run: bool, action: str) -> str:
    return f"would {action.removesuffix('d')}" if dry_run else action


# --- phase 1: check every input -----------------------------------------------------------


@dataclass
class Plan:
    """Everything checked, nothing written: what the apply phase will put in place."""

    request: ProvisionRequest
    files: TerminalFiles
    package: StationPackage
    existing: dict[str, Any] | None
    broker: str
    companion_port: str | None
    reader: dict[str, Any]
    certificate_pem: bytes | None
    archive_outbox: Path | None
    """An outbox (empty) of the previous election/identity, to be moved aside."""
    mpremote: Mpremote | None
    notes: list[str] = field(default_factory=list)

    @property
    def election_files(self) -> dict[str, bytes]:
        return dict(self.package.election)

    @property
    def election_hash(self) -> str:
        return listing_hash(self.election_files)


def _read_package(path: Path) -> StationPackage:
    try:
        payload = path.read_bytes()
    except OSError as error:
        raise ProvisionError(f"station package {path}: {error.strerror}") from None
    try:
        return StationPackage.decode(payload)
    except Refusal as error:
        raise ProvisionError(f"station package {path} refused: {error}") from None


def _existing_config(files: TerminalFiles) -> dict[str, Any] | None:
    if not files.config.exists():
        return None
    try:
        return files.read_config()
    except (OSError, ValueError) as error:
        raise ProvisionError(f"{files.config} exists but cannot be read ({error}); nothing was changed") from None


def outbox_depth(path: Path) -> int:
    """Ballots (and check-ins) in an outbox, read from a copy: the data directory is not touched."""
    with tempfile.TemporaryDirectory(prefix="flash-outbox-") as temp:
        copy = Path(temp) / "outbox.db"
        shutil.copyfile(path, copy)
        for suffix in ("-wal", "-journal"):
            side = path.with_name(path.name + suffix)
            if side.exists():
                shutil.copyfile(side, copy.with_name(copy.name + suffix))
        db = sqlite3.connect(copy)
        try:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            count = 0
            for table in ("outbox", "checkins"):
                if table in tables:
                    count += db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
            return count
        finally:
            db.close()


def _check_identity_change(files: TerminalFiles, existing: dict[str, Any], plan_station: str, terminal: str,
                           election_hash: str) -> Path | None:  # fmt: skip
    """Refuse to swap election, station or terminal id under ballots not yet acknowledged."""
    old = (existing.get("station"), existing.get("terminal"), (existing.get("election") or {}).get("sha256"))
    new = (plan_station, terminal, election_hash)
    if old == new:
        return None
    outbox_name = existing.get("outbox", DEFAULT_OUTBOX)
    outbox = files.root / outbox_name if isinstance(outbox_name, str) else files.root / DEFAULT_OUTBOX
    if not outbox.exists():
        return None
    try:
        depth = outbox_depth(outbox)
    except (OSError, sqlite3.Error) as error:
        raise ProvisionError(
            f"cannot tell whether the outbox {outbox} still holds ballots ({error}); nothing was changed"
        ) from None
    what = [name for name, a, b in zip(("station", "terminal", "election"), old, new, strict=True) if a != b]
    if depth:
        raise ProvisionError(
            f"refusing to change the {', '.join(what)} of this terminal: its outbox holds {depth} ballot(s) or "
            "check-in(s) the hub has not acknowledged. Bring the terminal online until its outbox is empty "
            "(monitor: outbox 0). Nothing was changed."
        )
    return outbox


def _check_board(port: str, dry_run: bool) -> Mpremote | None:
    if "://" not in port:
        try:
            mode = os.stat(port).st_mode
        except OSError as error:
            raise ProvisionError(f"companion board port {port}: {error.strerror}; nothing was changed") from None
        if not stat.S_ISCHR(mode):
            raise ProvisionError(f"companion board port {port} is not a serial device; nothing was changed")
    if dry_run:
        return None
    board = Mpremote(port, _find_mpremote())
    try:
        board.listing()
    except ProvisionError as error:
        raise ProvisionError(
            f"companion board on {port} does not answer mpremote ({error}); nothing was changed"
        ) from None
    return board


def _device_public_key(files: TerminalFiles) -> ed25519.Ed25519PublicKey | None:
    if not files.device_key.exists():
        return None
    return _load_device_key(files).public_key()


def _raw(key: ed25519.Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def certificate_problem(
    pem: bytes, package: StationPackage, terminal: str, key: ed25519.Ed25519PublicKey | None
) -> str | None:
    """Why ``pem`` is not this terminal's certificate from this station (None: it is)."""
    try:
        certificate = x509.load_pem_x509_certificate(pem)
    except ValueError:
        return "not a PEM certificate"
    try:
        verify_certificate(certificate, package.station_ca, crl=package.station_crl, role=Role.TERMINAL)
        name = common_name(certificate)
    except PkiError as error:
        return str(error)
    if name != terminal:
        return f"it is for terminal {name}, not {terminal}"
    if key is None or not isinstance(certificate.public_key(), ed25519.Ed25519PublicKey):
        return "this terminal has no device key it could belong to"
    if _raw(certificate.public_key()) != _raw(key):  # type: ignore[arg-type]
        return "it certifies another key than this terminal's (enrol this terminal's request.csr)"
    return None


def check_inputs(request: ProvisionRequest) -> Plan:
    """Read and check every input; raise ProvisionError before anything is written."""
    files = TerminalFiles(request.data_dir)
    package = _read_package(request.package)
    if request.terminal_id not in package.terminals:
        raise ProvisionError(
            f"station {package.station_id} does not know terminal {request.terminal_id!r} "
            f"(its terminals: {', '.join(package.terminals)}); nothing was changed"
        )
    if files.root.exists() and not files.root.is_dir():
        raise ProvisionError(f"data directory {files.root} is not a directory")
    existing = _existing_config(files)
    broker = request.broker or package.broker
    host, _, port = broker.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ProvisionError(f"broker: expected host:port, got {broker!r}")
    election_hash = listing_hash(dict(package.election))
    archive = None
    if existing is not None:
        archive = _check_identity_change(files, existing, package.station_id, request.terminal_id, election_hash)

    if request.reader is not None:
        reader = request.reader.to_json()
    elif existing is not None and isinstance(existing.get("reader"), dict):
        reader = existing["reader"]
    else:
        raise ProvisionError("no card reader configured: give --reader (pcsc, pn532-uart, pn532-i2c, pn532-spi)")

    if request.no_board and request.board_port:
        raise ProvisionError("--board and --no-board exclude each other")
    notes: list[str] = []
    if request.no_board:
        companion_port = None
        notes.append("no companion board: no keypad and NO TAMPER MONITORING (training terminals only)")
    elif request.board_port:
        companion_port = request.board_port
    elif existing is not None and "companion_port" in existing:
        companion_port = existing["companion_port"]
        if companion_port is None:
            notes.append("no companion board configured (kept): no keypad and no tamper monitoring")
    else:
        raise ProvisionError("give the companion board's port with --board PORT (or --no-board on a training terminal)")

    key = _device_public_key(files) if files.device_key.exists() else None
    certificate_pem = None
    if request.certificate is not None:
        try:
            certificate_pem = request.certificate.read_bytes()
        except OSError as error:
            raise ProvisionError(f"certificate {request.certificate}: {error.strerror}") from None
        if key is None:
            raise ProvisionError("this terminal has no device key yet: run flash.sh without --certificate first")
        problem = certificate_problem(certificate_pem, package, request.terminal_id, key)
        if problem:
            raise ProvisionError(f"certificate {request.certificate} refused: {problem}; nothing was changed")

    mpremote = _check_board(companion_port, request.dry_run) if companion_port else None
    return Plan(request, files, package, existing, broker, companion_port, reader, certificate_pem, archive,
                mpremote, notes)  # fmt: skip


# --- phase 2: apply -----------------------------------------------------------------------


def _write_if_changed(path: Path, data: bytes, dry_run: bool, *, private: bool = False) -> bool:
    if path.exists() and path.read_bytes() == data:
        return False
    if not dry_run:
        (write_private if private else write_atomically)(path, data)
    return True


def ensure_device_key(files: TerminalFiles, dry_run: bool) -> Outcome:
    """Ed25519 key made on the terminal itself; only its public half ever leaves."""
    if files.device_key.exists():
        _load_device_key(files)
        return Outcome("device key", "unchanged", str(files.device_key))
    if not dry_run:
        files.device_key.parent.mkdir(parents=True, exist_ok=True)
        files.device_key.parent.chmod(0o700)
        key = ed25519.Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        write_private(files.device_key, pem, exclusive=True)
    return Outcome("device key", _verb(dry_run, "created"), f"Ed25519, {files.device_key}")


def _load_device_key(files: TerminalFiles) -> ed25519.Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(files.device_key.read_bytes(), None)
    except (OSError, ValueError, TypeError) as error:
        raise ProvisionError(f"{files.device_key} is not a readable private key: {error}") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ProvisionError(f"{files.device_key} is not an Ed25519 key")
    return key


def certificate_request(files: TerminalFiles, terminal_id: str) -> bytes:
    """PKCS#10 request, CN = terminal id, signed by the device key (Ed25519: same bytes every time)."""
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, terminal_id)]))
        .sign(_load_device_key(files), None)
    )
    return request.public_bytes(serialization.Encoding.PEM)


def ensure_certificate(plan: Plan) -> Outcome:
    """Install the certificate given, keep a current one, or write a request for `station-hub enroll`."""
    files, dry_run, terminal = plan.files, plan.request.dry_run, plan.request.terminal_id
    step = "certificate"
    if plan.certificate_pem is not None:
        if not _write_if_changed(files.device_certificate, plan.certificate_pem, dry_run):
            return Outcome(step, "unchanged", f"CN={terminal}, issued by the station CA for this terminal's key")
        if not dry_run:
            files.certificate_request.unlink(missing_ok=True)
        return Outcome(step, _verb(dry_run, "installed"), f"CN={terminal}, issued by the station CA for this key")
    if dry_run and not files.device_key.exists():
        return Outcome(step, "would request", f"write {files.certificate_request} for `station-hub enroll`")
    key = _load_device_key(files).public_key()
    problem = "none installed"
    if files.device_certificate.exists():
        problem = certificate_problem(files.device_certificate.read_bytes(), plan.package, terminal, key) or ""
        if not problem:
            certificate = x509.load_pem_x509_certificate(files.device_certificate.read_bytes())
            left = (certificate.not_valid_after_utc - dt.datetime.now(dt.UTC)).days
            if left > RENEW_BEFORE_DAYS:
                return Outcome(step, "unchanged", f"CN={terminal}, valid against the station CA for {left} more days")
            plan.notes.append(f"the device certificate expires in {left} days: enrol {files.certificate_request}")
            _write_if_changed(files.certificate_request, certificate_request(files, terminal), dry_run)
            return Outcome(step, "unchanged", f"CN={terminal}, {left} days left; renewal request written")
    _write_if_changed(files.certificate_request, certificate_request(files, terminal), dry_run)
    return Outcome(step, _verb(dry_run, "waiting"), f"{problem}; request written to {files.certificate_request}")


def ensure_station_trust(plan: Plan) -> Outcome:
    """The station CA (to check the broker), its CRL and the roll's public token key."""
    files, dry_run = plan.files, plan.request.dry_run
    changed = [
        name
        for name, path, data in (
            ("station CA", files.ca_certificate, plan.package.station_ca_pem),
            ("CRL", files.crl, plan.package.station_crl_pem),
            ("roll key", files.token_key, plan.package.roll_token_key_pem),
        )
        if _write_if_changed(path, data, dry_run)
    ]
    if not changed:
        return Outcome("station trust", "unchanged", f"station CA, CRL and roll key of {plan.package.station_id}")
    return Outcome("station trust", _verb(dry_run, "updated"), ", ".join(changed))


def _card_lists(package: StationPackage) -> tuple[list[str], list[str]]:
    return [f"card/{n}" for n in sorted(package.trust_anchors)], [f"card/{n}" for n in sorted(package.crls)]


def ensure_card_trust(plan: Plan) -> Outcome:
    """The JPKI issuing CAs and CRLs the booth checks cards with (from the station package)."""
    files, dry_run = plan.files, plan.request.dry_run
    wanted = {**plan.package.trust_anchors, **plan.package.crls}
    changed = [name for name, data in sorted(wanted.items()) if _write_if_changed(files.card_dir / name, data, dry_run)]
    old_card = (plan.existing or {}).get("card") or {}
    old = {Path(p).name for key in ("trust_anchors", "crls") for p in old_card.get(key, []) if isinstance(p, str)}
    stale = sorted(name for name in old - set(wanted) if (files.card_dir / name).is_file())
    if not dry_run:
        for name in stale:
            (files.card_dir / name).unlink()
    detail = (
        f"{len(plan.package.trust_anchors)} JPKI CA(s), {len(plan.package.crls)} CRL(s), mode {plan.package.card_mode}"
    )
    if not changed and not stale:
        return Outcome("card trust", "unchanged", detail)
    return Outcome("card trust", _verb(dry_run, "updated"), f"{detail}; wrote {', '.join(changed) or 'nothing'}"
                   + (f", removed {', '.join(stale)}" if stale else ""))  # fmt: skip


def ensure_election_package(plan: Plan) -> Outcome:
    files, dry_run = plan.files, plan.request.dry_run
    wanted = plan.election_hash
    target = files.election_package
    if target.exists() and election_package_hash(target) == wanted:
        return Outcome("election package", "unchanged", f"sha256 {wanted[:16]}…")
    action = "updated" if target.exists() else "created"
    if not dry_run:
        staging = target.with_name("election.tmp")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for name, data in plan.election_files.items():
            (staging / name).write_bytes(data)
        if election_package_hash(staging) != wanted:
            raise ProvisionError("copy of the election package does not match the original; nothing replaced")
        old = target.with_name("election.old")
        shutil.rmtree(old, ignore_errors=True)
        if target.exists():
            target.rename(old)
        staging.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    return Outcome("election package", _verb(dry_run, action), f"sha256 {wanted[:16]}…")


def ensure_outbox(plan: Plan) -> Outcome | None:
    """An empty outbox of the previous election (or identity) is moved aside, never deleted."""
    if plan.archive_outbox is None:
        return None
    folder = plan.archive_outbox.parent
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    target = folder.with_name(f"{folder.name}.before-{stamp}")
    if not plan.request.dry_run:
        folder.rename(target)
    return Outcome(
        "outbox", _verb(plan.request.dry_run, "archived"), f"empty outbox of the previous election → {target}"
    )


def desired_config(plan: Plan) -> dict[str, Any]:
    config = dict(plan.existing or {})
    anchors, crls = _card_lists(plan.package)
    card = dict(config.get("card") or {})  # a site's other card settings are kept
    card |= {"mode": plan.package.card_mode, "trust_anchors": anchors, "crls": crls}
    config |= {
        "schema": CONFIG_SCHEMA,
        "station": plan.package.station_id,
        "terminal": plan.request.terminal_id,
        "broker": plan.broker,
        "companion_port": plan.companion_port,
        "reader": plan.reader,
        "election": {"path": plan.files.election_package.name, "sha256": plan.election_hash},
        "companion_firmware_sha256": listing_hash(
            {name: path.read_bytes() for name, path in firmware_sources().items()}
        ),
        "card": card,
        "token_key": "device/token.pem",
    }
    return config


def ensure_config(plan: Plan) -> Outcome:
    files, dry_run = plan.files, plan.request.dry_run
    data = (json.dumps(desired_config(plan), indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()
    existed = files.config.exists()
    if not _write_if_changed(files.config, data, dry_run):
        return Outcome("configuration", "unchanged", str(files.config))
    kept = sorted(set(plan.existing or {}) - OWNED_KEYS)
    action = "updated" if existed else "created"
    detail = str(files.config) + (f" (site settings kept: {', '.join(kept)})" if kept else "")
    return Outcome("configuration", _verb(dry_run, action), detail)


# --- companion firmware -------------------------------------------------------------------


@dataclass(frozen=True)
class Mpremote:
    """The real mpremote command line, against one board."""

    port: str
    executable: str

    def run(self, *args: str) -> str:
        command = [self.executable, "connect", self.port, *args]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=MPREMOTE_TIMEOUT, check=False)
        except subprocess.TimeoutExpired as error:
            raise ProvisionError(f"mpremote did not finish within {MPREMOTE_TIMEOUT} s") from error
        if result.returncode != 0:
            message = (result.stderr.strip() or result.stdout.strip() or "no output").splitlines()
            raise ProvisionError(f"mpremote {' '.join(args[:2])} failed: {message[-1]}")
        return result.stdout

    def listing(self) -> set[str]:
        lines = self.run("fs", "ls", ":").splitlines()[1:]
        return {line.split(maxsplit=1)[1] for line in lines if len(line.split(maxsplit=1)) == 2}

    def sha256(self, names: Sequence[str]) -> dict[str, str]:
        if not names:
            return {}
        lines = self.run("fs", "sha256sum", *(f":{name}" for name in names)).splitlines()
        hashes_by_name: dict[str, str] = {}
        for header, digest in zip(lines[0::2], lines[1::2], strict=False):
            hashes_by_name[header.removeprefix("sha256sum :")] = digest.strip()
        return hashes_by_name


def _find_mpremote() -> str:
    beside = Path(sys.executable).parent / "mpremote"
    found = str(beside) if beside.exists() else shutil.which("mpremote")
    if found is None:
        raise ProvisionError("mpremote is not installed (pip install mpremote)")
    return found


def flash_firmware(port: str, dry_run: bool, mpremote: Mpremote | None = None) -> Outcome:
    sources = firmware_sources()
    wanted = {name: hashlib.sha256(path.read_bytes()).hexdigest() for name, path in sources.items()}
    step = "companion firmware"
    if dry_run:
        return Outcome(step, "would check", f"board {port}: copy and verify files that differ")
    board = mpremote or Mpremote(port, _find_mpremote())
    present = board.listing()
    current = board.sha256([name for name in sorted(wanted) if name in present])
    changed = sorted(name for name in wanted if current.get(name) != wanted[name])
    if not changed:
        board.run("reset")  # our connection stopped the firmware: start it again
        return Outcome(step, "unchanged", f"{len(wanted)} files verified by sha256 on {port}")
    board.run("exec", _CLEAN_STAGED)
    try:
        copies: list[str] = []
        for name in changed:
            copies += ["fs", "cp", str(sources[name]), f":{name}.new", "+"]
        board.run(*copies[:-1])
        staged = board.sha256([f"{name}.new" for name in changed])
        bad = [name for name in changed if staged.get(f"{name}.new") != wanted[name]]
        if bad:
            raise ProvisionError(f"read-back hash differs for {', '.join(bad)}")
    except ProvisionError as error:
        raise ProvisionError(
            f"flashing stopped while copying firmware ({error}). No firmware file was replaced:"
            " the board keeps its previous firmware. Re-run flash.sh to try again."
        ) from error
    order = sorted(changed, key=lambda name: name == "main.py")  # main.py last
    board.run("exec", _SWAP_STAGED % repr(order))
    final = board.sha256(sorted(wanted))
    if final != wanted:
        raise ProvisionError("firmware files on the board do not match after the switch; re-run flash.sh")
    board.run("reset")
    action = "updated" if present & set(wanted) else "created"
    return Outcome(step, action, f"copied {', '.join(changed)}; read back by sha256 on {port}")


_CLEAN_STAGED = "import os\nfor n in os.listdir():\n if n.endswith('.new'): os.remove(n)\n"
_SWAP_STAGED = "import os\nfor n in %s:\n os.rename(n + '.new', n)\n"


# --- the whole run ------------------------------------------------------------------------


@dataclass(frozen=True)
class ProvisionResult:
    outcomes: tuple[Outcome, ...]
    notes: tuple[str, ...]
    waiting_for_certificate: bool

    @property
    def changed(self) -> bool:
        return any(outcome.changed for outcome in self.outcomes)


def provision(request: ProvisionRequest, progress: Callable[[str], None] = lambda _line: None) -> ProvisionResult:
    """Check every input, then apply each step (reporting it through ``progress``)."""
    progress("checking the station package, the terminal id, the data directory, the certificate and the board")
    plan = check_inputs(request)
    progress(f"inputs checked: station {plan.package.station_id}, terminal {request.terminal_id}, "
             f"package sha256 {plan.package.fingerprint()[:16]}…")  # fmt: skip
    steps: list[Callable[[], Outcome | None]] = [
        lambda: ensure_device_key(plan.files, request.dry_run),
        lambda: ensure_certificate(plan),
        lambda: ensure_station_trust(plan),
        lambda: ensure_card_trust(plan),
        lambda: ensure_outbox(plan),
        lambda: ensure_election_package(plan),
        lambda: ensure_config(plan),
    ]
    if plan.companion_port is not None:
        port = plan.companion_port
        steps.append(lambda: flash_firmware(port, request.dry_run, plan.mpremote))
    if not request.dry_run:
        plan.files.root.mkdir(parents=True, exist_ok=True)
    outcomes: list[Outcome] = []
    for number, step in enumerate(steps, start=1):
        outcome = step()
        if outcome is not None:
            outcomes.append(outcome)
            progress(f"[{number}/{len(steps)}] {outcome.line()}")
    waiting = any(o.step == "certificate" and o.action.endswith("waiting") for o in outcomes)
    return ProvisionResult(tuple(outcomes), tuple(plan.notes), waiting)


def _reader(args: argparse.Namespace) -> ReaderSettings | None:
    if args.reader is None:
        if args.reader_port or args.reader_name or args.reader_address:
            raise ProvisionError("--reader-port/--reader-name/--reader-address go with --reader KIND")
        return None
    address = int(args.reader_address, 0) if args.reader_address else None
    return ReaderSettings(args.reader, args.reader_port, args.reader_name, address)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flash.sh", description="Provision one booth terminal.")
    parser.add_argument("--package", type=Path, required=True, help="station package (station-hub export-package)")
    parser.add_argument("--terminal", required=True, help="terminal id, e.g. T01")
    parser.add_argument("--data-dir", type=Path, required=True, help="terminal data directory")
    parser.add_argument("--certificate", type=Path, help="certificate from `station-hub enroll`")
    parser.add_argument("--board", help="companion board serial port")
    parser.add_argument("--no-board", action="store_true", help="training only: no companion board")
    parser.add_argument("--reader", choices=READER_KINDS, help="card reader kind")
    parser.add_argument("--reader-port", help="pn532-uart: serial port")
    parser.add_argument("--reader-name", help="pcsc: reader name")
    parser.add_argument("--reader-address", help="pn532-i2c: I2C address (default from the pin map)")
    parser.add_argument("--broker", help="override the package's broker host:port")
    parser.add_argument("--dry-run", action="store_true", help="print, change nothing")
    args = parser.parse_args(argv)
    try:
        request = ProvisionRequest(
            terminal_id=args.terminal,
            package=args.package,
            data_dir=args.data_dir,
            board_port=args.board,
            no_board=args.no_board,
            reader=_reader(args),
            certificate=args.certificate,
            broker=args.broker,
            dry_run=args.dry_run,
        )
        result = provision(request, lambda line: print(f"flash: {line}", flush=True))
    except (ProvisionError, PkiError, ValueError) as error:
        print(f"flash: FAILED: {error}", file=sys.stderr)
        return 1
    for note in result.notes:
        print(f"flash: WARNING: {note}", file=sys.stderr)
    changed = [outcome for outcome in result.outcomes if outcome.changed]
    if request.dry_run:
        print("flash: dry run — nothing was written and the board was not touched")
    elif changed:
        print(f"flash: {len(changed)} step(s) changed this terminal")
    else:
        print("flash: nothing changed — this terminal was already provisioned")
    if result.waiting_for_certificate:
        files = TerminalFiles(request.data_dir)
        print(
            f"flash: WAITING FOR THE CERTIFICATE: take {files.certificate_request} to the hub, run\n"
            f"flash:   station-hub enroll HUB_DIR request.csr {request.terminal_id}.pem\n"
            f"flash: and run flash.sh again with --certificate {request.terminal_id}.pem"
        )
        return 0 if request.dry_run else EXIT_WAITING_FOR_CERTIFICATE
    return 0


if __name__ == "__main__":
    sys.exit(main())
