"""The ledger over the real broker: holding, batches, idempotent resend, every refusal, reports."""

from __future__ import annotations

import secrets
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hub_fixtures import Hub, chain_of, file_digests, held_of

from election import tokens
from election.ballot import Token
from election.chain import Checkpoint, tracking_code, verify_chain, verify_document
from election.encoding import canonical_bytes, parse_json
from infra.mqtt import HubClient
from station_hub.operator import change_polls
from station_hub.station import Station
from station_hub.terminal_client import CheckinRefused, TerminalClient

CHOICES = {"contest-1": {"candidate-2"}, "contest-2": {"candidate-1"}}


def open_polls(station: Station) -> dict[str, Any]:
    with HubClient(station, "op1").connect() as operator:
        return change_polls(operator, "open")


def submission(terminal: TerminalClient, ballot: dict[str, Any]) -> bytes:
    """Any ballot JSON as ``terminal`` submits it, with its latest device statement."""
    statement = terminal.statements[terminal.sealed[-1]]
    return canonical_bytes({"version": 2, "type": "cast_ballot", "ballot": ballot, "statement": statement.to_json()})


def resign(terminal: TerminalClient, data: dict[str, Any]) -> bytes:
    """``data`` signed by ``terminal`` as a sealed ballot, submitted with its latest statement."""
    body = {k: v for k, v in data.items() if k != "signature"}
    body["signature"] = terminal.signer.sign(canonical_bytes(body)).hex()
    return submission(terminal, body)


def test_a_ballot_is_held_at_once_resends_are_idempotent_and_a_full_pool_is_chained_sorted(
    hub: Hub, station: Station, voters: list[str]
):
    zero = open_polls(station)
    ledger_key = station.signing_key("ledger").public_key()
    body = verify_document(zero, ledger_key)
    assert body["type"] == "zero_report" and body["position"] == 0 and body["version"] == 2
    assert body["head_hash"] == station.genesis.hex()
    assert body["terminals"] == {"t1": 0, "t2": 0}
    with TerminalClient(station, "t1").connect() as t1:
        ballot = t1.seal(CHOICES, t1.check_in(voters[0]))
        payload = t1.submission(ballot)
        ack = t1.submit(payload)
        assert ack == {"version": 2, "type": "ack", "result": "held", "ballot_hash": ballot.ballot_hash.hex(),
                       "tracking_code": tracking_code(ballot.ballot_hash)}  # fmt: skip
        assert t1.submit(payload) == ack
        assert chain_of(station) == [], "one ballot is fewer than the election's batch_min (2): it waits"
        second = t1.seal(CHOICES, t1.check_in(voters[1]))
        assert t1.submit(t1.submission(second))["result"] == "held"
        assert t1.submit(payload) == ack
        t1.subscribe(station.topics.checkpoint)
        checkpoint = t1.next_message(5, lambda m: m.topic == station.topics.checkpoint and b'"position":2' in m.payload)
    hub.stop()
    chain = chain_of(station)
    hashes = verify_chain(station.genesis, chain, batch_min=2)
    assert [e.ballot_hash for e in chain] == sorted([ballot.ballot_hash, second.ballot_hash])
    assert {e.batch for e in chain} == {1}
    signed = Checkpoint.from_signed(parse_json(checkpoint.payload), ledger_key)
    assert signed.matches(station.genesis, hashes)


