"""A station as the centre sees it, built from the election core alone: its ledger and roll keys,
its terminals, the chain of sorted batches it forwards, its signed statements and its
terminals' device statements.

It plays an honest hub, or a dishonest one (root on the hub signs whatever chain it likes): the
centre's rules of record format 2 are about what arrives, so they are tested here without a
running hub, over the real central broker, workers and store (:func:`enrol`).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from gateway_fixtures import CentreClient

from election import tokens
from election.ballot import DeviceSigner, Token, seal_ballot
from election.chain import CHAIN_VERSION, COUNTED_KINDS, ChainState, Checkpoint, PoolBallot, genesis_hash, sign_document
from election.devices import DeviceStatement
from election.encoding import canonical_bytes, sha256
from election.group import Point
from election.manifest import Manifest
from election.stations import StationKeys
from gateway.central import Central
from infra.files import private_pem, write_private
from infra.pki import Role, StationCA, write_certificate
from protocol.forwarding import ForwardedEntry, batch_payload

CHOICES = {"contest-1": {"candidate-2"}, "contest-2": {"candidate-1"}}


@dataclass(frozen=True)
class Sealed:
    """One ballot a terminal sealed and sent: its JSON, its opening if challenged, its entry kind."""

    ballot: dict[str, Any]
    opening: dict[str, Any] | None
    kind: str

    @property
    def ballot_hash(self) -> bytes:
        return sha256(canonical_bytes(self.ballot))

    @property
    def device(self) -> str:
        return self.ballot["device_id"]


class StationDouble:
    """One station: keys, terminals, chain. Each terminal remembers every ballot it sealed and
    sent (its device statement covers them), whatever the hub then does with them."""

    def __init__(self, manifest: Manifest, joint_key: Point, station_id: str, terminals: Sequence[str]) -> None:
        self.manifest, self.joint_key, self.station_id = manifest, joint_key, station_id
        self.ledger_key = Ed25519PrivateKey.generate()
        self.roll_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.signers = {name: DeviceSigner(name, Ed25519PrivateKey.generate()) for name in terminals}
        self.sent: dict[str, list[bytes]] = {name: [] for name in terminals}
        self.chain = ChainState(genesis_hash(manifest.base_hash, station_id))
        self.entries: list[ForwardedEntry] = []
        self.closed_position: int | None = None

    @property
    def keys(self) -> StationKeys:
        return StationKeys(self.station_id, self.ledger_key.public_key(), self.roll_key.public_key())

    @property
    def devices(self) -> dict[str, Ed25519PublicKey]:
        return {name: signer.public_key for name, signer in self.signers.items()}

    # --- the terminals -------------------------------------------------------------------

    def token(self) -> Token:
        """A check-in: a fresh message, blind-signed by the station's roll."""
        message = secrets.token_bytes(32)
        public = self.roll_key.public_key()
        request = tokens.blind(public, message)
        return Token(
            message, tokens.finalize(public, message, tokens.blind_sign(self.roll_key, request.blinded), request)
        )

    def cast(self, device: str, choices: dict[str, set[str]] = CHOICES, *, sent: bool = True) -> Sealed:
        """A cast ballot of ``device`` (``late`` once the polls are closed); ``sent``: the terminal
        sent it, so its statements cover it (False: a ballot it never sent, as a thief would use)."""
        ballot, _ = seal_ballot(self.manifest, self.joint_key, choices, self.signers[device], self.token())
        sealed = Sealed(ballot.to_json(), None, "cast" if self.closed_position is None else "late")
        if sent:
            self.sent[device].append(sealed.ballot_hash)
        return sealed

    def spoil(self, device: str) -> Sealed:
        ballot, opening = seal_ballot(self.manifest, self.joint_key, CHOICES, self.signers[device])
        sealed = Sealed(ballot.to_json(), opening.to_json(self.manifest), "spoiled")
        self.sent[device].append(sealed.ballot_hash)
        return sealed

    def statements(self) -> list[DeviceStatement]:
        """Each terminal's latest statement (terminals that sent nothing have none)."""
        base = self.manifest.base_hash
        return [
            DeviceStatement.make(self.signers[d], base, hashes) for d, hashes in sorted(self.sent.items()) if hashes
        ]

    # --- the ledger (honest or not: it signs whatever it chained) --------------------------

    def commit(self, ballots: Iterable[Sealed]) -> list[ForwardedEntry]:
        """Chain ``ballots`` as one batch, sorted by ballot hash, as a ledger commits its pool."""
        by_hash = {sealed.ballot_hash: sealed for sealed in ballots}
        batch = self.chain.next_batch(PoolBallot(h, sealed.kind) for h, sealed in by_hash.items())
        out = []
        for entry in batch:
            self.chain.append(entry)
            sealed = by_hash[entry.ballot_hash]
            out.append(ForwardedEntry(entry, sealed.ballot, sealed.opening))
        self.entries += out
        return out

    def close(self) -> None:
        """The final close, at the end of the last committed batch."""
        self.closed_position = self.chain.head.position

    def checkpoint(self) -> dict[str, Any]:
        return Checkpoint(self.station_id, self.manifest.base_hash, self.chain.head).sign(self.ledger_key)

    def closing_report(self) -> dict[str, Any]:
        assert self.closed_position is not None, "close the polls first"
        counted: dict[str, int] = dict.fromkeys(self.signers, 0)
        late: dict[str, int] = {}
        for item in self.entries:
            device = item.ballot["device_id"]
            if item.entry.kind in COUNTED_KINDS:
                counted[device] += 1
            if item.entry.kind == "late":
                late[device] = late.get(device, 0) + 1
        ballots = sum(counted.values())
        body = {
            "version": CHAIN_VERSION,
            "type": "closing_report",
            "station_id": self.station_id,
            "base_hash": self.manifest.base_hash.hex(),
            "position": self.chain.head.position,
            "head_hash": self.chain.head.entry_hash.hex(),
            "terminals": counted,
            "ballots": ballots,
            "spoiled": len(self.entries) - ballots,
            "check_ins": ballots,
            "late": late,
            "closed_position": self.closed_position,
            "unreachable": {},
        }
        return sign_document(body, self.ledger_key)

    def signed(self) -> list[dict[str, Any]]:
        """The ledger's latest signed statements, as the forwarder sends them."""
        return [self.checkpoint(), *([self.closing_report()] if self.closed_position is not None else [])]


