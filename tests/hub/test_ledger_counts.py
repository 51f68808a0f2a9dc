"""The closing report sets cast ballots against the roll's check-ins: challenged ones apart."""

from __future__ import annotations

import secrets

from election.chain import ChainState
from station_hub.ledger import LedgerState


def test_spoiled_entries_count_apart_from_cast_ballots() -> None:
    chain = ChainState(bytes(32))
    state = LedgerState(chain.head)
    for seq, (kind, token) in enumerate([("spoiled", None), ("cast", b"t1"), ("cast", b"t2")], start=1):
        entry = chain.next_entry(secrets.token_bytes(32), kind)
        state.record(entry, chain.append(entry), "T01", seq, token, secrets.token_bytes(16))
    assert state.per_device == {"T01": 2}
    assert state.spoiled == 1
    assert state.used_tokens == {b"t1", b"t2"}
    assert state.head == chain.head
