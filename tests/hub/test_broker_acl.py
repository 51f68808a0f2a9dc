"""The broker itself enforces identities: mutual TLS with the station CA and per-client ACLs."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519

from infra.broker import Broker
from infra.files import private_pem
from infra.mqtt import HubClient
from infra.pki import Role, StationCA, write_certificate
from station_hub.station import Station

NOT_AUTHORIZED = 135


def test_terminal_cannot_publish_on_another_terminals_topics(station: Station, broker: Broker):
    topics = station.topics
    with HubClient(station, "t1").connect() as t1:
        assert t1.publish(topics.ballot("t1"), b"{}") in (0, 16)
        assert t1.publish(topics.ballot("t2"), b"{}") == NOT_AUTHORIZED
        assert t1.publish(topics.checkin("t2"), b"{}") == NOT_AUTHORIZED
        assert t1.publish(topics.ack("t1"), b"{}") == NOT_AUTHORIZED
        assert t1.publish(topics.checkpoint, b"{}") == NOT_AUTHORIZED
        assert t1.publish(topics.polls_control, b"{}") == NOT_AUTHORIZED
        assert t1.publish(topics.roll_status, b"{}") == NOT_AUTHORIZED


def test_nobody_reads_what_is_not_theirs(station: Station, broker: Broker):
    """Terminal t1 sees neither t2's nor the roll's traffic; the ledger never sees check-ins,
    the roll never sees ballots, an operator sees neither."""
    topics = station.topics
    with (
        HubClient(station, "t1").connect() as t1,
        HubClient(station, "t2").connect() as t2,
        HubClient(station, "roll").connect() as roll,
        HubClient(station, "ledger").connect() as ledger,
        HubClient(station, "op1").connect() as operator,
    ):
        for spy in (t1, operator):
            spy.subscribe(f"{topics.root}/terminal/+/checkin")
            spy.subscribe(f"{topics.root}/terminal/t2/#")
            spy.subscribe(f"{topics.root}/roll/#") if spy is t1 else None
        roll.subscribe(topics.ballot("+"))
        ledger.subscribe(topics.checkin("+"))
        # Proof that subscriptions are live: t1 may read its own ack, written by the ledger.
        t1.subscribe(topics.ack("t1"))
        assert roll.publish(topics.roll_status, b"roll-secret", retain=False) in (0, 16)
        assert t2.publish(topics.checkin("t2"), b"voter-secret") in (0, 16)
        assert t2.publish(topics.ballot("t2"), b"ballot") in (0, 16)
        assert roll.publish(topics.checkin_reply("t2"), b"reply-secret") in (0, 16)
        assert ledger.publish(topics.ack("t2"), b"ack-secret") in (0, 16)
        assert ledger.publish(topics.ack("t1"), b"marker") in (0, 16)
        marker = t1.next_message(5, lambda m: m.payload == b"marker")
        assert marker.topic == topics.ack("t1")
        assert t1.pending() == []
        assert operator.pending() == []
        assert roll.pending() == []
        assert ledger.pending() == []


def test_certificate_from_another_ca_is_refused(station: Station, broker: Broker, tmp_path: Path):
    rogue = StationCA.create(tmp_path / "rogue-ca", station.station_id)
    key = ed25519.Ed25519PrivateKey.generate()
    write_certificate(tmp_path / "t1.pem", rogue.issue(key.public_key(), "t1", Role.TERMINAL))
    (tmp_path / "t1.key").write_bytes(private_pem(key))
    client = HubClient(
        station,
        "t1",
        cert_file=tmp_path / "t1.pem",
        key_file=tmp_path / "t1.key",
    )
    reason = client.wait_refused(timeout=5)
    assert reason
    # The genuine t1 still connects: the refusal was about the certificate.
    with HubClient(station, "t1").connect():
        pass


def test_generated_config_is_tls_only_with_identity_as_username(station: Station):
    config = station.broker_config.read_text()
    for line in (
        "require_certificate true",
        "use_identity_as_username true",
        "use_username_as_clientid true",
        "allow_anonymous false",
        "persistence false",
    ):
        assert line in config.splitlines()
    listeners = [line for line in config.splitlines() if line.startswith("listener")]
    assert listeners == [f"listener {station.port} {station.host}"]
