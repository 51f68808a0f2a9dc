"""Early marks into an election-day station's roll segment (issue 17).

A classic election-day station keeps its own roll segment and works offline. Before it opens,
it imports the marks of everyone who voted early in its municipality, as the municipal roll
signed them (``protocol.municipal.RollMarks``, exported by ``gateway.municipal_roll``): each
of those voters on this segment is marked "voted elsewhere", so the station's own roll refuses
them (``already_voted``) without any link to the centre on election day. The segment must have
been made with the municipality's roll salt (the same voter keys as the municipal register).

After it closes, its own marks flow back (:func:`export_station_marks`): the voter keys it
checked in, sorted, signed with the hub's central-link key (certified by the central CA as the
station), for ``gateway.municipal_roll.import_station_marks``.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from election.errors import FormatError
from infra.errors import SiteError
from infra.link import CentralLink
from protocol.municipal import MUNICIPAL_ROLL_NAME, RollMarks
from station_hub.roll import RollStore
from station_hub.station import Station


def load_marks_key(pem: bytes) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, Ed25519PublicKey):
        raise SiteError("the municipal roll's marks key must be an Ed25519 public key")
    return key


def import_early_marks(station: Station, payload: bytes, marks_key: Ed25519PublicKey, municipality: str) -> int:
    """Check the signed marks and mark those voters of this segment; returns how many are marked."""
    try:
        marks = RollMarks.verify(payload, marks_key, municipality=municipality, origin=MUNICIPAL_ROLL_NAME,
                                 base_hash=station.election().manifest.base_hash)  # fmt: skip
    except FormatError as error:
        raise SiteError(f"early marks refused: {error}") from error
    store = RollStore(station.roll_db, (station.token_public_key().key_size + 7) // 8)
    try:
        return store.mark_voted_elsewhere(marks.voter_keys)
    finally:
        store.close()


def export_station_marks(station: Station, municipality: str) -> bytes:
    """This station's marks (after the polls closed), signed with its central-link key."""
    store = RollStore(station.roll_db, (station.token_public_key().key_size + 7) // 8)
    try:
        if store.polls() != "closed":
            raise SiteError("the station's marks go to the municipal roll once its polls are closed")
        keys = tuple(store.marked_keys())
    finally:
        store.close()
    path = CentralLink.directory_of(station.directory) / "hub.key"
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), None)
    except (OSError, ValueError) as error:
        raise SiteError(f"{path}: the hub's central-link key is needed to sign the marks ({error})") from error
    if not isinstance(key, Ed25519PrivateKey):
        raise SiteError(f"{path} is not an Ed25519 key")
    return RollMarks(municipality, station.station_id, station.election().manifest.base_hash, keys).signed(key)
