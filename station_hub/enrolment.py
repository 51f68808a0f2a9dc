"""The hub's half of provisioning a terminal (docs/provisioning.md): export the **station
package** the terminals are provisioned from, and **enrol** a terminal by certifying the key it
made itself.

File exchange, like station_hub/registration.py: the hub writes the package
(``station-hub export-package``), ``flash.sh`` consumes it on the terminal and writes a PKCS#10
request signed by the terminal's own key; ``station-hub enroll`` checks that request and has
the station CA issue the certificate, which the technician takes back to ``flash.sh
--certificate``. No CA key ever reaches a terminal and no terminal key is ever made or kept on
the hub. The ledger and the roll trust the new certificate at once (``DeviceDirectory``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import click
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID

from infra.errors import SiteError
from infra.files import write_atomically
from infra.pki import PkiError, Role, StationCA, certificate_pem, common_name, load_certificate, role_of
from protocol.errors import Refusal
from protocol.station_package import CARD_MODES, StationPackage
from station_hub.cli_common import STATION_DIR, open_station
from station_hub.station import DeviceDirectory, Station

MAX_REQUEST_BYTES = 16 * 1024
REUSE_IF_DAYS_LEFT = 30
"""``enroll`` twice with the same request gives the same certificate while it has this much left."""


def export_package(station: Station, card_mode: str = "auth") -> StationPackage:
    """The station package for this station's terminals, checked as a terminal will check it."""
    if card_mode not in CARD_MODES:
        raise SiteError(f"card mode: one of {CARD_MODES}")
    anchors = _pem_files(station.jpki_dir / "anchors")
    if not anchors:
        raise SiteError(
            f"{station.jpki_dir / 'anchors'} holds no JPKI CA certificate: the booths could not check any card "
            "(give them at `station-hub init --jpki-ca`)"
        )
    try:
        return StationPackage.build(
            station_id=station.station_id,
            broker_host=station.host,
            broker_port=station.port,
            terminals=tuple(sorted(station.terminals)),
            station_ca_pem=station.ca_file.read_bytes(),
            station_crl_pem=station.crl_file.read_bytes(),
            roll_token_key_pem=station.token_public_file.read_bytes(),
            card_mode=card_mode,
            trust_anchors=anchors,
            crls=_pem_files(station.jpki_dir / "crls"),
            election={name: (station.directory / "election" / name).read_bytes()
                      for name in ("manifest.json", "context.json")},
        )  # fmt: skip
    except OSError as error:
        raise SiteError(f"station {station.station_id}: cannot read {error.filename}: {error.strerror}") from error
    except Refusal as error:
        raise SiteError(f"station {station.station_id}: the package would not load on a terminal: {error}") from error


def _pem_files(folder: Path) -> dict[str, bytes]:
    if not folder.is_dir():
        return {}
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir()) if path.is_file()}


@dataclass(frozen=True)
class Enrolment:
    terminal_id: str
    certificate: x509.Certificate
    reused: bool
    """True: this key already held a current certificate, which is given again."""
    revoked_hub_made: tuple[int, ...]
    """Serials of training certificates whose private key the hub had made (now revoked, key deleted)."""

    @property
    def pem(self) -> bytes:
        return certificate_pem(self.certificate)


def _request(payload: bytes) -> x509.CertificateSigningRequest:
    if len(payload) > MAX_REQUEST_BYTES:
        raise SiteError(f"the certificate request is {len(payload)} bytes; a terminal's is well under 1 KiB")
    try:
        request = x509.load_pem_x509_csr(payload)
    except ValueError:
        raise SiteError("not a PEM certificate request (flash.sh writes DATA/device/request.csr)") from None
    if not request.is_signature_valid:
        raise SiteError("the certificate request's signature does not verify: it was not made with its key")
    if not isinstance(request.public_key(), ed25519.Ed25519PublicKey):
        raise SiteError("a terminal's request carries an Ed25519 key")
    names = request.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(names) != 1 or len(request.subject) != 1:
        raise SiteError("the request's subject must be exactly CN=<terminal id>")
    return request


def enroll(station: Station, request_pem: bytes) -> Enrolment:
    """Certify the terminal key in ``request_pem`` (CN = a terminal of this station, role terminal).

    Re-enrolling the same key while its certificate is current gives that certificate again.
    A training certificate whose private key the hub made (``keys/<id>.key``) is revoked and the
    key deleted, so that after enrolment no terminal key is left on the hub.
    """
    request = _request(request_pem)
    terminal = str(request.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)
    if terminal not in station.terminals:
        raise SiteError(
            f"{terminal!r} is not a terminal of station {station.station_id} "
            f"(terminals: {', '.join(station.terminals)})"
        )
    try:
        ca = StationCA.load(station.directory / "ca")
    except PkiError as error:
        raise SiteError(f"station CA: {error}") from error
    key = request.public_key()
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    hub_made = _hub_made_certificate(station, terminal)  # read before certs/<id>.pem is replaced
    current = _current_certificate(station, ca, terminal, raw)
    reused = current is not None
    if current is None:
        try:
            current = ca.issue_for_csr(request_pem, Role.TERMINAL)
        except PkiError as error:
            raise SiteError(str(error)) from error
        serial_file = DeviceDirectory.issued_dir(station, terminal) / f"{current.serial_number:x}.pem"
        write_atomically(serial_file, certificate_pem(current))
        write_atomically(station.cert_file(terminal), certificate_pem(current))  # the latest, by CN
    revoked = _retire(station, ca, terminal, hub_made)
    return Enrolment(terminal, current, reused, revoked)