def make_refusals(
    first_token: Token, t1: TerminalClient, t2: TerminalClient, voters: list[str]
) -> list[tuple[str, str, bytes, str]]:
    """(name, sender, payload, expected reason) for every kind of bad ballot.

    Built on t1's next (valid, never sent) ballot; ``first_token`` is already in the chain.
    """
    good = t1.seal(CHOICES, t1.check_in(voters[1]))
    base = good.to_json()
    statement = t1.statements[good.ballot_hash].to_json()
    foreign_roll = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    message = secrets.token_bytes(32)
    request = tokens.blind(foreign_roll.public_key(), message)
    forged = Token(
        message,
        tokens.finalize(
            foreign_roll.public_key(), message, tokens.blind_sign(foreign_roll, request.blinded),
            request,
        ),
    )  # fmt: skip

    def variant(**changes: Any) -> bytes:
        return resign(t1, {**base, **changes})

    bad_proof = parse_json(canonical_bytes(base))
    proof = bad_proof["contests"][0]["selections"][0]["proof"]
    first_key = next(iter(proof))
    value = proof[first_key]
    proof[first_key] = [value[1], value[0], *value[2:]] if isinstance(value, list) else value
    assert bad_proof != base, "the proof tampering must change the ballot"
    t2_ballot = t2.submission(t2.seal(CHOICES, t2.check_in(voters[2])))
    forged_statement = {**statement, "signature": t2.signer.sign(b"not the statement").hex()}
    other_election = secrets.token_hex(32)
    wrong_election = {"version": 2, "type": "cast_ballot", "statement": {**statement, "base_hash": other_election},
                      "ballot": parse_json(variant(base_hash=other_election))["ballot"]}  # fmt: skip
    unsigned = {"version": 2, "type": "cast_ballot", "ballot": base, "statement": forged_statement}
    return [
        ("oversized", "t1", b"{" + b" " * 300_000 + b"}", "too_large"),
        ("not json", "t1", b"{not json", "malformed"),
        ("not canonical", "t1", submission(t1, base).replace(b",", b", ", 1), "malformed"),
        ("a bare ballot, as in format 1", "t1", canonical_bytes(base), "malformed"),
        ("unknown field", "t1", variant(extra=1), "malformed"),
        ("wrong election", "t1", canonical_bytes(wrong_election), "wrong_election"),
        ("other device", "t1", t2_ballot, "device_mismatch"),
        ("bad signature", "t1", submission(t1, {**base, "ballot_id": secrets.token_hex(16)}), "bad_signature"),
        ("statement not signed by the device", "t1", canonical_bytes(unsigned), "bad_statement"),
        ("no token", "t1", variant(token=None), "no_token"),
        ("token of another roll", "t1", variant(token=forged.to_json()), "bad_token"),
        ("replayed token", "t1", variant(token=first_token.to_json()), "token_used"),
        ("bad proof", "t1", resign(t1, bad_proof), "bad_proof"),
    ]


def test_every_bad_ballot_is_refused_with_a_reason_and_changes_no_database(
    hub: Hub, station: Station, voters: list, stranger: object
):
    open_polls(station)
    with (
        TerminalClient(station, "t1").connect() as t1,
        TerminalClient(station, "t2").connect() as t2,
    ):
        ballot = t1.seal(CHOICES, t1.check_in(voters[0]))
        payload = t1.submission(ballot)
        first = t1.submit(payload)
        assert first["result"] == "held"
        cases = make_refusals(ballot.token, t1, t2, voters)
    hub.stop()
    before = file_digests(station)
    hub.start()
    with (
        TerminalClient(station, "t1").connect() as t1,
        TerminalClient(station, "t2").connect() as t2,
    ):
        for name, _sender, bad, reason in cases:
            ack = t1.submit(bad)
            assert ack["result"] == "refused", name
            assert ack["reason"] == reason, (name, ack)
            assert ack["detail"], name
        # A resend of the held ballot is answered as before and adds nothing.
        assert t1.submit(payload) == first
        with pytest.raises(CheckinRefused) as refused:
            t2.check_in(voters[0])
        assert refused.value.reason == "already_voted"
        with pytest.raises(CheckinRefused) as refused:
            t2.check_in(stranger)
        assert refused.value.reason == "not_eligible"
        reply = parse_json(t2.ask_roll(b'{"version":1,"type":"checkin"}'))
        assert reply["result"] == "refused" and reply["reason"] == "malformed"
    hub.stop()
    assert file_digests(station) == before
    assert held_of(station) == {ballot.ballot_hash} and chain_of(station) == []
