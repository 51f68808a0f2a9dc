"""The ledger's proof checks on every core: a batch checked by worker processes gets exactly the
decisions the ledger makes alone (good ballots held and chained in sorted batches, a bad proof refused),
and a worker that dies costs a retry in-process, not a ballot."""

from __future__ import annotations

import os
import pickle
import signal
import time

from hub_fixtures import Hub, chain_of
from test_ledger import CHOICES, open_polls, resign

from election.chain import verify_chain
from election.encoding import canonical_bytes, parse_json
from station_hub.ledger import Examiner, Unparsed
from station_hub.station import Station
from station_hub.terminal_client import TerminalClient


def bad_proof(terminal: TerminalClient, ballot_json: dict) -> bytes:
    data = parse_json(canonical_bytes(ballot_json))
    responses = data["contests"][0]["selections"][0]["proof"]["responses"]
    responses[0], responses[1] = responses[1], responses[0]
    return resign(terminal, data)


def test_the_examiner_crosses_a_process_boundary_and_judges_alike(station: Station) -> None:
    election = station.election()
    examiner = Examiner(election.manifest, election.context.joint_public_key, station.token_public_key(), True)
    copy = pickle.loads(pickle.dumps(examiner))
    assert copy.manifest.base_hash == election.manifest.base_hash and copy.check_proofs
    assert copy.token_key.public_numbers() == examiner.token_key.public_numbers()
    assert copy.examine_raw(b"{not json", None) == examiner.examine(b"{not json", None)
    assert isinstance(copy.examine_raw(b"{not json", None), Unparsed)


def burst(terminal: TerminalClient, station: Station, payloads: list[bytes]) -> dict[str, dict]:
    """Publish at once (the ledger takes them as one batch) and collect every ack."""
    for payload in payloads:
        terminal._client.publish(station.topics.ballot(terminal.terminal_id), payload, qos=1)
    acks: dict[str, dict] = {}
    deadline = time.monotonic() + 60
    while len(acks) < len(payloads) and time.monotonic() < deadline:
        for message in terminal.pending():
            if message.topic == station.topics.ack(terminal.terminal_id):
                ack = parse_json(message.payload)
                acks[ack["ballot_hash"]] = ack
        time.sleep(0.05)
    return acks


def test_a_batch_checked_on_two_workers_is_decided_as_one_process_decides(
    station: Station, broker, voters: list
) -> None:
    hub = Hub(station).start(proof_workers=2)
    try:
        open_polls(station)
        with TerminalClient(station, "t1").connect() as t1:
            t1.subscribe(station.topics.ack("t1"))
            ballots = [t1.seal(CHOICES, t1.check_in(voter)) for voter in voters[:6]]
            payloads = [t1.submission(b) for b in ballots]
            forged = bad_proof(t1, ballots[-1].to_json())
            acks = burst(t1, station, [*payloads[:-1], forged, payloads[-1]])
            pool = hub.ledger._pool if hub.ledger else None
            assert pool is not None and pool._processes, "the batch went through the proof workers"
            os.kill(next(iter(pool._processes)), signal.SIGKILL)  # a worker dies mid-election
            extra = [t1.seal(CHOICES, t1.check_in(voter)) for voter in voters[6:8]]
            after = burst(t1, station, [t1.submission(b) for b in extra])
    finally:
        hub.stop()
    held = [a for a in acks.values() if a["result"] == "held"]
    refused = [a for a in acks.values() if a["result"] == "refused"]
    assert len(held) == 6 and [a["reason"] for a in refused] == ["bad_proof"]
    assert [a["result"] for a in after.values()] == ["held", "held"]
    chain = chain_of(station)
    verify_chain(station.genesis, chain, batch_min=2)
    assert sorted(entry.ballot_hash for entry in chain) == sorted(b.ballot_hash for b in [*ballots, *extra])
