"""Topics of the municipal roll on the central broker (early-voting and common polling places).

A station of kind ``early`` or ``common`` keeps no roll of its own: its roll service relays each
card-proven check-in (the terminal's exact payload, docs/ledger.md "Check-in") to the municipal
roll at the central office, with MQTT v5 request/response, under its own central identity
``<station>.roll`` (role ``roll``; the hub's central-link identity stays the forwarder's)::

    central/roll/<station>.roll/checkin/<terminal>   station roll → municipal roll (request)
    central/roll/<station>.roll/reply                municipal roll → station roll (response)

The broker's ACL lets identity ``%u`` write only ``central/roll/%u/checkin/+`` and read only
``central/roll/%u/reply``, so the topic names the station that sent the request; only the
municipal roll's processes (identities ``municipal-roll-N``) read check-ins and write replies. The response
carries the request's correlation data; payloads are the station check-in messages unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from election.encoding import HASH_SIZE, canonical_bytes, hex_bytes, parse_json, strict_int
from election.errors import FormatError
from election.ids import check_device_id, check_station_id
from protocol.errors import Reason, Refusal
from protocol.registration import REGISTRATION_VERSION, _document, _pem

ROLL_ROOT = "central/roll"
MUNICIPAL_ROLL_NAME = "municipal-roll"
"""The municipal roll's name (the origin of its marks); its processes' identities at the central
broker are ``municipal-roll-1``, ``municipal-roll-2``, … (CN = user name = client id: one each)."""
RELAY_SUFFIX = ".roll"
"""A station roll's identity at the central broker is ``<station id>.roll``."""
STATION_KINDS = ("election_day", "early", "common")
"""``election_day``: its own roll, offline; ``early``/``common``: check-ins at the municipal roll."""
MUNICIPAL_KINDS = ("early", "common")
"""The kinds of station whose voters check in at the municipal roll (no roll of their own)."""
MIN_TOKEN_KEY_BITS = 2048


SHARE_GROUP = "municipal-roll"


def shared_checkin_subscription() -> str:
    """What every municipal-roll process subscribes to: the broker hands each check-in to one."""
    return f"$share/{SHARE_GROUP}/{ROLL_ROOT}/+/checkin/+"


def municipal_roll_identity(index: int) -> str:
    return f"{MUNICIPAL_ROLL_NAME}-{index}"


def relay_identity(station_id: str) -> str:
    return f"{station_id}{RELAY_SUFFIX}"


def station_of_identity(identity: str) -> str | None:
    """The station whose roll holds identity ``identity`` (None: not a station roll's identity)."""
    if not identity.endswith(RELAY_SUFFIX):
        return None
    try:
        return check_station_id(identity[: -len(RELAY_SUFFIX)])
    except FormatError:
        return None


def checkin_topic(station_id: str, terminal_id: str) -> str:
    return f"{ROLL_ROOT}/{relay_identity(station_id)}/checkin/{terminal_id}"


def reply_topic(station_id: str) -> str:
    return f"{ROLL_ROOT}/{relay_identity(station_id)}/reply"


def parse_checkin_topic(topic: str) -> tuple[str, str] | None:
    """(station, terminal) of a relayed check-in topic, or None for any other topic."""
    parts = topic.split("/")
    if len(parts) != 5 or "/".join(parts[:2]) != ROLL_ROOT or parts[3] != "checkin":
        return None
    station = station_of_identity(parts[2])
    try:
        terminal = check_device_id(parts[4], "terminal_id")
    except FormatError:
        return None
    return (station, terminal) if station is not None else None


ACL_PATTERNS = (
    f"pattern write {ROLL_ROOT}/%u/checkin/+",
    f"pattern read {ROLL_ROOT}/%u/reply",
)
"""The central broker's lines for station rolls (every identity gets them; the municipal roll
answers only identities ``<station>.roll`` of stations it lists as ``early`` or ``common``)."""


def acl_municipal_roll(identity: str) -> tuple[str, ...]:
    """The central broker's lines for one municipal-roll process."""
    return (f"user {identity}", f"topic read {ROLL_ROOT}/+/checkin/+", f"topic write {ROLL_ROOT}/+/reply")


# --- marks (municipal roll ⇄ election-day stations) -----------------------------------------
#
# Early marks: the municipal roll → each election-day station before it opens (origin
# "municipal-roll", signed with the municipality's marks key). Station marks: an election-day
# station → the municipal roll after it closes (origin = the station id, signed with the hub's
# central-link key, which the central CA certified). Voter keys only, sorted: no order, no time.

MARKS_FORMAT = "polling-station/municipal-marks/v1"
MARKS_DOMAIN = b"polling-station/municipal-marks/v1\n"
"""Prefix of what the signer signs: this, then the canonical body."""
MAX_MARKS_BYTES = 200_000_000


