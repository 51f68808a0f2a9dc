"""Provision one booth terminal: the Python behind `flash.sh` (see docs/provisioning.md).

Every step first looks at what is already there and only then acts, so running it twice
changes nothing the second time and says so. `--dry-run` reports what each step would do
without writing anything or touching the companion board.

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
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID

from appliance.drivers.companion import firmware_sources, listing_hash
from infra.pki import (
    CRL_FILE,
    PkiError,
    Role,
    StationCA,
    certificate_pem,
    load_certificate,
    verify_certificate,
    write_atomically,
)

CONFIG_SCHEMA = "polling-station/terminal-config/1"
RENEW_BEFORE_DAYS = 30
MPREMOTE_TIMEOUT = 60


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
    def ca_certificate(self) -> Path:
        return self.root / "device" / "ca.pem"

    @property
    def crl(self) -> Path:
        return self.root / "device" / "crl.pem"

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
    action: str  # created, updated, unchanged, or "would ..." in a dry run
    detail: str

    @property
    def changed(self) -> bool:
        return self.action != "unchanged"

    def line(self) -> str:
        return f"{self.step}: {self.action} — {self.detail}"


@dataclass(frozen=True)
class ProvisionRequest:
    terminal_id: str
    ca_dir: Path
    election: Path
    data_dir: Path
    board_port: str | None
    broker: str
    dry_run: bool = False


def _verb(dry_run: bool, action: str) -> str:
    return f"would {action.removesuffix('d')}" if dry_run else action


# --- device identity ----------------------------------------------------------------------


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
        temp = files.device_key.with_name("device.key.tmp")
        temp.touch(mode=0o600)
        temp.write_bytes(pem)
        temp.replace(files.device_key)
    return Outcome("device key", _verb(dry_run, "created"), f"Ed25519, {files.device_key}")


def _load_device_key(files: TerminalFiles) -> ed25519.Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(files.device_key.read_bytes(), None)
    except (OSError, ValueError, TypeError) as error:
        raise ProvisionError(f"{files.device_key} is not a readable private key: {error}") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ProvisionError(f"{files.device_key} is not an Ed25519 key")
    return key


def _certificate_is_current(
    files: TerminalFiles, ca: StationCA, terminal_id: str, key: ed25519.Ed25519PrivateKey
) -> bool:
    if not files.device_certificate.exists():
        return False
    try:
        certificate = load_certificate(files.device_certificate)
        verify_certificate(certificate, ca.certificate, crl=ca.crl(), role=Role.TERMINAL)
    except PkiError:
        return False
    raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw
    same_key = certificate.public_key().public_bytes(*raw) == key.public_key().public_bytes(*raw)
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    remaining = certificate.not_valid_after_utc - dt.datetime.now(dt.UTC)
    same_ca = files.ca_certificate.exists() and (files.ca_certificate.read_bytes() == certificate_pem(ca.certificate))
    return same_key and same_ca and names[0].value == terminal_id and (remaining.days > RENEW_BEFORE_DAYS)


def ensure_certificate(files: TerminalFiles, ca: StationCA, terminal_id: str, dry_run: bool) -> Outcome:
    """A terminal certificate from the station CA, issued for a CSR signed on the device."""
    step = "certificate"
    if dry_run and not files.device_key.exists():
        return Outcome(step, "would create", f"CN={terminal_id} from {ca.directory}")
    key = _load_device_key(files)
    if _certificate_is_current(files, ca, terminal_id, key):
        if _write_if_changed(files.crl, _ca_crl(ca), dry_run):
            return Outcome(step, _verb(dry_run, "updated"), "revocation list from the station CA")
        return Outcome(step, "unchanged", f"CN={terminal_id}, valid against the station CA")
    action = "updated" if files.device_certificate.exists() else "created"
    if not dry_run:
        request = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, terminal_id)]))
            .sign(key, None)
        )
        certificate = ca.issue_for_csr(request.public_bytes(serialization.Encoding.PEM), Role.TERMINAL)
        write_atomically(files.device_certificate, certificate_pem(certificate))
        write_atomically(files.ca_certificate, certificate_pem(ca.certificate))
        write_atomically(files.crl, _ca_crl(ca))
    return Outcome(step, _verb(dry_run, action), f"CN={terminal_id}, role terminal")


def _ca_crl(ca: StationCA) -> bytes:
    """The CA's published revocation list (copied, not re-signed, so reruns change nothing)."""
    path = ca.directory / CRL_FILE
    if not path.exists():
        ca.write_crl()
    return path.read_bytes()


