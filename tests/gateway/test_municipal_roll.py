"""The municipal roll on a real PostgreSQL server: card-proven check-ins of several stations
against one register, the atomic mark under real concurrent connections, one token key per
municipality (store + core; the MQTT path is in test_municipal_roll_mqtt.py)."""

from __future__ import annotations

import secrets
import threading
import time
from pathlib import Path

import pytest
from gateway_fixtures import fresh_database
from municipal_fixtures import MUNICIPALITY, CardHolder, Electorate, make_municipality, prepare_store

from election import tokens
from gateway.errors import GatewayError
from gateway.municipal_roll import MunicipalRoll, MunicipalStore, SharedChallenges
from infra.rollcore import RollCore
from protocol.messages import CheckinChallenge, CheckinGranted, CheckinRefused, decode_checkin_reply

STATIONS = {"st-a": "early", "st-b": "common"}


@pytest.fixture(scope="module")
def electorate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Electorate, Path]:
    root = tmp_path_factory.mktemp("municipality")
    return make_municipality(root), root


@pytest.fixture
def database(postgres_admin: str, electorate: tuple[Electorate, Path]) -> str:
    url = fresh_database(postgres_admin)
    prepare_store(url, electorate[0], electorate[1], STATIONS)
    return url


@pytest.fixture(scope="module")
def cores(electorate: tuple[Electorate, Path]) -> dict[str, RollCore]:
    municipality = electorate[0].municipality
    return {municipality.municipality: municipality.core()}


def check_in(roll: MunicipalRoll, holder: CardHolder, card, blinded: bytes | None = None):
    """Both rounds through ``roll.handle`` (the relayed bytes); returns (reply, message, request)."""
    challenge = decode_checkin_reply(roll.handle(holder.station, holder.terminal, holder.challenge_request()).encode(),
                                     roll.store.modulus_length(MUNICIPALITY))  # fmt: skip
    assert isinstance(challenge, CheckinChallenge), challenge
    message, request = holder.blind()
    blinded = blinded or request.blinded
    payload = holder.request(card, challenge.challenge, blinded).encode()
    return roll.handle(holder.station, holder.terminal, payload), message, request


def test_checked_in_at_one_station_cannot_check_in_at_another(database, cores, electorate):
    voters = electorate[0].voters
    key = electorate[0].municipality.token_public_key()
    store = MunicipalStore(database)
    roll = MunicipalRoll(store, cores)
    try:
        at_a, at_b = CardHolder(key, "st-a", "a1"), CardHolder(key, "st-b", "b1")
        reply, message, request = check_in(roll, at_a, voters[0])
        assert isinstance(reply, CheckinGranted)
        token = tokens.finalize(key, message, reply.blind_signature, request)
        assert tokens.verify(key, message, token)  # the municipality's one key
        again, _, _ = check_in(roll, at_b, voters[0])
        assert isinstance(again, CheckinRefused) and again.reason == "already_voted"
        also_at_a, _, _ = check_in(roll, at_a, voters[0])
        assert isinstance(also_at_a, CheckinRefused) and also_at_a.reason == "already_voted"
        # The identical retry (same blinded token, new challenge) gets the identical grant.
        retry, _, _ = check_in(roll, at_a, voters[0], blinded=request.blinded)
        assert retry == reply
        other, _, _ = check_in(roll, at_b, voters[1])
        assert isinstance(other, CheckinGranted)
        assert store.checked_in(MUNICIPALITY) == 2
    finally:
        store.close()


