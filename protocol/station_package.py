"""The **station package**: everything a booth terminal needs from its station hub, in one file
the technician carries from the hub to the terminal (``station-hub export-package`` writes it,
``flash.sh --package`` consumes it; docs/provisioning.md).

It holds only public material: the election package (manifest and context, byte for byte), the
JPKI trust anchors and CRLs the booth checks cards with, the roll's public token key, the
station CA certificate and its current CRL, the broker address and the terminal ids the station
knows. No private key of anyone, no roll salt. A terminal takes its identity from its own key
and a certificate the station CA issues for its request (``station-hub enroll``).

The document is canonical JSON, parsed strictly and totally here: any bytes give a
:class:`StationPackage` or :class:`protocol.errors.Refusal`, never another exception.
Non-canonical input, ``"version": true``, unknown or missing fields, a CRL not signed by the
station CA, an election context for another manifest, file names with a path in them are
refused. Format (version 1)::

    {"version": 1, "type": "station_package", "station_id": "station-12",
     "broker": {"host": "192.168.50.1", "port": 8883},
     "terminals": ["T01", ...],                       # sorted, unique
     "station_ca": "<PEM>", "station_crl": "<PEM>",
     "roll_token_key": "<PEM, RSA public key>",
     "card": {"mode": "auth" | "sign",
              "trust_anchors": {"<file>.pem": "<PEM>", ...},   # at least one
              "crls": {"<file>.pem": "<PEM>", ...}},
     "election": {"manifest.json": "<base64>", "context.json": "<base64>"}}
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from election.context import ElectionContext
from election.encoding import canonical_bytes, check_version, parse_json, sha256, strict_int
from election.errors import FormatError
from election.ids import check_device_id, check_station_id
from election.manifest import Manifest
from protocol.errors import Reason, Refusal

PACKAGE_VERSION = 1
PACKAGE_TYPE = "station_package"
MAX_PACKAGE_BYTES = 64 * 1024 * 1024
"""A JPKI CRL can be large; the package is carried on a stick, not sent over MQTT."""
MAX_TERMINALS = 1000
MAX_CARD_FILES = 16
MAX_CERTIFICATE_PEM = 16 * 1024
MAX_CRL_PEM = 48 * 1024 * 1024
CARD_MODES = ("auth", "sign")
ELECTION_FILES = ("context.json", "manifest.json")
_FIELDS = {"version", "type", "station_id", "broker", "terminals", "station_ca", "station_crl",
           "roll_token_key", "card", "election"}  # fmt: skip
_FILE_NAME_CHARACTERS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
T = TypeVar("T")


def _pem(value: Any, what: str, limit: int) -> bytes:
    if not isinstance(value, str) or not value.isascii() or not 0 < len(value) <= limit:
        raise FormatError(f"{what}: expected an ASCII PEM text of at most {limit} characters")
    return value.encode("ascii")


def _file_name(name: Any, what: str) -> str:
    if (
        not isinstance(name, str)
        or not 0 < len(name) <= 64
        or not set(name) <= _FILE_NAME_CHARACTERS
        or name.startswith(".")
        or not name.endswith(".pem")
    ):
        raise FormatError(f"{what}: {name!r} must be a plain file name ending in .pem (letters, digits, - _ .)")
    return name


def _host(value: Any, what: str) -> str:
    if not (isinstance(value, str) and 0 < len(value) <= 253 and value.isascii() and value.isprintable()):
        raise FormatError(f"{what}: expected a host name or address")
    if any(c in value for c in " /:@"):
        raise FormatError(f"{what}: a host name or IPv4 address, without port or scheme")
    return value


def _object(value: Any, what: str, limit: int) -> dict[str, Any]:
    if not isinstance(value, dict) or len(value) > limit:
        raise FormatError(f"{what}: expected an object of at most {limit} entries")
    return value


@dataclass(frozen=True, slots=True)
class StationPackage:
    station_id: str
    broker_host: str
    broker_port: int
    terminals: tuple[str, ...]
    station_ca_pem: bytes
    station_crl_pem: bytes
    roll_token_key_pem: bytes
    card_mode: str
    trust_anchors: Mapping[str, bytes]
    """File name → PEM of each JPKI issuing CA certificate."""
    crls: Mapping[str, bytes]
    """File name → PEM of each JPKI CRL."""
    election: Mapping[str, bytes]
    """``manifest.json`` and ``context.json``, the bytes the hub holds."""

    # --- derived views -------------------------------------------------------------------

    @property
    def broker(self) -> str:
        return f"{self.broker_host}:{self.broker_port}"

    @property
    def station_ca(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.station_ca_pem)

    @property
    def station_crl(self) -> x509.CertificateRevocationList:
        return x509.load_pem_x509_crl(self.station_crl_pem)

    @property
    def base_hash(self) -> bytes:
        return Manifest.from_json(parse_json(self.election["manifest.json"])).base_hash

    def fingerprint(self) -> str:
        """sha256 of the encoded package (what the technician compares with the hub's output)."""
        return sha256(self.encode()).hex()

    # --- encoding ------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "version": PACKAGE_VERSION,
            "type": PACKAGE_TYPE,
            "station_id": self.station_id,
            "broker": {"host": self.broker_host, "port": self.broker_port},
            "terminals": sorted(self.terminals),
            "station_ca": self.station_ca_pem.decode("ascii"),
            "station_crl": self.station_crl_pem.decode("ascii"),
            "roll_token_key": self.roll_token_key_pem.decode("ascii"),
            "card": {
                "mode": self.card_mode,
                "trust_anchors": {name: pem.decode("ascii") for name, pem in sorted(self.trust_anchors.items())},
                "crls": {name: pem.decode("ascii") for name, pem in sorted(self.crls.items())},
            },
            "election": {name: base64.b64encode(self.election[name]).decode("ascii") for name in ELECTION_FILES},
        }

    def encode(self) -> bytes:
        return canonical_bytes(self.to_json())

    @classmethod
    def decode(cls, payload: bytes) -> StationPackage:
        """Total: the package or :class:`protocol.errors.Refusal`, never another exception."""
        return _strict(cls._decode, payload)

    @classmethod
    def build(cls, **fields: Any) -> StationPackage:
        """Make a package and check it exactly as a terminal will (Refusal if it would not load)."""
        package = cls(**fields)
        return cls.decode(package.encode())

    @classmethod
    def _decode(cls, payload: bytes) -> StationPackage:
        if not isinstance(payload, bytes | bytearray | memoryview):
            raise Refusal(Reason.MALFORMED, "station_package: expected bytes")
        if len(payload) > MAX_PACKAGE_BYTES:
            raise Refusal(Reason.TOO_LARGE, f"station_package: {len(payload)} bytes, the limit is {MAX_PACKAGE_BYTES}")
        data = parse_json(bytes(payload), max_size=MAX_PACKAGE_BYTES, canonical=True)
        if not isinstance(data, dict) or set(data) != _FIELDS:
            raise FormatError(f"station_package: expected exactly the fields {sorted(_FIELDS)}")
        check_version(data, PACKAGE_VERSION, "station_package")
        if data["type"] != PACKAGE_TYPE:
            raise FormatError("station_package: wrong type")
        station_id = check_station_id(data["station_id"], "station_package.station_id")

        broker = _object(data["broker"], "station_package.broker", 2)
        if set(broker) != {"host", "port"}:
            raise FormatError("station_package.broker: expected exactly host and port")
        host = _host(broker["host"], "station_package.broker.host")
        port = strict_int(broker["port"], "station_package.broker.port", minimum=1, maximum=65535)

        terminals = data["terminals"]
        if not isinstance(terminals, list) or not 0 < len(terminals) <= MAX_TERMINALS:
            raise FormatError(f"station_package.terminals: expected a list of 1..{MAX_TERMINALS} terminal ids")
        for terminal in terminals:
            check_device_id(terminal, "station_package.terminals")
        if terminals != sorted(set(terminals)):
            raise FormatError("station_package.terminals: must be sorted and unique")

        ca_pem = _pem(data["station_ca"], "station_package.station_ca", MAX_CERTIFICATE_PEM)
        ca = x509.load_pem_x509_certificate(ca_pem)
        crl_pem = _pem(data["station_crl"], "station_package.station_crl", MAX_CRL_PEM)
        crl = x509.load_pem_x509_crl(crl_pem)
        if crl.issuer != ca.subject or not crl.is_signature_valid(ca.public_key()):  # type: ignore[arg-type]
            raise FormatError("station_package.station_crl: not signed by the station CA in the package")

        token_pem = _pem(data["roll_token_key"], "station_package.roll_token_key", MAX_CERTIFICATE_PEM)
        token_key = serialization.load_pem_public_key(token_pem)
        if not isinstance(token_key, rsa.RSAPublicKey) or token_key.key_size < 2048:
            raise FormatError("station_package.roll_token_key: expected an RSA public key of at least 2048 bits")

        card = _object(data["card"], "station_package.card", 3)
        if set(card) != {"mode", "trust_anchors", "crls"}:
            raise FormatError("station_package.card: expected exactly mode, trust_anchors and crls")
        if card["mode"] not in CARD_MODES:
            raise FormatError(f"station_package.card.mode: one of {CARD_MODES}")
        anchors: dict[str, bytes] = {}
        for name, pem in _object(card["trust_anchors"], "station_package.card.trust_anchors", MAX_CARD_FILES).items():
            anchors[_file_name(name, "station_package.card.trust_anchors")] = _pem(
                pem, f"card.trust_anchors.{name}", MAX_CERTIFICATE_PEM
            )
            x509.load_pem_x509_certificate(anchors[name])
        if not anchors:
            raise FormatError("station_package.card.trust_anchors: at least one JPKI CA is needed to check cards")
        crls: dict[str, bytes] = {}
        for name, pem in _object(card["crls"], "station_package.card.crls", MAX_CARD_FILES).items():
            crls[_file_name(name, "station_package.card.crls")] = _pem(pem, f"card.crls.{name}", MAX_CRL_PEM)
            x509.load_pem_x509_crl(crls[name])
        if set(anchors) & set(crls):
            raise FormatError("station_package.card: a trust anchor and a CRL share a file name")

        election = _object(data["election"], "station_package.election", len(ELECTION_FILES))
        if set(election) != set(ELECTION_FILES):
            raise FormatError(f"station_package.election: expected exactly {list(ELECTION_FILES)}")
        files: dict[str, bytes] = {}
        for name in ELECTION_FILES:
            text = election[name]
            if not isinstance(text, str) or not text.isascii():
                raise FormatError(f"station_package.election.{name}: expected base64")
            try:
                files[name] = base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError):
                raise FormatError(f"station_package.election.{name}: not base64") from None
        manifest = Manifest.from_json(parse_json(files["manifest.json"]))
        context = ElectionContext.from_json(parse_json(files["context.json"]))
        if context.base_hash != manifest.base_hash:
            raise FormatError("station_package.election: the context is for another manifest")

        return cls(
            station_id, host, port, tuple(terminals), ca_pem, crl_pem, token_pem, card["mode"], anchors, crls, files
        )


def _strict(decode: Callable[[bytes], T], payload: bytes) -> T:
    """Every refusal as the protocol's :class:`Refusal` (reason ``malformed`` unless set)."""
    try:
        return decode(payload)
    except Refusal:
        raise
    except FormatError as error:
        raise Refusal(Reason.MALFORMED, str(error)) from None
    except (ValueError, TypeError) as error:  # cryptography's PEM loaders, base64
        raise Refusal(Reason.MALFORMED, f"station_package: not a valid key, certificate or CRL: {error}") from None
