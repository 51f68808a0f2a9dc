"""The stations' part of the election record: each station's ledger chain and keys.

    stations/<station_id>/station.json      station id, ledger key (Ed25519), roll key (RSA)
    stations/<station_id>/chain.jsonl       the chain entries, one canonical JSON per line
    stations/<station_id>/checkpoint.json   the ledger's last signed checkpoint
    stations/<station_id>/closing.json      the ledger's signed closing report (once closed)

The verifier uses them to show that every ballot in the record was accepted by exactly one
station's ledger, in an unbroken chain of hash-sorted batches its ledger signed, and that every cast ballot spent a
token the station's roll signed — without anything that names a voter.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from election.chain import ChainEntry, normalise_tracking_code
from election.encoding import canonical_bytes, check_version, hex_bytes, parse_json
from election.errors import FormatError
from election.ids import check_station_id

STATIONS = "stations"
STATION_FILE = "station.json"
CHAIN_FILE = "chain.jsonl"
CHECKPOINT_FILE = "checkpoint.json"
STATION_VERSION = 1
MAX_CHAIN_LINE = 4096
MAX_CHAIN_FILE = 2**30
"""Most bytes of one ``chain.jsonl`` (about five million entries)."""
MIN_ROLL_KEY_BITS = 2048
MAX_ROLL_KEY_BITS = 8192
"""A roll key is RSA of 2048 to 8192 bits (bounding the cost of every token check)."""
STATION_FILES = (STATION_FILE, CHAIN_FILE, CHECKPOINT_FILE)
"""What a station's folder must hold."""
CLOSING_FILE = "closing.json"
"""The ledger's latest signed closing report (check-ins beside ballots), once the polls closed."""
OPTIONAL_STATION_FILES = (CLOSING_FILE,)
"""What a station's folder may hold besides; nothing else belongs there."""


@dataclass(frozen=True, slots=True)
class StationKeys:
    station_id: str
    ledger_key: Ed25519PublicKey
    roll_key: rsa.RSAPublicKey

    def to_json(self) -> dict[str, Any]:
        return {
            "version": STATION_VERSION,
            "station_id": self.station_id,
            "ledger_key": self.ledger_key.public_bytes_raw().hex(),
            "roll_key": _der_hex(self.roll_key),
        }

    @classmethod
    def from_json(cls, data: Any) -> StationKeys:
        fields = {"version", "station_id", "ledger_key", "roll_key"}
        if not isinstance(data, dict) or set(data) != fields:
            raise FormatError(f"station: expected exactly the fields {sorted(fields)}")
        check_version(data, STATION_VERSION, "station")
        station_id = check_station_id(data["station_id"])
        roll_key = parse_roll_key(data["roll_key"], "station.roll_key")
        try:
            ledger_key = Ed25519PublicKey.from_public_bytes(hex_bytes(data["ledger_key"], 32, "station.ledger_key"))
        except ValueError:
            raise FormatError("station.ledger_key: not an Ed25519 public key") from None
        return cls(station_id, ledger_key, roll_key)


def parse_roll_key(value: Any, what: str) -> rsa.RSAPublicKey:
    """A roll (token) key as the record writes it: the canonical DER SubjectPublicKeyInfo, in
    hex, of an RSA key of 2048 to 8192 bits with an odd exponent from 3 to 2^32 − 1.

    Shared by ``station.json`` and the municipalities of ``reconciliation.json``, so that a
    station's roll key and its municipality's token key are judged by the same rule and
    compared by the same bytes."""
    der = hex_bytes(value, None, what)
    if len(der) > 2 * MAX_ROLL_KEY_BITS // 8:
        raise FormatError(f"{what}: too long for an RSA key of at most 8192 bits")
    try:
        roll_key = serialization.load_der_public_key(der)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise FormatError(f"{what}: not a DER SubjectPublicKeyInfo") from None
    if not isinstance(roll_key, rsa.RSAPublicKey) or not (MIN_ROLL_KEY_BITS <= roll_key.key_size <= MAX_ROLL_KEY_BITS):
        raise FormatError(f"{what}: an RSA key of {MIN_ROLL_KEY_BITS} to {MAX_ROLL_KEY_BITS} bits")
    exponent = roll_key.public_numbers().e
    if exponent % 2 == 0 or not 3 <= exponent < 2**32:
        raise FormatError(f"{what}: the public exponent must be odd, from 3 to 2^32 − 1")
    if _der_hex(roll_key) != value:
        raise FormatError(f"{what}: not the key's canonical DER encoding")
    return roll_key


def roll_key_hex(key: rsa.RSAPublicKey) -> str:
    """The record's form of a roll or token key (what :func:`parse_roll_key` reads)."""
    return _der_hex(key)


def _der_hex(key: rsa.RSAPublicKey) -> str:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo).hex()


def chain_lines(entries: Iterator[ChainEntry] | list[ChainEntry]) -> bytes:
    """The ``chain.jsonl`` file: each entry's canonical JSON followed by a newline."""
    return b"".join(canonical_bytes(entry.to_json()) + b"\n" for entry in entries)


def parse_chain_lines(data: bytes) -> Iterator[ChainEntry]:
    """Parse ``chain.jsonl``; a malformed line raises FormatError naming its line number.

    Lines end with exactly ``\n`` (0x0A); an empty file is the empty chain (no entry yet).
    Each line must be the canonical JSON of its entry, so the file's bytes are the bytes hashed.
    """
    if len(data) > MAX_CHAIN_FILE:
        raise FormatError(f"chain.jsonl: more than {MAX_CHAIN_FILE} bytes")
    if data and not data.endswith(b"\n"):
        raise FormatError("chain.jsonl: the last line is not terminated (truncated file?)")
    for number, line in enumerate(data.split(b"\n")[:-1], start=1):
        try:
            entry = ChainEntry.from_json(parse_json(line, max_size=MAX_CHAIN_LINE))
        except FormatError as exc:
            raise FormatError(f"chain.jsonl line {number}: {exc}") from None
        if canonical_bytes(entry.to_json()) != line:
            raise FormatError(f"chain.jsonl line {number}: not in canonical form")
        yield entry


@dataclass(frozen=True, slots=True)
class TrackingMatch:
    """Where a tracking code's ballot sits: its station and its chain entry (whose ``batch``
    says which sorted batch holds it; the position within a batch follows the ballot hash)."""

    station_id: str
    entry: ChainEntry


def find_tracking_code(chains: Iterator[tuple[str, Iterator[ChainEntry]]], code: str) -> TrackingMatch | None:
    """The chain entry a voter's tracking code names, searching every station's chain.

    Raises :class:`election.chain.TrackingCodeTypo` when what was typed holds a character no
    tracking code has (I, O, 0, 1), so the voter hears about the typo, not "not found".
    """
    wanted = normalise_tracking_code(code)
    for station_id, entries in chains:
        for entry in entries:
            if entry.tracking_code == wanted:
                return TrackingMatch(station_id, entry)
    return None


def lookup_tracking_code(source: Any, code: str) -> TrackingMatch | None:
    """Find a tracking code in a record (a ``RecordSource``) by walking its station chains."""
    chains = (
        (station, parse_chain_lines(source.read_bytes(f"{STATIONS}/{station}/{CHAIN_FILE}")))
        for station in source.folders(STATIONS)
    )
    return find_tracking_code(chains, code)