def _current_certificate(station: Station, ca: StationCA, terminal: str, raw_key: bytes) -> x509.Certificate | None:
    """A certificate already issued for this key with enough time left, if any (idempotent enrol)."""
    folder = DeviceDirectory.issued_dir(station, terminal)
    if not folder.is_dir():
        return None
    revoked = {record.serial for record in ca.issued() if record.revoked_at is not None}
    horizon = dt.datetime.now(dt.UTC) + dt.timedelta(days=REUSE_IF_DAYS_LEFT)
    for path in sorted(folder.glob("*.pem")):
        try:
            certificate = load_certificate(path)
            key = certificate.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            usable = certificate.serial_number not in revoked and certificate.not_valid_after_utc > horizon
            ours = common_name(certificate) == terminal and role_of(certificate) is Role.TERMINAL
            if key == raw_key and usable and ours:
                return certificate
        except (PkiError, ValueError):
            continue
    return None


def _hub_made_certificate(station: Station, terminal: str) -> x509.Certificate | None:
    """A training certificate whose private key the hub made (``keys/<id>.key``), if any."""
    if not station.key_file(terminal).exists() or not station.cert_file(terminal).exists():
        return None
    try:
        certificate = load_certificate(station.cert_file(terminal))
        return certificate if role_of(certificate) is Role.TERMINAL else None
    except PkiError as error:
        raise SiteError(f"cannot read the hub-made certificate of {terminal}: {error}") from error


def _retire(station: Station, ca: StationCA, terminal: str, hub_made: x509.Certificate | None) -> tuple[int, ...]:
    """Revoke the hub-made training certificate and delete its key: no terminal key stays on the hub."""
    if hub_made is None:
        return ()
    serials = []
    if any(r.serial == hub_made.serial_number and r.revoked_at is None for r in ca.issued()):
        ca.revoke(hub_made.serial_number)
        serials.append(hub_made.serial_number)
    station.key_file(terminal).unlink(missing_ok=True)
    return tuple(serials)


def write_package(station: Station, out: Path, card_mode: str = "auth") -> StationPackage:
    package = export_package(station, card_mode)
    write_atomically(out, package.encode())
    return package


# --- the `station-hub export-package` and `station-hub enroll` commands -------------------
# (registered by station_hub/cli.py; kept here so that the enrolment path lives in one module)


@click.command(
    "export-package",
    help="Write the station package for this station's terminals to OUT: election package, JPKI "
    "trust anchors and CRLs, roll public key, station CA and CRL, broker address, terminal ids "
    "(no private key). flash.sh --package consumes it (docs/provisioning.md).",
)
@STATION_DIR
@click.argument("out", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--card-mode", type=click.Choice(CARD_MODES), default="auth", show_default=True,
              help="Which JPKI key the booths use.")  # fmt: skip
def export_package_command(directory: Path, out: Path, card_mode: str) -> None:
    try:
        package = write_package(open_station(directory), out, card_mode)
    except SiteError as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"station package of {package.station_id} written to {out}: terminals {', '.join(package.terminals)}, "
               f"broker {package.broker}, sha256 {package.fingerprint()}")  # fmt: skip


@click.command(
    "enroll",
    help="Enrol a terminal: check its certificate REQUEST (written by flash.sh on the terminal, "
    "DATA/device/request.csr) and write the certificate the station CA issues to OUT. The "
    "ledger and the roll accept it at once, without a restart.",
)
@STATION_DIR
@click.argument("request", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.argument("out", type=click.Path(path_type=Path, dir_okay=False))
def enroll_command(directory: Path, request: Path, out: Path) -> None:
    try:
        enrolment = enroll(open_station(directory), request.read_bytes())
    except SiteError as error:
        raise click.ClickException(str(error)) from error
    write_atomically(out, enrolment.pem)
    if enrolment.revoked_hub_made:
        click.echo(f"revoked the training certificate of {enrolment.terminal_id} whose key the hub had made, "
                   "and deleted that key", err=True)  # fmt: skip
    state = "already enrolled with this key; the same certificate" if enrolment.reused else "certificate"
    fingerprint = enrolment.certificate.fingerprint(hashes.SHA256()).hex()
    click.echo(f"{enrolment.terminal_id}: {state} written to {out} (serial {enrolment.certificate.serial_number:x}, "
               f"sha256 {fingerprint}); install it with flash.sh --certificate")  # fmt: skip


COMMANDS = (export_package_command, enroll_command)
