"""The booth's stores at rest (issues 12 and 16): the check-in store is a rollback-journal,
secure_delete SQLite file whose rows are keyed and sealed with keys held only in RAM; casting
removes a check-in so that no copy of it remains in any file, and the ballot outbox never holds
one; the ballot outbox keeps the set of its ballot hashes and nothing of the casting order.

Fast: real SQLite files, no processes. The whole booth under kill -9 is in test_at_rest_booth.py.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from appliance.card.authenticator import card_handle
from appliance.outbox import CheckinStore, Outbox, OutboxError, StoredCheckin, filesystem_of, runtime_dir
from election.ballot import DeviceSigner, Token, seal_ballot
from election.devices import DeviceStatement
from election.encoding import parse_json
from election.manifest import sample_manifest
from election.simulation import ceremony

MANIFEST = sample_manifest(contests=1, selections=2, limit=1)
CHOICES = {"contest-1": {"candidate-1"}}


def encodings(value: bytes) -> list[bytes]:
    """The forms a value could take in a file: raw bytes, lowercase and uppercase hex."""
    return [value, value.hex().encode(), value.hex().upper().encode()]


def leaks(directory: Path, values: dict[str, bytes], *, texts: tuple[str, ...] = ()) -> list[str]:
    """Every (file or text, value name) where one of ``values`` occurs in any encoding: every
    file under ``directory`` (databases, -wal, -journal, -shm, logs, audit logs, keys...) and
    the given texts (e.g. the booth's log lines, which the journal keeps on the medium)."""
    found = []
    sources = [(str(p), p.read_bytes()) for p in sorted(directory.rglob("*")) if p.is_file()]
    sources += [(f"log text {n}", text.encode()) for n, text in enumerate(texts)]
    for where, data in sources:
        for name, value in values.items():
            assert len(value) >= 16, f"{name}: too short to scan for meaningfully"
            if any(form in data for form in encodings(value)):
                found.append(f"{where}: {name}")
    return found


def random_checkin() -> tuple[str, StoredCheckin]:
    handle = card_handle(secrets.token_bytes(40), secrets.randbits(120))
    return handle, StoredCheckin(secrets.token_bytes(32), secrets.token_bytes(256), secrets.token_bytes(256))


def values_of(name: str, handle: str, checkin: StoredCheckin) -> dict[str, bytes]:
    return {f"{name} handle": bytes.fromhex(handle), f"{name} message": checkin.message,
            f"{name} blinded": checkin.blinded, f"{name} inverse": checkin.inverse}  # fmt: skip


@pytest.fixture
def key_dir(tmp_path: Path) -> Path:
    """A RAM directory for this test's keys (tmpfs: /dev/shm), removed afterwards."""
    directory = Path("/dev/shm") / f"at-rest-test-{os.getpid()}-{secrets.token_hex(4)}"
    directory.mkdir(mode=0o700)
    yield directory
    for path in directory.iterdir():
        path.unlink()
    directory.rmdir()


@pytest.fixture(scope="module")
def election():
    _trustees, _publics, context = ceremony(MANIFEST, 1, 1)
    return context.joint_public_key, DeviceSigner("t9", Ed25519PrivateKey.generate())


def test_the_check_in_store_is_a_rollback_journal_store_with_secure_delete(tmp_path: Path, key_dir: Path) -> None:
    store = CheckinStore(tmp_path / "checkins.db", key_dir)
    try:
        pragma = {name: store._db.execute(f"PRAGMA {name}").fetchone()[0]
                  for name in ("journal_mode", "secure_delete", "synchronous", "temp_store")}  # fmt: skip
    finally:
        store.close()
    assert pragma == {"journal_mode": "delete", "secure_delete": 1, "synchronous": 3, "temp_store": 2}
    assert not (tmp_path / "checkins.db-wal").exists()


def test_keys_live_only_in_ram(tmp_path: Path, key_dir: Path) -> None:
    assert filesystem_of(runtime_dir()) in ("tmpfs", "ramfs")
    store = CheckinStore(tmp_path / "data" / "checkins.db", key_dir)
    try:
        assert store.key_file.parent == key_dir and filesystem_of(store.key_file) == "tmpfs"
        assert store.key_file.stat().st_mode & 0o777 == 0o600
        assert not list((tmp_path / "data").glob("checkin-keys*"))
    finally:
        store.close()


def test_a_stored_check_in_is_found_by_its_handle_and_nothing_of_it_is_readable_in_the_files(
    tmp_path: Path, key_dir: Path
) -> None:
    store = CheckinStore(tmp_path / "checkins.db", key_dir)
    handle, checkin = random_checkin()
    store.store(handle, checkin)
    assert store.lookup(handle) == checkin
    assert store.lookup(random_checkin()[0]) is None
    assert leaks(tmp_path, values_of("uncast", handle, checkin)) == []
    store.close()
    reopened = CheckinStore(tmp_path / "checkins.db", key_dir)  # a crash and restart of the booth
    try:
        assert reopened.lookup(handle) == checkin, "the check-in did not survive a restart"
    finally:
        reopened.close()


def test_spending_removes_every_copy_and_rotates_the_sealing_key(tmp_path: Path, key_dir: Path) -> None:
    store = CheckinStore(tmp_path / "checkins.db", key_dir)
    (cast_handle, cast), (other_handle, other) = random_checkin(), random_checkin()
    store.store(cast_handle, cast)
    store.store(other_handle, other)
    # What an attacker holding the RAM key could look for: the row's name and its ciphertext.
    slot = store._keys.slot_of(cast_handle)
    sealed = store._db.execute("SELECT sealed FROM checkins WHERE slot = ?", (slot,)).fetchone()[0]
    old_keys = store.key_file.read_bytes()
    assert leaks(tmp_path, {"sealed row": sealed}), "the scan does not even see the live row"
    assert store.spend(cast.message)
    assert not store.spend(cast.message), "spent twice"
    assert store.lookup(cast_handle) is None and store.lookup(other_handle) == other
    assert store.key_file.read_bytes() != old_keys, "the sealing key was not replaced"
    assert store.key_file.read_bytes()[:32] == old_keys[:32], "the slot key must last the day"
    forbidden = {**values_of("cast", cast_handle, cast), "slot": slot, "sealed row": sealed}
    assert leaks(tmp_path, forbidden) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkins.db"], "a journal was left behind"
    store.close()


def test_a_lost_ram_key_purges_the_unreadable_check_ins(tmp_path: Path, key_dir: Path) -> None:
    """The trade-off: after a power cut the check-ins cannot be read any more; they are purged."""
    store = CheckinStore(tmp_path / "checkins.db", key_dir)
    handle, checkin = random_checkin()
    store.store(handle, checkin)
    store.close()
    for path in key_dir.iterdir():  # power cut: tmpfs is empty after the reboot
        path.unlink()
    store = CheckinStore(tmp_path / "checkins.db", key_dir)
    try:
        assert store.pending() == 0 and store.lookup(handle) is None
    finally:
        store.close()


def test_closing_the_polls_purges_and_deletes_the_keys(tmp_path: Path, key_dir: Path) -> None:
    store = CheckinStore(tmp_path / "checkins.db", key_dir)
    stored = [random_checkin() for _ in range(3)]
    for handle, checkin in stored:
        store.store(handle, checkin)
    assert store.close_polls() == 3
    assert store.close_polls() == 0
    assert list(key_dir.iterdir()) == []
    late_handle, late = random_checkin()
    assert not store.store(late_handle, late), "a check-in was stored after the close"
    store.close()
    forbidden = {k: v for n, (h, c) in enumerate([*stored, (late_handle, late)]) for k, v in
                 values_of(f"uncast {n}", h, c).items()}  # fmt: skip
    assert leaks(tmp_path, forbidden) == []


def test_casting_through_the_outbox_leaves_no_check_in_beside_the_ballot(
    tmp_path: Path, key_dir: Path, election
) -> None:
    joint_key, signer = election
    outbox = Outbox(tmp_path / "outbox" / "outbox.db", key_dir=key_dir)
    handle, checkin = random_checkin()
    outbox.store_checkin(handle, checkin)
    spoiled, opening = seal_ballot(MANIFEST, joint_key, CHOICES, signer)
    assert outbox.add(spoiled, opening, signer, MANIFEST) == [], "a challenged ballot is held for the cast"
    assert outbox.stored_checkin(handle) == checkin, "a challenge must keep the check-in (the voter votes again)"
    sealed, _ = seal_ballot(MANIFEST, joint_key, CHOICES, signer)
    ballot = sealed.with_token(Token(checkin.message, secrets.token_bytes(256)), signer)
    outbox.add(ballot, None, signer, MANIFEST)
    assert outbox.stored_checkin(handle) is None
    outbox.close()
    assert sorted(p.name for p in (tmp_path / "outbox").iterdir()) == ["checkins.db", "outbox.db"]
    cast_values = values_of("cast", handle, checkin)
    del cast_values["cast message"]  # the token message is in the cast ballot: public
    assert leaks(tmp_path, cast_values) == []
    for path in (tmp_path / "outbox").glob("checkins.db*"):
        assert not any(form in path.read_bytes() for form in encodings(checkin.message))


def test_a_crash_between_casting_and_spending_is_repaired_on_open(tmp_path: Path, key_dir: Path, election) -> None:
    joint_key, signer = election
    path = tmp_path / "outbox" / "outbox.db"
    outbox = Outbox(path, key_dir=key_dir)
    handle, checkin = random_checkin()
    outbox.store_checkin(handle, checkin)
    sealed, _ = seal_ballot(MANIFEST, joint_key, CHOICES, signer)
    ballot = sealed.with_token(Token(checkin.message, secrets.token_bytes(256)), signer)
    outbox.checkins.spend = lambda message: False  # the process dies right after the ballot's commit
    outbox.add(ballot, None, signer, MANIFEST)
    outbox.close()
    reopened = Outbox(path, key_dir=key_dir)
    try:
        assert reopened.checkins.pending() == 0 and reopened.depth() == 1
    finally:
        reopened.close()
    assert leaks(tmp_path, {"handle": bytes.fromhex(handle), "blinded": checkin.blinded,
                            "inverse": checkin.inverse}) == []  # fmt: skip


def test_the_ballot_outbox_keeps_a_set_of_hashes_and_no_casting_order(tmp_path: Path, key_dir: Path, election) -> None:
    """Several voters (two of them challenge first), every ballot acknowledged: the outbox is a
    rollback-journal, secure_delete store; its tables have no row ids; the acknowledged ballots
    are gone from its bytes; the set of hashes is all that remains, and where each hash lies in
    the file follows the hashes' order, not the order they were cast in."""
    joint_key, signer = election
    path = tmp_path / "outbox" / "outbox.db"
    outbox = Outbox(path, key_dir=key_dir)
    sent, statements = [], []
    for voter in range(12):
        if voter % 5 == 1:
            spoiled, opening = seal_ballot(MANIFEST, joint_key, CHOICES, signer)
            outbox.add(spoiled, opening, signer, MANIFEST)
        sealed, _ = seal_ballot(MANIFEST, joint_key, CHOICES, signer)
        ballot = sealed.with_token(Token(secrets.token_bytes(32), secrets.token_bytes(256)), signer)
        burst = outbox.add(ballot, None, signer, MANIFEST)
        assert [item.kind for item in burst] == ["spoiled", "cast"] if voter % 5 == 1 else ["cast"]
        for item in burst:
            sent.append(item.ballot_hash)
            statements.append(DeviceStatement.from_json(parse_json(item.payload)["statement"]))
    assert [s.sealed for s in statements] == list(range(1, len(sent) + 1))
    assert statements[-1].matches(sent) and statements[-1].verify(signer.public_key) is None
    assert outbox.ballots_cast() == 12 and outbox.depth() == len(sent)
    payloads = [item.payload for item in outbox.unacknowledged()]
    for ballot_hash in sent:
        assert outbox.acknowledge(ballot_hash)
    assert outbox.depth() == 0 and outbox.unacknowledged() == []
    db = outbox._db
    pragma = {name: db.execute(f"PRAGMA {name}").fetchone()[0]
              for name in ("journal_mode", "secure_delete", "synchronous", "temp_store")}  # fmt: skip
    assert pragma == {"journal_mode": "delete", "secure_delete": 1, "synchronous": 3, "temp_store": 2}
    tables = dict(db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'").fetchall())
    assert "WITHOUT ROWID" in tables["outbox"] and "WITHOUT ROWID" in tables["sealed"]
    assert sorted(row[0] for row in db.execute("SELECT ballot_hash FROM sealed")) == sorted(sent)
    outbox.close()
    assert sorted(p.name for p in path.parent.iterdir()) == ["checkins.db", "outbox.db"], "a journal was left"
    data = path.read_bytes()
    assert not any(payload[-200:] in data for payload in payloads), "an acknowledged ballot is still in the file"
    offsets = [data.index(ballot_hash) for ballot_hash in sent]
    assert all(data.count(ballot_hash) == 1 for ballot_hash in sent), "a hash is in the file twice"
    by_place = [h for _, h in sorted(zip(offsets, sent, strict=True))]
    assert by_place in (sorted(sent), sorted(sent, reverse=True)), "the file's layout keeps an order of its own"


def test_an_outbox_of_record_format_1_is_refused(tmp_path: Path, key_dir: Path) -> None:
    """Its ballots carry a device order no format 2 ledger takes: the booth says so, changes nothing."""
    path = tmp_path / "outbox.db"
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE device_chain (id INTEGER PRIMARY KEY, device_seq INTEGER, prev_hash BLOB)")
    db.execute("CREATE TABLE outbox (device_seq INTEGER PRIMARY KEY, payload BLOB)")
    db.execute("INSERT INTO outbox VALUES (1, x'00')")
    db.commit()
    db.close()
    before = path.read_bytes()
    with pytest.raises(OutboxError, match="record format 1"):
        Outbox(path, key_dir=key_dir)
    assert path.read_bytes() == before


def test_a_refused_check_in_can_be_discarded_at_once(tmp_path: Path, key_dir: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.db", key_dir=key_dir)
    (refused_handle, refused), (kept_handle, kept) = random_checkin(), random_checkin()
    outbox.store_checkin(refused_handle, refused)
    outbox.store_checkin(kept_handle, kept)
    assert outbox.discard_checkin(refused_handle) and not outbox.discard_checkin(refused_handle)
    assert outbox.stored_checkin(refused_handle) is None and outbox.stored_checkin(kept_handle) == kept
    outbox.close()
    assert leaks(tmp_path, values_of("refused", refused_handle, refused)) == []
