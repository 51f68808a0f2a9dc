"""The forward lag an operator sees: entries the centre has not confirmed yet."""

from __future__ import annotations

from pathlib import Path

from election.chain import ChainHead
from station_hub.forward_progress import FORWARD_DB, confirmed_position
from station_hub.forwarder import ForwardState
from station_hub.ledger_service import _forward_lag


def test_confirmed_position_follows_the_forwarders_state(tmp_path: Path) -> None:
    assert confirmed_position(tmp_path) is None  # never forwarded
    state = ForwardState(tmp_path / FORWARD_DB)
    try:
        assert confirmed_position(tmp_path) is None  # forwarding, nothing confirmed yet
        state.set_confirmed(ChainHead(7, bytes(32)))
        assert confirmed_position(tmp_path) == 7
    finally:
        state.close()
    assert _forward_lag(10, 7) == 3
    assert _forward_lag(7, 7) == 0
    assert _forward_lag(10, None) is None