@dataclass(frozen=True)
class RollMarks:
    """Who has voted (voter keys), by ``origin`` (MUNICIPAL_ROLL_NAME or a station id), signed."""

    municipality: str
    origin: str
    base_hash: bytes
    voter_keys: tuple[bytes, ...]

    def body(self) -> dict[str, Any]:
        return {
            "format": MARKS_FORMAT,
            "municipality": self.municipality,
            "origin": self.origin,
            "base_hash": self.base_hash.hex(),
            "voter_keys": sorted(key.hex() for key in self.voter_keys),
        }

    def signed(self, key: Ed25519PrivateKey) -> bytes:
        signature = key.sign(MARKS_DOMAIN + canonical_bytes(self.body()))
        return canonical_bytes({**self.body(), "signature": signature.hex()})

    @classmethod
    def verify(
        cls, payload: bytes, key: Ed25519PublicKey, *, municipality: str, origin: str, base_hash: bytes
    ) -> RollMarks:
        """The marks, if ``key`` signed them, from ``origin``, for ``municipality`` and this
        election (else FormatError)."""
        data = parse_json(payload, max_size=MAX_MARKS_BYTES, canonical=True)
        fields = {"format", "municipality", "origin", "base_hash", "voter_keys", "signature"}
        if not isinstance(data, dict) or set(data) != fields or data["format"] != MARKS_FORMAT:
            raise FormatError(f"marks: expected {MARKS_FORMAT} with {sorted(fields)}")
        signature = hex_bytes(data.pop("signature"), 64, "signature")
        try:
            key.verify(signature, MARKS_DOMAIN + canonical_bytes(data))
        except InvalidSignature:
            raise FormatError("marks: the signature does not verify") from None
        if data["municipality"] != municipality:
            raise FormatError(f"marks: for municipality {data['municipality']!r}, not {municipality!r}")
        if data["origin"] != origin:
            raise FormatError(f"marks: from {data['origin']!r}, not {origin!r}")
        if hex_bytes(data["base_hash"], HASH_SIZE, "base_hash") != base_hash:
            raise FormatError("marks: for another election")
        if not isinstance(data["voter_keys"], list):
            raise FormatError("marks: voter_keys must be a list")
        keys = tuple(hex_bytes(k, 32, f"voter_keys[{i}]") for i, k in enumerate(data["voter_keys"]))
        if list(keys) != sorted(set(keys)):
            raise FormatError("marks: voter_keys must be sorted and distinct")
        return cls(municipality, origin, base_hash, keys)


# --- the municipal link grant (centre → an early/common station, carried as a file) ---------


@dataclass(frozen=True, slots=True)
class MunicipalGrant:
    """What makes a station an early-voting or common polling place of ``municipality``: the
    centre's answer to the station roll's certificate request (``station-hub municipal-request``
    → ``gateway municipal-roll add-station`` → ``station-hub municipal-link``).

    It carries the central broker's address and CA, the station roll's certificate for the
    central broker (CN ``<station>.roll``, made from the station's own request: the centre
    never sees the key), and the municipality's token key, which the station installs as its
    own token key so that its terminals blind with it and its registration at the centre
    carries it (every token of the municipality verifies against one key). A file a technician
    carries from the centre is outside input: :meth:`decode` is strict and total."""

    station_id: str
    municipality: str
    kind: str
    host: str
    port: int
    ca_pem: bytes
    certificate_pem: bytes
    token_key_pem: bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "version": REGISTRATION_VERSION,
            "type": "municipal_link",
            "station_id": self.station_id,
            "municipality": self.municipality,
            "kind": self.kind,
            "host": self.host,
            "port": self.port,
            "ca": self.ca_pem.decode("ascii"),
            "certificate": self.certificate_pem.decode("ascii"),
            "token_key": self.token_key_pem.decode("ascii"),
        }

    def encode(self) -> bytes:
        return canonical_bytes(self.to_json())

    @classmethod
    def decode(cls, payload: bytes) -> MunicipalGrant:
        """Total: the grant or :class:`protocol.errors.Refusal` (reason ``malformed`` or
        ``too_large``), never another exception."""
        try:
            return cls._decode(payload)
        except Refusal:
            raise
        except (FormatError, ValueError, TypeError, UnsupportedAlgorithm) as error:  # cryptography's loaders
            raise Refusal(Reason.MALFORMED, str(error)) from None

    @classmethod
    def _decode(cls, payload: bytes) -> MunicipalGrant:
        fields = {"version", "type", "station_id", "municipality", "kind", "host", "port", "ca", "certificate",
                  "token_key"}  # fmt: skip
        data = _document(payload, "municipal_link", fields)
        station_id = check_station_id(data["station_id"], "municipal_link.station_id")
        municipality = check_station_id(data["municipality"], "municipal_link.municipality")
        if data["kind"] not in MUNICIPAL_KINDS:
            raise FormatError(f"municipal_link.kind: expected one of {MUNICIPAL_KINDS}")
        host = data["host"]
        if not (isinstance(host, str) and 0 < len(host) <= 253 and host.isascii() and host.isprintable()):
            raise FormatError("municipal_link.host: expected a host name or address")
        port = strict_int(data["port"], "municipal_link.port", minimum=1, maximum=65535)
        ca = _pem(data["ca"], "municipal_link.ca")
        certificate = _pem(data["certificate"], "municipal_link.certificate")
        token_key = _pem(data["token_key"], "municipal_link.token_key")
        x509.load_pem_x509_certificate(ca)
        names = x509.load_pem_x509_certificate(certificate).subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        if [str(name.value) for name in names] != [relay_identity(station_id)]:
            raise FormatError(f"municipal_link.certificate: not for {relay_identity(station_id)}")
        key = serialization.load_pem_public_key(token_key)
        if not isinstance(key, rsa.RSAPublicKey) or key.key_size < MIN_TOKEN_KEY_BITS:
            raise FormatError(f"municipal_link.token_key: expected an RSA public key of at least "
                              f"{MIN_TOKEN_KEY_BITS} bits")  # fmt: skip
        return cls(station_id, municipality, data["kind"], host, port, ca, certificate, token_key)
