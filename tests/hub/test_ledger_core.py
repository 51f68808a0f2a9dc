"""The ledger's rules of record format 2, on the core and the store directly (no broker): the pool,
batches of at least ``batch_min`` sorted by ballot hash, the final close, late ballots, resends,
device statements, and a store whose bytes keep no arrival order."""

from __future__ import annotations

import functools
import secrets
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from election import tokens
from election.ballot import DeviceSigner, SealedBallot, Token, seal_ballot
from election.chain import ChainHead, genesis_hash, verify_chain
from election.devices import DeviceStatement, set_commitment
from election.errors import ManifestError
from election.manifest import Manifest, sample_manifest
from election.simulation import ceremony
from infra.errors import SiteError
from infra.store import open_store
from protocol.errors import Reason
from protocol.messages import AckHeld, BallotSubmission
from station_hub.ledger import LATE_QUIET, Duplicate, Held, LedgerCore, LedgerState, Refused
from station_hub.ledger_store import LedgerStore

CHOICES = {"contest-1": {"candidate-1"}, "contest-2": set()}
BATCH_MIN = 3


@dataclass(frozen=True)
class Election:
    manifest: Manifest
    joint_key: object
    roll: rsa.RSAPrivateKey
    signers: dict[str, DeviceSigner]

    @property
    def genesis(self) -> bytes:
        return genesis_hash(self.manifest.base_hash, "st-c")

    def lookup(self, device_id: str) -> Ed25519PublicKey | str:
        signer = self.signers.get(device_id)
        return "unknown_device" if signer is None else signer.public_key

    def core(self, state: LedgerState | None = None, polls: str = "open") -> LedgerCore:
        state = state or LedgerState(ChainHead(0, self.genesis), polls=polls)
        return LedgerCore(self.manifest, self.joint_key, self.genesis, self.lookup, self.roll.public_key(), state)

    def token(self) -> Token:
        message = secrets.token_bytes(32)
        request = tokens.blind(self.roll.public_key(), message)
        signature = tokens.blind_sign(self.roll, request.blinded)
        return Token(message, tokens.finalize(self.roll.public_key(), message, signature, request))


@functools.cache
def election() -> Election:
    manifest = sample_manifest(contests=2, selections=3, limit=1, batch_min=BATCH_MIN)
    _trustees, _publics, context = ceremony(manifest, 2, 2)
    signers = {name: DeviceSigner(name, Ed25519PrivateKey.generate()) for name in ("t1", "t2")}
    return Election(manifest, context.joint_public_key, rsa.generate_private_key(65537, 2048), signers)


