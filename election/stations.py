"""The stations' part of the election record: each station's ledger chain and keys.

    stations/<station_id>/station.json      station id, ledger key (Ed25519), roll key (RSA)
    stations/<station_id>/chain.jsonl       the chain entries, one canonical JSON per line
    stations/<station_id>/checkpoint.json   the ledger's last signed checkpoint

The verifier uses them to show that every ballot in the record was accepted by exactly one
station's ledger, in an unbroken chain its ledger signed, and that every cast ballot spent a
token the station's roll signed — without anything that names a voter.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from election.chain import ChainEntry
from election.encoding import canonical_bytes, hex_bytes, parse_json
from election.errors import FormatError

STATIONS = "stations"
STATION_FILE = "station.json"
CHAIN_FILE = "chain.jsonl"
CHECKPOINT_FILE = "checkpoint.json"
STATION_VERSION = 1
MAX_CHAIN_LINE = 4096
_STATION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_station_id(value: Any, what: str = "station_id") -> str:
    if not isinstance(value, str) or not _STATION_ID.match(value):
        raise FormatError(f"{what}: {value!r} is not a station id (1–64 of A-Z a-z 0-9 _ . -)")
    return value


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
            "roll_key": self.roll_key.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            ).hex(),
        }

    @classmethod
    def from_json(cls, data: Any) -> StationKeys:
        fields = {"version", "station_id", "ledger_key", "roll_key"}
        if not isinstance(data, dict) or set(data) != fields:
            raise FormatError(f"station: expected exactly the fields {sorted(fields)}")
        if data["version"] != STATION_VERSION:
            raise FormatError(f"station: unsupported version {data['version']!r}")
        try:
            roll_key = serialization.load_der_public_key(hex_bytes(data["roll_key"], None, "roll_key"))
        except ValueError:
            raise FormatError("station.roll_key: not a DER SubjectPublicKeyInfo") from None
        if not isinstance(roll_key, rsa.RSAPublicKey) or roll_key.key_size < 2048:
            raise FormatError("station.roll_key: must be an RSA key of at least 2048 bits")
        return cls(
            check_station_id(data["station_id"]),
            Ed25519PublicKey.from_public_bytes(hex_bytes(data["ledger_key"], 32, "ledger_key")),
            roll_key,
        )


def chain_lines(entries: Iterator[ChainEntry] | list[ChainEntry]) -> bytes:
    """The ``chain.jsonl`` file: each entry's canonical JSON followed by a newline."""
    return b"".join(canonical_bytes(entry.to_json()) + b"\n" for entry in entries)


def parse_chain_lines(data: bytes) -> Iterator[ChainEntry]:
    """Parse ``chain.jsonl``; a malformed line raises FormatError naming its line number."""
    if data and not data.endswith(b"\n"):
        raise FormatError("chain.jsonl: the last line is not terminated (truncated file?)")
    for number, line in enumerate(data.splitlines(), start=1):
        try:
            entry = ChainEntry.from_json(parse_json(line, max_size=MAX_CHAIN_LINE))
        except FormatError as exc:
            raise FormatError(f"chain.jsonl line {number}: {exc}") from None
        if canonical_bytes(entry.to_json()) != line:
            raise FormatError(f"chain.jsonl line {number}: not in canonical form")
        yield entry


@dataclass(frozen=True, slots=True)
class TrackingMatch:
    station_id: str
    entry: ChainEntry


def normalise_tracking_code(code: str) -> str:
    """Accept what a voter types: any case, with or without the dashes and spaces."""
    letters = "".join(ch for ch in code.upper() if ch.isalnum())
    return "-".join(letters[i : i + 4] for i in range(0, len(letters), 4))


def find_tracking_code(chains: Iterator[tuple[str, Iterator[ChainEntry]]], code: str) -> TrackingMatch | None:
    """The chain entry a voter's tracking code names, searching every station's chain."""
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