def enrol(central: Central, station: StationDouble, keys_dir: Path) -> CentreClient:
    """Register ``station`` at the centre (its keys and terminals) and give it a certificate of
    the central CA as a hub gets one (CN = station id; its key stays outside the centre)."""
    store = central.store()
    try:
        store.register_station(station.keys, station.devices)
    finally:
        store.close()
    key = Ed25519PrivateKey.generate()
    certificate = StationCA.load(central.directory / "ca").issue(key.public_key(), station.station_id, Role.LEDGER)
    cert_file, key_file = keys_dir / f"{station.station_id}.pem", keys_dir / f"{station.station_id}.key"
    keys_dir.mkdir(parents=True, exist_ok=True)
    write_certificate(cert_file, certificate)
    write_private(key_file, private_pem(key))
    return CentreClient(central, station.station_id, cert_file=cert_file, key_file=key_file)


def batch(
    station: StationDouble,
    entries: Sequence[ForwardedEntry],
    *,
    statements: Sequence[dict[str, Any]] | None = None,
    devices: Sequence[DeviceStatement] = (),
) -> Any:
    """A builder for :meth:`CentreClient.send`: the batch message carrying ``entries`` with the
    ledger's signed statements (its latest by default) and the given device statements."""
    signed = list(station.signed() if statements is None else statements)
    return lambda request: batch_payload(station.station_id, request, list(entries), signed, list(devices))
