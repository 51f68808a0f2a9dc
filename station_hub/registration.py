"""The hub's half of joining the central office: write the station's registration, and install
the link grant the centre sends back (docs/gateway.md, "Registering a station").

The hub makes its own key for the central broker and sends only a certificate request; the
centre never holds a station's private key.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID

from election.encoding import canonical_bytes
from election.errors import FormatError
from election.stations import StationKeys
from infra.errors import SiteError
from infra.files import private_pem, write_atomically, write_private
from infra.link import LINK_FILE, LINK_VERSION, CentralLink
from infra.pki import PkiError, Role, StationCA, load_certificate, role_of, write_certificate
from protocol.registration import LinkGrant, StationRegistration
from protocol.topics import FORWARDER_NAME
from station_hub.station import DeviceDirectory, Station


def _link_key(station: Station) -> ed25519.Ed25519PrivateKey:
    """The hub's key for the central broker, made here once and kept in ``central/hub.key``."""
    link = CentralLink.directory_of(station.directory)
    path = link / "hub.key"
    if not path.exists():
        write_private(path, private_pem(ed25519.Ed25519PrivateKey.generate()))
    key = serialization.load_pem_private_key(path.read_bytes(), None)
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise SiteError(f"{path} is not an Ed25519 key")
    return key


def registration(station: Station) -> StationRegistration:
    """The station's public parts and a certificate request for its central link."""
    ledger_key = station.certificate("ledger").public_key()
    if not isinstance(ledger_key, ed25519.Ed25519PublicKey):
        raise SiteError(f"station {station.station_id}: the ledger certificate does not carry an Ed25519 key")
    directory = DeviceDirectory(station)
    devices, problems = {}, []
    for terminal in station.terminals:
        key = directory.lookup(terminal)
        if isinstance(key, str):
            problems.append(f"terminal {terminal}: {key}")
        else:
            devices[terminal] = key
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, station.station_id)]))
        .sign(_link_key(station), None)
    )
    return StationRegistration(
        StationKeys(station.station_id, ledger_key, station.token_public_key()),
        station.election().manifest.base_hash,
        devices,
        tuple(problems),
        request.public_bytes(serialization.Encoding.PEM),
    )


def install_link(station: Station, payload: bytes) -> LinkGrant:
    """Check and install the centre's grant; also certify the local forwarder identity."""
    try:
        grant = LinkGrant.decode(payload)
        certificate = x509.load_pem_x509_certificate(grant.certificate_pem)
        x509.load_pem_x509_certificate(grant.ca_pem)
    except (FormatError, ValueError) as error:
        raise SiteError(f"link grant: {error}") from error
    if grant.station_id != station.station_id:
        raise SiteError(f"link grant is for station {grant.station_id}, not {station.station_id}")
    if certificate.public_key() != _link_key(station).public_key():
        raise SiteError("link grant: the certificate is not for this hub's central-link key")
    link = CentralLink.directory_of(station.directory)
    write_atomically(link / "ca.pem", grant.ca_pem)
    write_atomically(link / "hub.pem", grant.certificate_pem)
    document = {"version": LINK_VERSION, "station_id": grant.station_id, "host": grant.host, "port": grant.port}
    write_atomically(link / LINK_FILE, canonical_bytes(document) + b"\n")
    _certify_forwarder(station)
    return grant


def _certify_forwarder(station: Station) -> None:
    """The forwarder's station certificate, role ``forwarder`` (it reads the ledger's statements
    and nothing else). A forwarder certified before roles were checked (role ``ledger``) has
    that certificate revoked and gets a new one: one name, one role, and no second ledger."""
    path = station.cert_file(FORWARDER_NAME)
    try:
        ca = StationCA.load(station.directory / "ca")
        if path.exists():
            current = load_certificate(path)
            try:
                if role_of(current) is Role.FORWARDER:
                    return
            except PkiError:
                pass  # no role at all: replace it too
            if current.serial_number in {record.serial for record in ca.issued() if record.revoked_at is None}:
                ca.revoke(current.serial_number)
        key = ed25519.Ed25519PrivateKey.generate()
        certificate = ca.issue(key.public_key(), FORWARDER_NAME, Role.FORWARDER)
    except PkiError as error:
        raise SiteError(str(error)) from error
    write_private(station.key_file(FORWARDER_NAME), private_pem(key))
    write_certificate(path, certificate)