def test_refusals_mark_nobody(database, cores, electorate):
    voters, stranger = electorate[0].voters, electorate[0].stranger
    key = electorate[0].municipality.token_public_key()
    store = MunicipalStore(database)
    roll = MunicipalRoll(store, cores)
    try:
        at_a = CardHolder(key, "st-a", "a1")
        not_on_roll, _, _ = check_in(roll, at_a, stranger)
        assert isinstance(not_on_roll, CheckinRefused) and not_on_roll.reason == "not_eligible"
        # An election-day or unknown station is not answered by the municipal roll.
        unknown = roll.handle("st-z", "z1", at_a.challenge_request())
        assert isinstance(unknown, CheckinRefused) and unknown.reason == "not_a_terminal"
        # The challenge is bound to station and terminal: st-a's challenge is no use at st-b.
        challenge = roll.handle("st-a", "a1", at_a.challenge_request())
        assert isinstance(challenge, CheckinChallenge)
        _, request = at_a.blind()
        stolen = CardHolder(key, "st-b", "b1").request(voters[2], challenge.challenge, request.blinded)
        moved = roll.handle("st-b", "b1", stolen.encode())
        assert isinstance(moved, CheckinRefused) and moved.reason == "bad_challenge"
        # A card signature over st-a's binding, presented by st-b with a challenge of its own.
        challenge_b = roll.handle("st-b", "b1", at_a.challenge_request())
        signed_for_a = at_a.request(voters[2], challenge_b.challenge, request.blinded)
        replayed = roll.handle("st-b", "b1", signed_for_a.encode())
        assert isinstance(replayed, CheckinRefused) and replayed.reason == "bad_card_signature"
        garbage = roll.handle("st-a", "a1", b'{"type":"checkin"}')
        assert isinstance(garbage, CheckinRefused) and garbage.reason == "malformed"
        store.set_polls(MUNICIPALITY, "closed")
        closed, _, _ = check_in(roll, at_a, voters[3])
        assert isinstance(closed, CheckinRefused) and closed.reason == "polls_not_open"
        assert store.checked_in(MUNICIPALITY) == 0
        with pytest.raises(GatewayError):
            store.import_voters(MUNICIPALITY, [secrets.token_bytes(32)])
    finally:
        store.close()


def test_the_mark_is_atomic_across_connections(database):
    """Eight connections mark the same voter at the same instant: exactly one wins, every time."""
    length = MunicipalStore(database).modulus_length(MUNICIPALITY)
    voter_keys = [row for row in _voter_keys(database)][:6]
    stores = [MunicipalStore(database) for _ in range(8)]
    try:
        for voter_key in voter_keys:
            assert sorted(race(stores, voter_key, length)) == [False] * 7 + [True]
        assert stores[0].checked_in(MUNICIPALITY) == len(voter_keys)
    finally:
        for store in stores:
            store.close()