class Booth:
    """A terminal: seals ballots and signs its statement over every ballot it sealed."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.sealed: list[bytes] = []

    def submit(self, spoiled: bool = False) -> tuple[SealedBallot, bytes]:
        e = election()
        token = None if spoiled else e.token()
        ballot, opening = seal_ballot(e.manifest, e.joint_key, CHOICES, e.signers[self.device], token)
        self.sealed.append(ballot.ballot_hash)
        statement = DeviceStatement.make(e.signers[self.device], e.manifest.base_hash, self.sealed)
        return ballot, BallotSubmission(ballot, opening if spoiled else None, statement).encode(e.manifest)


def hold(core: LedgerCore, payload: bytes, sender: str = "t1", now: float = 0.0) -> Held:
    decision = core.decide(payload, sender, now)
    assert isinstance(decision, Held), decision
    return decision


def test_a_batch_forms_only_at_batch_min_from_cast_and_spoiled_together_sorted_by_hash() -> None:
    core, booth = election().core(), Booth("t1")
    held = [hold(core, booth.submit(spoiled=True)[1]), hold(core, booth.submit()[1])]
    assert held[0].ack() == AckHeld(held[0].ballot.ballot_hash)  # at once, before any batch
    assert not core.batch_due(0.0) and core.state.head.position == 0
    held.append(hold(core, booth.submit()[1]))
    assert core.batch_due(0.0)
    batch = core.take_batch()
    hashes = sorted(h.ballot.ballot_hash for h in held)
    assert [b.entry.ballot_hash for b in batch] == hashes
    assert [(b.entry.position, b.entry.batch) for b in batch] == [(1, 1), (2, 1), (3, 1)]
    assert {b.entry.kind for b in batch} == {"cast", "spoiled"}
    assert core.state.pool == {} and core.state.head == ChainHead(3, batch[-1].entry_hash, 1)
    assert core.state.spoiled == 1 and core.state.per_device == {"t1": 2}
    verify_chain(election().genesis, [b.entry for b in batch], batch_min=BATCH_MIN)


def test_the_final_close_commits_the_rest_and_late_ballots_wait_for_batch_min_or_quiet() -> None:
    core, booth = election().core(), Booth("t1")
    entries = []
    for _ in range(BATCH_MIN + 2):
        hold(core, booth.submit()[1])
        if core.batch_due(0.0):
            entries += [b.entry for b in core.take_batch()]
    assert len(core.state.pool) == 2
    core.state.polls = "closing"
    final = [b.entry for b in core.close_final(["t2"])]
    assert [(e.position, e.batch) for e in final] == [(4, 2), (5, 2)]
    assert core.state.closed_position == 5 and core.state.polls == "closed"
    assert core.state.unreachable["t2"].to_json() == {"sealed": 0, "commitment": set_commitment([]).hex()}
    late = hold(core, booth.submit()[1], now=10.0)
    assert late.kind == "late"
    assert not core.batch_due(10.0 + LATE_QUIET / 2), "a late burst may still be arriving"
    assert core.batch_due(10.0 + LATE_QUIET)
    after = [b.entry for b in core.take_batch()]
    assert [(e.position, e.batch, e.kind) for e in after] == [(6, 3, "late")]
    assert core.state.late_per_device == {"t1": 1} and core.state.closed_position == 5
    verify_chain(election().genesis, [*entries, *final, *after], batch_min=BATCH_MIN, closed_position=5)
    for _ in range(BATCH_MIN):
        hold(core, booth.submit()[1], now=20.0)
    assert core.batch_due(20.0), "a full pool of late ballots is committed at once"


def test_a_resend_is_held_once_and_another_terminals_resend_is_refused() -> None:
    core, booth = election().core(), Booth("t1")
    ballot, payload = booth.submit()
    first = hold(core, payload)
    again = core.decide(payload, "t1")
    assert again == Duplicate(ballot.ballot_hash) and again.ack().encode() == first.ack().encode()
    stolen = core.decide(payload, "t2")
    assert isinstance(stolen, Refused) and stolen.reason is Reason.DEVICE_MISMATCH
    for _ in range(BATCH_MIN - 1):
        hold(core, booth.submit()[1])
    core.take_batch()
    assert core.decide(payload, "t1") == Duplicate(ballot.ballot_hash), "a chained ballot too"
    assert len(core.state.held) == BATCH_MIN


def test_a_statement_of_another_device_or_key_is_refused() -> None:
    e, core = election(), election().core()
    ballot, _opening = seal_ballot(e.manifest, e.joint_key, CHOICES, e.signers["t1"], e.token())
    of_t2 = DeviceStatement.make(e.signers["t2"], e.manifest.base_hash, [ballot.ballot_hash])
    refused = core.decide(BallotSubmission(ballot, None, of_t2).encode(e.manifest), "t1")
    assert isinstance(refused, Refused) and refused.reason is Reason.MALFORMED
    forged = DeviceStatement.make(DeviceSigner("t1", Ed25519PrivateKey.generate()), e.manifest.base_hash,
                                  [ballot.ballot_hash])  # fmt: skip
    refused = core.decide(BallotSubmission(ballot, None, forged).encode(e.manifest), "t1")
    assert isinstance(refused, Refused) and refused.reason is Reason.BAD_STATEMENT
    assert core.state.pool == {} and core.state.statements == {}


def test_only_the_statement_with_the_largest_count_is_kept() -> None:
    core, booth = election().core(), Booth("t1")
    first, second = booth.submit(), booth.submit()
    assert hold(core, second[1]).statement is not None
    older = hold(core, first[1])
    assert older.statement is None, "a smaller count never replaces the one held"
    assert core.state.statements["t1"].sealed == 2
    assert core.state.device_head("t1").commitment == set_commitment(booth.sealed)


def test_a_production_manifest_with_small_batches_does_not_parse() -> None:
    data = sample_manifest().to_json()
    with pytest.raises(ManifestError):
        Manifest.from_json({**data, "mode": "production", "batch_min": 1})
    assert Manifest.from_json({**data, "mode": "production", "batch_min": 10}).batch_min == 10
    assert Manifest.from_json({**data, "batch_min": 1}).rehearsal


def test_a_restart_with_a_pool_resumes_it_and_a_resend_is_a_duplicate(tmp_path: Path) -> None:
    e, booth = election(), Booth("t1")
    store = LedgerStore(tmp_path / "ledger.db")
    store.set_polls("open")
    core = e.core(store.load(e.genesis, e.manifest.base_hash))
    sent = [booth.submit() for _ in range(BATCH_MIN - 1)]
    store.hold([hold(core, payload) for _, payload in sent])
    store._db.close()  # as a kill -9 leaves it: no clean close

    store = LedgerStore(tmp_path / "ledger.db")
    core = e.core(store.load(e.genesis, e.manifest.base_hash))
    assert set(core.state.pool) == {ballot.ballot_hash for ballot, _ in sent}
    assert core.state.statements["t1"].sealed == BATCH_MIN - 1
    assert core.decide(sent[0][1], "t1") == Duplicate(sent[0][0].ballot_hash)
    last = booth.submit()
    store.hold([hold(core, last[1])])
    assert core.batch_due(0.0)
    store.commit_batch(core.take_batch())
    store.close()

    store = LedgerStore(tmp_path / "ledger.db")
    state = store.load(e.genesis, e.manifest.base_hash)
    store.close()
    assert state.pool == {} and state.head.position == BATCH_MIN
    assert set(state.held) == {ballot.ballot_hash for ballot, _ in [*sent, last]}


def test_a_format_1_ledger_is_refused_with_its_reason(tmp_path: Path) -> None:
    open_store(tmp_path / "ledger.db", "CREATE TABLE entries (position INTEGER PRIMARY KEY)", 2).close()
    with pytest.raises(SiteError, match="record format 1"):
        LedgerStore(tmp_path / "ledger.db")


def _ledger_files(
    directory: Path, submissions: list[tuple[str, bytes]], rounds: list[int] | None = None
) -> dict[str, bytes]:
    """The ledger's files after holding ``submissions`` one message at a time (pool commit, then
    the batch), or as the service does, in rounds of ``rounds`` messages, each committed in one
    transaction with the batch it completes (group commit)."""
    e = election()
    path = directory / "ledger.db"
    store = LedgerStore(path)
    store.set_polls("open")
    core = e.core(store.load(e.genesis, e.manifest.base_hash))
    if rounds is None:
        for sender, payload in submissions:
            store.hold([hold(core, payload, sender)])
            if core.batch_due(0.0):
                store.commit_batch(core.take_batch())
    else:
        start = 0
        for size in rounds:
            held = [hold(core, payload, sender) for sender, payload in submissions[start : start + size]]
            start += size
            store.commit(held, core.take_batch() if core.batch_due(0.0) else [])
        assert start == len(submissions)
    store.close()
    files = {file.name: file.read_bytes() for file in directory.iterdir()}
    assert set(files) == {"ledger.db", "ledger-pool.db"}, "no journal or WAL left behind"
    return files


@pytest.mark.parametrize("rounds", [None, [1, 2, 1, 2], [3, 3]], ids=["one-by-one", "pool-and-round", "whole-rounds"])
def test_the_ledger_file_keeps_no_arrival_order(tmp_path: Path, rounds: list[int] | None) -> None:
    """The same ballots arriving in two orders give byte-identical files (the chain's and the
    pool's), whose chain lists each batch in ballot-hash order. Each terminal's ballots come in
    its sealing order, as its outbox sends them; what differs is how the terminals interleave
    within each batch, which is the order the voters walked in. The same holds for the service's
    group commit: a round that completes a batch with ballots from the pool, or makes one alone."""
    booths = {"t1": Booth("t1"), "t2": Booth("t2")}
    batches = [[(device, booths[device].submit(spoiled=n == 1)[1]) for n, device in enumerate(["t1", "t2", "t1"])]
               for _ in range(2)]  # fmt: skip
    forward = [item for batch in batches for item in batch]
    interleaved = [item for batch in batches for item in [batch[1], batch[0], batch[2]]]  # t2 first, then t1, t1
    assert interleaved != forward
    assert _ledger_files(tmp_path / "a", forward, rounds) == _ledger_files(tmp_path / "b", interleaved, rounds)
    db = sqlite3.connect(tmp_path / "a" / "ledger.db")
    try:
        db.execute("ATTACH DATABASE ? AS intake", (str(tmp_path / "a" / "ledger-pool.db"),))
        pool_sql = db.execute("SELECT sql FROM intake.sqlite_master WHERE name = 'pool'").fetchone()[0]
        rows = db.execute("SELECT batch, ballot_hash FROM entries ORDER BY position").fetchall()
    finally:
        db.close()
    assert pool_sql.rstrip().endswith("WITHOUT ROWID")
    for batch in (1, 2):
        hashes = [bytes(h) for b, h in rows if b == batch]
        assert len(hashes) == BATCH_MIN and hashes == sorted(hashes)
