"""What a station hub and the central office exchange, as files a technician carries, to set
up forwarding: the station's **registration** (its public keys, its terminals' keys and a
certificate request for its link to the central broker) and the centre's **link grant** (the
central CA, the hub's certificate, the broker address).

Neither side ever sees the other's private keys: the hub makes its central-link key and sends
only a PKCS#10 request. Both documents are canonical JSON, parsed strictly and totally here
(any bytes give the document or :class:`protocol.errors.Refusal`; non-canonical input, ``"version":
true``, ids with a trailing newline, booleans as integers are refused); formats in
``docs/gateway.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from election.encoding import HASH_SIZE, canonical_bytes, check_version, hex_bytes, parse_json, strict_int
from election.errors import FormatError
from election.ids import check_device_id, check_station_id
from election.stations import StationKeys
from protocol.errors import Reason, Refusal

REGISTRATION_VERSION = 1
MAX_REGISTRATION_BYTES = 1024 * 1024
MAX_TERMINALS = 1000
MAX_PROBLEM_LENGTH = 500
_MAX_PEM = 16 * 1024
T = TypeVar("T")


def _document(payload: bytes, kind: str, fields: set[str]) -> dict[str, Any]:
    """The payload as canonical JSON (it is signed material a technician carries: the bytes
    checked are the bytes kept) with exactly ``fields``, version 1 and type ``kind``."""
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise Refusal(Reason.MALFORMED, f"{kind}: expected bytes")
    if len(payload) > MAX_REGISTRATION_BYTES:
        raise Refusal(Reason.TOO_LARGE, f"{kind}: {len(payload)} bytes, the limit is {MAX_REGISTRATION_BYTES}")
    data = parse_json(payload, max_size=MAX_REGISTRATION_BYTES, canonical=True)
    if not isinstance(data, dict) or set(data) != fields:
        raise FormatError(f"{kind}: expected exactly the fields {sorted(fields)}")
    check_version(data, REGISTRATION_VERSION, kind)
    if data["type"] != kind:
        raise FormatError(f"{kind}: wrong type")
    return data


def _strict(decode: Callable[[bytes], T], payload: bytes) -> T:
    """Every refusal as the protocol's :class:`Refusal` (reason ``malformed`` unless set)."""
    try:
        return decode(payload)
    except Refusal:
        raise
    except FormatError as error:
        raise Refusal(Reason.MALFORMED, str(error)) from None
    except ValueError as error:  # cryptography's key and PEM loaders
        raise Refusal(Reason.MALFORMED, f"not a valid key or certificate: {error}") from None


def _pem(value: Any, what: str) -> bytes:
    if not isinstance(value, str) or not value.isascii() or not 0 < len(value) <= _MAX_PEM:
        raise FormatError(f"{what}: expected an ASCII PEM text of at most {_MAX_PEM} characters")
    return value.encode("ascii")


@dataclass(frozen=True, slots=True)
class StationRegistration:
    keys: StationKeys
    base_hash: bytes
    devices: dict[str, Ed25519PublicKey]
    problems: tuple[str, ...]
    link_request_pem: bytes
    """PKCS#10 request for the hub's certificate on the central broker (CN = station id)."""

    @property
    def station_id(self) -> str:
        return self.keys.station_id

    def to_json(self) -> dict[str, Any]:
        return {
            "version": REGISTRATION_VERSION,
            "type": "station_registration",
            "station": self.keys.to_json(),
            "base_hash": self.base_hash.hex(),
            "devices": {name: key.public_bytes_raw().hex() for name, key in sorted(self.devices.items())},
            "problems": list(self.problems),
            "link_request": self.link_request_pem.decode("ascii"),
        }

    def encode(self) -> bytes:
        return canonical_bytes(self.to_json())

    @classmethod
    def decode(cls, payload: bytes) -> StationRegistration:
        """Total: the registration or :class:`protocol.errors.Refusal`, never another exception."""
        return _strict(cls._decode, payload)

    @classmethod
    def _decode(cls, payload: bytes) -> StationRegistration:
        data = _document(
            payload,
            "station_registration",
            {"version", "type", "station", "base_hash", "devices", "problems", "link_request"},
        )
        devices = data["devices"]
        if not isinstance(devices, dict) or len(devices) > MAX_TERMINALS:
            raise FormatError(f"station_registration.devices: expected an object of at most {MAX_TERMINALS}")
        problems = data["problems"]
        if not (isinstance(problems, list) and len(problems) <= MAX_TERMINALS) or not all(
            isinstance(p, str) and len(p) <= MAX_PROBLEM_LENGTH for p in problems
        ):
            raise FormatError("station_registration.problems: expected a list of short strings")
        request = _pem(data["link_request"], "station_registration.link_request")
        try:
            x509.load_pem_x509_csr(request)
        except ValueError:
            raise FormatError("station_registration.link_request: not a PEM certificate request") from None
        keys = {}
        for name, key in devices.items():
            check_device_id(name, "station_registration.devices")
            keys[name] = Ed25519PublicKey.from_public_bytes(hex_bytes(key, 32, f"devices.{name}"))
        return cls(
            StationKeys.from_json(data["station"]),
            hex_bytes(data["base_hash"], HASH_SIZE, "base_hash"),
            keys,
            tuple(problems),
            request,
        )


@dataclass(frozen=True, slots=True)
class LinkGrant:
    """The centre's answer: how the hub reaches the central broker, and its certificate there."""

    station_id: str
    host: str
    port: int
    ca_pem: bytes
    certificate_pem: bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "version": REGISTRATION_VERSION,
            "type": "link_grant",
            "station_id": self.station_id,
            "host": self.host,
            "port": self.port,
            "ca": self.ca_pem.decode("ascii"),
            "certificate": self.certificate_pem.decode("ascii"),
        }

    def encode(self) -> bytes:
        return canonical_bytes(self.to_json())

    @classmethod
    def decode(cls, payload: bytes) -> LinkGrant:
        """Total: the grant or :class:`protocol.errors.Refusal`, never another exception."""
        return _strict(cls._decode, payload)

    @classmethod
    def _decode(cls, payload: bytes) -> LinkGrant:
        data = _document(
            payload,
            "link_grant",
            {"version", "type", "station_id", "host", "port", "ca", "certificate"},
        )
        host = data["host"]
        if not (isinstance(host, str) and 0 < len(host) <= 253 and host.isascii() and host.isprintable()):
            raise FormatError("link_grant.host: expected a host name or address")
        port = strict_int(data["port"], "link_grant.port", minimum=1, maximum=65535)
        return cls(
            check_station_id(data["station_id"], "link_grant.station_id"),
            host,
            port,
            _pem(data["ca"], "link_grant.ca"),
            _pem(data["certificate"], "link_grant.certificate"),
        )