def race(stores: list[MunicipalStore], voter_key: bytes, length: int) -> list[bool]:
    barrier = threading.Barrier(len(stores))
    wins: list[bool] = []
    lock = threading.Lock()

    def mark(store: MunicipalStore, blinded: bytes) -> None:
        barrier.wait()
        won = store.mark(MUNICIPALITY, voter_key, blinded)
        with lock:
            wins.append(won)

    threads = [threading.Thread(target=mark, args=(s, secrets.token_bytes(length))) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return wins


def _voter_keys(url: str) -> list[bytes]:
    import psycopg

    with psycopg.connect(url) as connection:
        rows = connection.execute("SELECT voter_key FROM mr_voters WHERE municipality = %s ORDER BY voter_key",
                                  (MUNICIPALITY,)).fetchall()  # fmt: skip
    return [bytes(row[0]) for row in rows]


class RacingStore(MunicipalStore):
    """Both check-ins read the voter's row before either marks it (the worst interleaving)."""

    barrier: threading.Barrier

    def lookup(self, municipality: str, voter_key: bytes) -> bytes | None:
        found = super().lookup(municipality, voter_key)
        if found is not None and not any(found):
            self.barrier.wait(10)
        return found


def test_a_concurrent_double_check_in_yields_one_token(database, cores, electorate):
    voters = electorate[0].voters
    key = electorate[0].municipality.token_public_key()
    holders = [CardHolder(key, "st-a", "a1"), CardHolder(key, "st-b", "b1")]
    stores = [RacingStore(database), RacingStore(database)]
    rolls = [MunicipalRoll(store, cores) for store in stores]
    try:
        for card in voters[4:9]:
            barrier = threading.Barrier(2)
            for store in stores:
                store.barrier = barrier
            prepared = []
            for roll, holder in zip(rolls, holders, strict=True):
                challenge = roll.handle(holder.station, holder.terminal, holder.challenge_request())
                message, request = holder.blind()
                prepared.append((holder.request(card, challenge.challenge, request.blinded), message, request))
            replies: list = [None, None]

            def run(i: int, card=card, prepared=prepared, replies=replies) -> None:
                replies[i] = rolls[i].check_in(holders[i].station, holders[i].terminal, prepared[i][0])

            threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
            granted = [i for i, reply in enumerate(replies) if isinstance(reply, CheckinGranted)]
            refused = [reply for reply in replies if isinstance(reply, CheckinRefused)]
            assert len(granted) == 1 and [r.reason for r in refused] == ["already_voted"], replies
            winner = granted[0]
            _, message, request = prepared[winner]
            token = tokens.finalize(key, message, replies[winner].blind_signature, request)
            assert tokens.verify(key, message, token)
        assert stores[0].checked_in(MUNICIPALITY) == 5
    finally:
        for store in stores:
            store.close()


def test_municipalities_are_separate_partitions(database, cores, electorate, tmp_path):
    """A voter of one municipality is not on another's roll; each has its own key and partition."""
    other = make_municipality(tmp_path, "nomi", count=2)
    prepare_store(database, other, tmp_path, {"st-n": "early"})
    both = {**cores, "nomi": other.municipality.core()}
    store = MunicipalStore(database)
    roll = MunicipalRoll(store, both)
    try:
        kaga_key = electorate[0].municipality.token_public_key()
        nomi_key = other.municipality.token_public_key()
        assert kaga_key.public_numbers() != nomi_key.public_numbers()
        wrong, _, _ = check_in(roll, CardHolder(nomi_key, "st-n", "n1"), electorate[0].voters[0])
        # The JPKI trust of nomi is another test CA: kaga's card does not even chain there.
        assert isinstance(wrong, CheckinRefused) and wrong.reason in ("unknown_issuer", "not_eligible")
        reply, message, request = check_in(roll, CardHolder(nomi_key, "st-n", "n1"), other.voters[0])
        assert isinstance(reply, CheckinGranted)
        token = tokens.finalize(nomi_key, message, reply.blind_signature, request)
        assert tokens.verify(nomi_key, message, token) and not tokens.verify(kaga_key, message, token)
        assert (store.eligible("nomi"), store.checked_in("nomi"), store.checked_in(MUNICIPALITY)) == (2, 1, 0)
        import psycopg

        with psycopg.connect(database) as connection:
            partitions = connection.execute("SELECT count(*) FROM pg_inherits WHERE inhparent = 'mr_voters'::regclass")
            assert partitions.fetchone()[0] == 2
    finally:
        store.close()


def test_challenges_are_shared_between_processes_and_used_once(database, electorate):
    """Two municipal-roll processes (two connections): either redeems what the other issued, once."""
    municipality = electorate[0].municipality
    first, second = SharedChallenges(database), SharedChallenges(database)
    slow = SharedChallenges(database, ttl=0.05)
    try:
        one, two = municipality.core(challenges=first), municipality.core(challenges=second)
        store = MunicipalStore(database)
        holder = CardHolder(municipality.token_public_key(), "st-a", "a1")
        challenge = one.challenge("a1", station="st-a")
        _message, request = holder.blind()
        signed = holder.request(electorate[0].voters[10], challenge.challenge, request.blinded)
        reply = MunicipalRoll(store, {MUNICIPALITY: two}).check_in("st-a", "a1", signed)
        assert isinstance(reply, CheckinGranted), reply
        assert first.redeem("st-a/a1", challenge.challenge) == "this challenge is unknown or was already used"
        other = first.issue("st-a/a1")
        assert second.redeem("st-b/b1", other) == "this challenge was issued to another terminal"
        stale = slow.issue("st-a/a1")
        time.sleep(0.2)
        assert second.redeem("st-a/a1", stale) == "this challenge has expired"
        for _ in range(12):  # at most MAX_OPEN_CHALLENGES open per terminal
            first.issue("st-a/a2")
        assert 0 < len(first) <= 8 + 1
        store.close()
    finally:
        for challenges in (first, second, slow):
            challenges.close()
