"""What issue 11 found, as tests, for the hub↔centre protocol, the registration files and the
configuration files: ``"version": true``, states and reasons outside their enum, unbounded
details, ids with a trailing newline, booleans as integers, non-canonical input and entries
whose ballot is not a sealed ballot — each refused with the protocol's own Refusal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from protocol_samples import samples

from election.encoding import canonical_bytes, parse_json
from gateway.central import Central
from gateway.errors import GatewayError
from infra.errors import SiteError
from protocol.errors import Reason, Refusal
from protocol.forwarding import MAX_DETAIL, parse_statement, station_of_up_topic
from station_hub.station import Station


def _changed(name: str, path: tuple[object, ...], value: object) -> bytes:
    document = parse_json(samples()[name].valid)
    target = document
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return canonical_bytes(document)


def _refused(name: str, payload: bytes) -> Refusal:
    with pytest.raises(Refusal) as caught:
        samples()[name].decode(payload)
    assert caught.value.reason in (Reason.MALFORMED, Reason.TOO_LARGE)
    return caught.value


@pytest.mark.parametrize("name", ["hello", "batch", "confirm", "refused", "station registration", "link grant",
                                  "zero report", "checkpoint", "closing report"])  # fmt: skip
def test_version_true_is_not_version_1(name: str) -> None:
    _refused(name, _changed(name, ("version",), True))


@pytest.mark.parametrize(
    ("name", "path", "value"),
    [
        ("confirm", ("state",), "bogus"),
        ("confirm", ("state",), "OK"),
        ("confirm", ("position",), True),
        ("confirm", ("position",), -1),
        ("confirm", ("checkpoint",), False),
        ("confirm", ("closing", "check_ins"), True),
        ("confirm", ("request",), True),
        ("confirm", ("station_id",), "st-x\n"),
        ("confirm", ("station_id",), "st-y"),
        ("refused", ("reason",), "no_reason_we_know"),
        ("refused", ("detail",), "x" * (MAX_DETAIL + 1)),
        ("refused", ("station_id",), "st-y"),
        ("hello", ("request",), True),
        ("hello", ("request",), -1),
        ("hello", ("station_id",), "st-x\n"),
        ("batch", ("entries", 0, "ballot"), {}),
        ("batch", ("entries", 0, "ballot", "cast_at"), 1),
        ("batch", ("entries", 0, "opening"), {"contests": [], "extra": 1}),
        ("batch", ("entries", 0, "opening"), []),
        ("batch", ("entries", 0, "entry", "position"), True),
        ("batch", ("statements", 0, "position"), True),
        ("batch", ("statements", 0, "extra"), 1),
        ("batch", ("statements", 0, "station_id"), "st-x\n"),
        ("batch", ("statements", 1), {"type": "checkpoint"}),
        ("closing report", ("check_ins",), True),
        ("closing report", ("ballots",), -1),
        ("closing report", ("terminals", "x1\n"), 0),
        ("link grant", ("port",), True),
        ("link grant", ("port",), 0),
        ("link grant", ("station_id",), "st-x\n"),
        ("station registration", ("devices", "x1\n"), "00" * 32),
    ],
)
def test_what_a_strict_decoder_refuses(name: str, path: tuple[object, ...], value: object) -> None:
    _refused(name, _changed(name, path, value))


def test_two_statements_of_one_type_are_refused() -> None:
    document = parse_json(samples()["batch"].valid)
    document["statements"] = [document["statements"][1], document["statements"][1]]
    _refused("batch", canonical_bytes(document))


@pytest.mark.parametrize("name", ["hello", "batch", "confirm", "station registration", "link grant", "checkpoint"])
def test_non_canonical_input_is_refused(name: str) -> None:
    pretty = json.dumps(parse_json(samples()[name].valid), indent=1, sort_keys=True).encode()
    _refused(name, pretty)
    _refused(name, samples()[name].valid.decode().encode("utf-16"))


def test_a_too_large_message_is_refused_as_too_large() -> None:
    assert _refused("confirm", b" " * (64 * 1024 + 1)).reason is Reason.TOO_LARGE


def test_the_up_topic_names_a_station_in_full() -> None:
    assert station_of_up_topic("central/station/st-x/up") == "st-x"
    for topic in ("central/station/st-x\n/up", "central/station//up", "central/station/a/b/up", "x/st-x/up"):
        assert station_of_up_topic(topic) is None


def test_parse_statement_is_total() -> None:
    for payload in (b"", b"[]", b'{"type":"checkpoint"}', b'{"a":"\\ud800"}', b"9" * 5000):
        with pytest.raises(Refusal):
            parse_statement(payload)


@pytest.mark.parametrize(
    "change", [{"version": True}, {"version": 2}, {"port": True}, {"port": "8883"}, {"station_id": "st-1\n"},
               {"terminals": ["t1\n"]}, {"host": 5}]
)  # fmt: skip
def test_station_json_is_read_strictly(tmp_path: Path, change: dict) -> None:
    good = {"version": 1, "station_id": "st-1", "host": "127.0.0.1", "port": 8883, "terminals": ["t1"],
            "operators": ["op1"]}  # fmt: skip
    (tmp_path / "station.json").write_text(json.dumps(good))
    assert Station.open(tmp_path).port == 8883
    (tmp_path / "station.json").write_text(json.dumps({**good, **change}))
    with pytest.raises(SiteError):
        Station.open(tmp_path)


@pytest.mark.parametrize("change", [{"version": True}, {"port": True}, {"port": 70000}, {"database": None}])
def test_central_json_is_read_strictly(tmp_path: Path, change: dict) -> None:
    good = {"version": 1, "host": "127.0.0.1", "port": 8884, "database": ""}
    (tmp_path / "central.json").write_text(json.dumps(good))
    assert Central.open(tmp_path).port == 8884
    (tmp_path / "central.json").write_text(json.dumps({**good, **change}))
    with pytest.raises(GatewayError):
        Central.open(tmp_path)