def _write_if_changed(path: Path, data: bytes, dry_run: bool) -> bool:
    if path.exists() and path.read_bytes() == data:
        return False
    if not dry_run:
        write_atomically(path, data)
    return True


# --- election package and configuration ---------------------------------------------------


def ensure_election_package(files: TerminalFiles, source: Path, dry_run: bool) -> Outcome:
    if not source.exists():
        raise ProvisionError(f"election package {source} does not exist")
    wanted = election_package_hash(source)
    target = files.election_package
    if target.exists() and election_package_hash(target) == wanted:
        return Outcome("election package", "unchanged", f"sha256 {wanted[:16]}…")
    action = "updated" if target.exists() else "created"
    if not dry_run:
        staging = target.with_name("election.tmp")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        if source.is_file():
            shutil.copyfile(source, staging / source.name)
        else:
            shutil.copytree(source, staging, dirs_exist_ok=True)
        if election_package_hash(staging) != wanted:
            raise ProvisionError(f"copy of {source} does not match the original; nothing replaced")
        old = target.with_name("election.old")
        shutil.rmtree(old, ignore_errors=True)
        if target.exists():
            target.rename(old)
        staging.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    return Outcome("election package", _verb(dry_run, action), f"sha256 {wanted[:16]}…")


def ensure_config(files: TerminalFiles, request: ProvisionRequest, ca: StationCA) -> Outcome:
    config = {
        "schema": CONFIG_SCHEMA,
        "station": ca.station_id,
        "terminal": request.terminal_id,
        "broker": request.broker,
        "companion_port": request.board_port,
        "election": {
            "path": files.election_package.name,
            "sha256": election_package_hash(request.election),
        },
        "companion_firmware_sha256": listing_hash(
            {name: path.read_bytes() for name, path in firmware_sources().items()}
        ),
    }
    data = (json.dumps(config, indent=2, sort_keys=True) + "\n").encode()
    existed = files.config.exists()
    if not _write_if_changed(files.config, data, request.dry_run):
        return Outcome("configuration", "unchanged", str(files.config))
    action = "updated" if existed else "created"
    return Outcome("configuration", _verb(request.dry_run, action), str(files.config))


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


def provision(request: ProvisionRequest) -> list[Outcome]:
    files = TerminalFiles(request.data_dir)
    try:
        ca = StationCA.load(request.ca_dir)
    except PkiError as error:
        raise ProvisionError(f"station CA: {error}") from error
    if not request.dry_run:
        files.root.mkdir(parents=True, exist_ok=True)
    outcomes = [
        ensure_device_key(files, request.dry_run),
        ensure_certificate(files, ca, request.terminal_id, request.dry_run),
        ensure_election_package(files, request.election, request.dry_run),
        ensure_config(files, request, ca),
    ]
    if request.board_port is not None:
        outcomes.append(flash_firmware(request.board_port, request.dry_run))
    return outcomes


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flash.sh", description="Provision one booth terminal.")
    parser.add_argument("--terminal", required=True, help="terminal id, e.g. T01")
    parser.add_argument("--ca", type=Path, required=True, help="station CA directory")
    parser.add_argument("--election", type=Path, required=True, help="election package")
    parser.add_argument("--data-dir", type=Path, required=True, help="terminal data directory")
    parser.add_argument("--board", help="companion board serial port")
    parser.add_argument("--broker", default="station-hub.local:8883", help="MQTT broker")
    parser.add_argument("--dry-run", action="store_true", help="print, change nothing")
    args = parser.parse_args(argv)
    request = ProvisionRequest(
        terminal_id=args.terminal,
        ca_dir=args.ca,
        election=args.election,
        data_dir=args.data_dir,
        board_port=args.board,
        broker=args.broker,
        dry_run=args.dry_run,
    )
    try:
        outcomes = provision(request)
    except (ProvisionError, PkiError) as error:
        print(f"flash: FAILED: {error}", file=sys.stderr)
        return 1
    for outcome in outcomes:
        print(f"flash: {outcome.line()}")
    changed = [outcome for outcome in outcomes if outcome.changed]
    if request.dry_run:
        print("flash: dry run — nothing was written and the board was not touched")
    elif changed:
        print(f"flash: {len(changed)} step(s) changed this terminal")
    else:
        print("flash: nothing changed — this terminal was already provisioned")
    return 0


if __name__ == "__main__":
    sys.exit(main())
