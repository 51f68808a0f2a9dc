"""Card-proven check-in against the real roll and ledger over the real broker (soft cards:
the JPKI test CA's certificates and keys, signing as the card would)."""

from __future__ import annotations

import datetime as dt
import secrets
from pathlib import Path

import pytest
from hub_fixtures import Hub, SoftCard, file_digests, make_electorate

from appliance.card.authenticator import AuthMode
from appliance.card.testca import TestCa
from election import tokens
from election.encoding import parse_json
from infra.broker import Broker
from infra.mqtt import HubClient
from protocol.messages import CheckinRequest, checkin_binding
from station_hub.operator import change_polls
from station_hub.roll import RollStore
from station_hub.station import Station, install_jpki
from station_hub.terminal_client import CheckinRefused, TerminalClient

CHOICES = {"contest-1": {"candidate-1"}}


def open_polls(station: Station) -> None:
    with HubClient(station, "op1").connect() as operator:
        change_polls(operator, "open", 10)


def marked(station: Station) -> int:
    store = RollStore(station.roll_db, (station.token_public_key().key_size + 7) // 8)
    try:
        return store.checked_in()
    finally:
        store.close()


def refusal(client: TerminalClient, payload: bytes) -> str:
    reply = parse_json(client.ask_roll(payload))
    assert reply["result"] == "refused", reply
    return reply["reason"]


def blinded(client: TerminalClient) -> bytes:
    return tokens.blind(client.token_key, secrets.token_bytes(32)).blinded


def test_a_proven_card_gets_a_token_once(hub: Hub, station: Station, voters: list[SoftCard]):
    open_polls(station)
    with TerminalClient(station, "t1").connect() as t1:
        ballot = t1.seal(CHOICES, t1.check_in(voters[0]))
        assert t1.submit(t1.submission(ballot))["result"] == "held"
        with pytest.raises(CheckinRefused) as again:
            t1.check_in(voters[0])
        assert again.value.reason == "already_voted"
    assert marked(station) == 1


def test_every_unproven_check_in_is_refused_and_marks_no_voter(
    hub: Hub, station: Station, voters: list[SoftCard], stranger: SoftCard
):
    open_polls(station)
    card = voters[1]
    with TerminalClient(station, "t1").connect() as t1, TerminalClient(station, "t2").connect() as t2:
        value = blinded(t1)
        challenge = t1.challenge()
        binding = checkin_binding(station.station_id, "t1", challenge, value)
        good = CheckinRequest(challenge, value, card.certificate_der, card.sign(binding))
        other = SoftCard(card.certificate_der, voters[2].key)  # a clone: the certificate, another key
        cases = {
            "no signature": (CheckinRequest(t1.challenge(), value, card.certificate_der, bytes(256)),
                             "bad_card_signature"),
            "signature of a clone": (CheckinRequest(challenge, value, card.certificate_der, other.sign(binding)),
                                     "bad_card_signature"),
            "another card's certificate": (
                CheckinRequest(t1.challenge(), value, voters[3].certificate_der, card.sign(binding)),
                "bad_card_signature"),
            "signature over another challenge": (
                CheckinRequest(t1.challenge(), value, card.certificate_der, card.sign(binding)),
                "bad_card_signature"),
            "signature over another blinded token": (
                CheckinRequest(challenge, blinded(t1), card.certificate_der, card.sign(binding)), "bad_challenge"),
            "a challenge never issued": (CheckinRequest(secrets.token_bytes(32), value, card.certificate_der,
                                                        card.sign(binding)), "bad_challenge"),
        }  # fmt: skip
        for name, (request, reason) in cases.items():
            assert refusal(t1, request.encode()) == reason, name
        # The genuine request, now: its challenge was spent by the "another blinded token" case.
        assert refusal(t1, good.encode()) == "bad_challenge"
        # A fresh one passes; replaying that same signed request is refused.
        fresh = t1.challenge()
        signed = CheckinRequest(fresh, value, card.certificate_der,
                                card.sign(checkin_binding(station.station_id, "t1", fresh, value)))  # fmt: skip
        assert parse_json(t1.ask_roll(signed.encode()))["result"] == "granted"
        assert refusal(t1, signed.encode()) == "bad_challenge", "a replayed signature"
        # A challenge is the terminal's own: t2 cannot use one issued to t1.
        lent = t1.challenge()
        stolen = CheckinRequest(lent, value, voters[4].certificate_der,
                                voters[4].sign(checkin_binding(station.station_id, "t2", lent, value)))  # fmt: skip
        assert refusal(t2, stolen.encode()) == "bad_challenge"
        with pytest.raises(CheckinRefused) as absent:
            t1.check_in(stranger)
        assert absent.value.reason == "not_eligible"
    assert marked(station) == 1, "only the one proven check-in marked a voter"


def test_revoked_expired_and_foreign_cards_and_a_stale_crl_are_refused(
    station: Station, broker: Broker, tmp_path: Path
):
    """A station trusting a CA of this test's own: revoke a card, make one expired, let the CRL go stale."""
    ca = make_electorate(tmp_path / "jpki", 0)
    now = dt.datetime.now(dt.UTC)
    good, revoked = ca.issue_card(), ca.issue_card()
    expired = ca.issue_card(not_before=now - dt.timedelta(days=30), not_after=now - dt.timedelta(days=1))
    foreign = make_electorate(tmp_path / "other-jpki", 0).issue_card()
    ca.revoke(revoked.card_id)
    install_jpki(station, [ca.directory / "auth-ca.pem"], [ca.crl_path(AuthMode.AUTH)])
    salt = station.roll_salt()
    store = RollStore(station.roll_db, (station.token_public_key().key_size + 7) // 8)
    store.import_voters(bytes.fromhex(k) for k in ca.roll(salt, AuthMode.AUTH)["voter_keys"])  # type: ignore[union-attr]
    store.close()
    hub = Hub(station).start()
    try:
        open_polls(station)
        before = marked(station)
        with TerminalClient(station, "t1").connect() as t1:
            for card, reason in ((revoked, "card_revoked"), (expired, "card_expired"), (foreign, "unknown_issuer")):
                with pytest.raises(CheckinRefused) as refused:
                    t1.check_in(SoftCard.of(card))
                assert refused.value.reason == reason
            # The CRL the roll holds is past its next update: no card passes, not even a good one.
            stale = tmp_path / "stale"
            stale.mkdir()
            crl = ca.crl_path(AuthMode.AUTH).read_bytes()
            _write_stale_crl(ca, stale / "auth-crl.pem")
            install_jpki(station, [], [stale / "auth-crl.pem"])
            with pytest.raises(CheckinRefused) as refused:
                t1.check_in(SoftCard.of(good))
            assert refused.value.reason == "stale_crl"
            assert marked(station) == before, "no voter marked by any refused check-in"
            # A fresh CRL installed (`station-hub jpki-crl`): the roll uses it at once.
            (stale / "auth-crl.pem").write_bytes(crl)
            install_jpki(station, [], [stale / "auth-crl.pem"])
            t1.check_in(SoftCard.of(good))
        assert marked(station) == before + 1
    finally:
        hub.stop()


def _write_stale_crl(ca: TestCa, path: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    now = dt.datetime.now(dt.UTC)
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.ca_certificate(AuthMode.AUTH).subject)
        .last_update(now - dt.timedelta(days=40))
        .next_update(now - dt.timedelta(days=10))
        .sign(ca.ca_private_key(AuthMode.AUTH), hashes.SHA256())
    )
    path.write_bytes(crl.public_bytes(serialization.Encoding.PEM))


def test_the_roll_never_stores_or_logs_the_certificate_or_signature(
    hub: Hub, station: Station, voters: list[SoftCard], caplog: pytest.LogCaptureFixture
):
    open_polls(station)
    caplog.set_level("DEBUG")
    card = voters[5]
    with TerminalClient(station, "t1").connect() as t1:
        value = blinded(t1)
        challenge = t1.challenge()
        signature = card.sign(checkin_binding(station.station_id, "t1", challenge, value))
        assert parse_json(t1.ask_roll(CheckinRequest(challenge, value, card.certificate_der, signature).encode()))[
            "result"] == "granted"  # fmt: skip
        t1.check_in(voters[6])
        refusal(t1, CheckinRequest(t1.challenge(), value, card.certificate_der, signature).encode())
    hub.stop()
    needles = [card.certificate_der, signature, card.certificate_der.hex().encode(), signature.hex().encode()]
    for path in station.directory.rglob("*"):
        if path.is_file() and path.parent.name not in ("anchors", "crls"):
            data = path.read_bytes()
            assert not any(needle in data for needle in needles), path
    assert not any(needle.decode(errors="ignore") in caplog.text for needle in needles[2:])
    assert file_digests(station)  # the databases exist and were read above
