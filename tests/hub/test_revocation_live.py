"""`station-hub revoke T` takes effect at once, with nothing restarted: the broker reloads its
CRL and ACL and drops T's connection; the roll refuses T's check-ins and the ledger its
ballots, each with the reason ``revoked``."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from hub_fixtures import Hub, SoftCard, held_of
from test_checkin_card import marked, open_polls

from infra.broker import Broker
from infra.errors import SiteError
from infra.mqtt import HubClient
from infra.pki import StationCA, load_certificate
from station_hub.station import Station
from station_hub.terminal_client import CheckinRefused, TerminalClient

CHOICES = {"contest-1": {"candidate-1"}}
CLI = [sys.executable, "-m", "station_hub.cli"]


def test_revoke_drops_the_terminal_and_it_cannot_come_back(
    hub: Hub, broker: Broker, station: Station, voters: list[SoftCard]
):
    open_polls(station)
    t2 = TerminalClient(station, "t2").connect()
    try:
        token = t2.check_in(voters[0])  # before: t2 works
        sealed = t2.submission(t2.seal(CHOICES, token))
        broker_pid = broker.process.pid
        result = subprocess.run([*CLI, "revoke", str(station.directory), "t2"], capture_output=True, text=True,
                                timeout=60, check=True)  # fmt: skip
        assert "connection closed" in result.stdout, result.stdout + result.stderr
        deadline = time.monotonic() + 5
        while t2._connected.is_set() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not t2._connected.is_set(), "the revoked terminal's connection was dropped"
        time.sleep(2.5)  # paho reconnects on its own; the reloaded CRL refuses it
        assert not t2._connected.is_set(), "the revoked terminal could not reconnect"
        with pytest.raises(SiteError):
            t2.ask_roll(b"{}", timeout=2)
        with pytest.raises(SiteError):
            t2.submit(sealed, timeout=2)
    finally:
        t2.close()
    with pytest.raises(SiteError):
        HubClient(station, "t2").connect(timeout=3)
    assert broker.process.poll() is None and broker.process.pid == broker_pid, "the broker was not restarted"
    assert not [line for line in station.acl_file.read_text().splitlines() if line == "user t2"]
    # Everyone else carries on.
    with TerminalClient(station, "t1").connect() as t1:
        ballot = t1.seal(CHOICES, t1.check_in(voters[1]))
        assert t1.submit(t1.submission(ballot))["result"] == "held"
    assert len(held_of(station)) == 1


def test_roll_and_ledger_refuse_a_revoked_terminal_even_while_it_is_connected(
    hub: Hub, station: Station, voters: list[SoftCard]
):
    """Only the CRL changed (the broker not told): the services refuse on their own."""
    open_polls(station)
    with TerminalClient(station, "t2").connect() as t2:
        token = t2.check_in(voters[2])
        sealed = t2.submission(t2.seal(CHOICES, token))
        before = marked(station)
        StationCA.load(station.directory / "ca").revoke(load_certificate(station.cert_file("t2")).serial_number)
        with pytest.raises(CheckinRefused) as refused:
            t2.check_in(voters[3])
        assert refused.value.reason == "revoked"
        ack = t2.submit(sealed)
        assert ack["result"] == "refused" and ack["reason"].startswith("revoked"), ack
    assert marked(station) == before
    assert held_of(station) == set()
