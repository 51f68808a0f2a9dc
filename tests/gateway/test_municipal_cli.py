"""The operator's commands of the municipal roll, run as installed (``python -m gateway.cli``,
``python -m station_hub.cli`` in subprocesses) against a real PostgreSQL server and, for the
serving path, real Mosquitto brokers, station hubs (``station-hub run``: broker, ledger, roll
relay, forwarder), a central gateway worker and ``gateway municipal-roll serve``."""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from gateway_fixtures import fresh_database
from hub_fixtures import SoftCard, cards_of, jpki_files, make_electorate, roll_of

from demo.linking import link_station
from election import tokens
from gateway.central import Central
from gateway.cli import main as gateway_main
from gateway.harness import CentralOffice, wait_until_complete
from gateway.municipal_roll import MunicipalConfig, MunicipalRoll, MunicipalStore, config_path
from infra.broker import free_port, wait_for_port
from protocol.messages import CheckinGranted
from station_hub.cli import main as hub_main
from station_hub.roll import RollStore
from station_hub.station import Station, init_station
from station_hub.terminal_client import CheckinRefused, TerminalClient

GATEWAY, HUB = gateway_main, hub_main
"""The installed commands' entry points, invoked in this process (each refusal is checked as a
user sees it: exit code and message); the serving path runs them as processes."""
GATEWAY_PROCESS = [sys.executable, "-m", "gateway.cli"]
HUB_PROCESS = [sys.executable, "-m", "station_hub.cli"]


@dataclass
class Done:
    returncode: int
    stdout: str
    stderr: str


def run(command: click.Command | list[str], *args: object, ok: bool = True, timeout: float = 60) -> Done:
    """A command line: through its click entry point, or as a process when ``command`` is argv."""
    if isinstance(command, list):
        process = subprocess.run([*command, *map(str, args)], capture_output=True, text=True, timeout=timeout)
        done = Done(process.returncode, process.stdout, process.stderr)
    else:
        result = CliRunner().invoke(command, [str(a) for a in args], catch_exceptions=False)
        done = Done(result.exit_code, result.stdout, result.stderr)
    if ok:
        assert done.returncode == 0, f"{args}: {done.stdout}\n{done.stderr}"
    return done


def refused(command: click.Command, *args: object, words: str) -> str:
    """The command fails with exit code 1 and says ``words`` (a refusal with its reason)."""
    done = run(command, *args, ok=False)
    assert done.returncode == 1 and words in done.stderr, f"{args}: {done.returncode} {done.stdout} {done.stderr}"
    return done.stderr


@dataclass
class Register:
    """A municipality's voters as the election office holds them: the JPKI CA files, the roll
    salt it chose and the voter-key file made with it, and the voters' cards."""

    anchors: list[Path]
    crls: list[Path]
    salt_file: Path
    voters_file: Path
    cards: list[SoftCard]

    @property
    def salt(self) -> bytes:
        return bytes.fromhex(self.salt_file.read_text())


def make_register(root: Path, count: int = 6) -> Register:
    ca = make_electorate(root / "jpki", count)
    salt = secrets.token_bytes(32)
    (root / "salt.hex").write_text(salt.hex())
    document = {"format": "polling-station/voter-keys/v1", "mode": "auth", "voter_keys": roll_of(ca, salt)}
    (root / "voters.json").write_text(json.dumps(document))
    files = jpki_files(ca)
    return Register(files["jpki_anchors"], files["jpki_crls"], root / "salt.hex", root / "voters.json", cards_of(ca))


def set_up_centre(central: Central, url: str, register: Register, processes: int = 1) -> None:
    directory = central.directory
    run(GATEWAY, "municipal-roll", "init", directory, "--database", url, "--processes", processes)
    trust = [a for path in register.anchors for a in ("--jpki-ca", path)]
    trust += [a for path in register.crls for a in ("--jpki-crl", path)]
    made = run(GATEWAY, "municipal-roll", "add-municipality", directory, "kaga", *trust, "--roll-salt",
               register.salt_file)  # fmt: skip
    assert "municipality kaga added" in made.stdout and "unsealed" in made.stderr  # no passphrase in a test
    added = run(GATEWAY, "municipal-roll", "import-voters", directory, "kaga", register.voters_file)
    assert f"{len(register.cards)} voters added to kaga" in added.stdout


def join(central: Central, root: Path, station_id: str, kind: str, election: Path) -> Station:
    """A new station made an early/common polling place of kaga with the commands, then registered."""
    terminal = f"{station_id.removeprefix('st-')}1"  # device ids are election-wide: e1, c1
    station = init_station(root / station_id, station_id, election, [terminal], ["op1"], port=free_port())
    request, grant = root / f"{station_id}.roll.csr", root / f"{station_id}.municipal.json"
    run(HUB, "municipal-request", station.directory, request)
    added = run(GATEWAY, "municipal-roll", "add-station", central.directory, request, grant, "--municipality", "kaga",
                "--kind", kind)  # fmt: skip
    assert f"station {station_id}: {kind} polling place of kaga" in added.stdout
    linked = run(HUB, "municipal-link", station.directory, grant)
    assert f"{kind} polling place of kaga" in linked.stdout
    return Station.open(station.directory)


def test_the_commands_set_up_the_roll_and_refuse_with_reasons(
    tmp_path: Path, central: Central, postgres_admin: str, election_files
):
    url = fresh_database(postgres_admin)
    register = make_register(tmp_path)
    directory = central.directory
    refused(GATEWAY, "municipal-roll", "add-municipality", directory, "kaga", "--jpki-ca", register.anchors[0],
            "--jpki-crl", register.crls[0], words="gateway municipal-roll init")  # fmt: skip
    refused(GATEWAY, "municipal-roll", "init", directory, "--database", "sqlite.db", words="PostgreSQL")
    set_up_centre(central, url, register)
    assert central.cert_file("municipal-roll-1").exists()
    assert MunicipalConfig.read(config_path(directory)).database == url
    refused(GATEWAY, "municipal-roll", "init", directory, "--database", url + "x", words="another database")
    run(GATEWAY, "municipal-roll", "init", directory, "--database", url, "--processes", "2")  # adds an identity
    assert central.cert_file("municipal-roll-2").exists()
    refused(GATEWAY, "municipal-roll", "add-municipality", directory, "kaga", "--jpki-ca", register.anchors[0],
            "--jpki-crl", register.crls[0], words="already on the municipal roll")  # fmt: skip
    refused(GATEWAY, "municipal-roll", "add-municipality", directory, "Kaga City", "--jpki-ca", register.anchors[0],
            "--jpki-crl", register.crls[0], words="municipality")  # fmt: skip
    again = run(GATEWAY, "municipal-roll", "import-voters", directory, "kaga", register.voters_file)
    assert "0 voters added" in again.stdout and "6 on its register" in again.stdout
    bad_keys = tmp_path / "bad.json"
    bad_keys.write_text('{"format": "polling-station/voter-keys/v1", "mode": "auth", "voter_keys": ["zz"]}')
    refused(GATEWAY, "municipal-roll", "import-voters", directory, "kaga", bad_keys, words="Error")
    refused(GATEWAY, "municipal-roll", "import-voters", directory, "nomi", register.voters_file,
            words="nomi is not on the municipal roll (it has: kaga)")  # fmt: skip
    refused(GATEWAY, "municipal-roll", "polls", directory, "kaga", "close", words="pending: they cannot be closed")

    early = join(central, tmp_path, "st-e", "early", election_files[0])
    kaga = MunicipalConfig.read(config_path(directory)).municipality("kaga")
    assert early.token_public_file.read_bytes() == kaga.token_public_file.read_bytes()  # one key per municipality
    refused(HUB, "municipal-request", early.directory, tmp_path / "again.csr", words="already linked")
    (tmp_path / "marks.json").write_text("{}")
    refused(HUB, "import-early-marks", early.directory, tmp_path / "marks.json", "--marks-key",
            kaga.marks_public_file, "--municipality", "kaga", words="no roll of its own")  # fmt: skip

    # Grants go to the station they name; a tampered or misdirected grant installs nothing.
    other = init_station(tmp_path / "st-x", "st-x", election_files[0], ["t1"], ["op1"], port=free_port())
    run(HUB, "municipal-request", other.directory, tmp_path / "st-x.csr")
    refused(HUB, "municipal-link", other.directory, tmp_path / "st-e.municipal.json",
            words="for station st-e, not st-x")  # fmt: skip
    grant = (tmp_path / "st-e.municipal.json").read_bytes()
    (tmp_path / "tampered.json").write_bytes(grant.replace(b'"kind":"early"', b'"kind":"late"'))
    refused(HUB, "municipal-link", early.directory, tmp_path / "tampered.json", words="kind")
    refused(GATEWAY, "municipal-roll", "add-station", directory, tmp_path / "st-x.csr", tmp_path / "g.json",
            "--municipality", "nomi", "--kind", "common", words="nomi is not on the municipal roll")  # fmt: skip
    refused(GATEWAY, "municipal-roll", "add-station", directory, register.voters_file, tmp_path / "g.json",
            "--municipality", "kaga", "--kind", "common", words="not a certificate signing request")  # fmt: skip
    assert not (tmp_path / "g.json").exists()

    # A station registered with its own token key must join before it registers.
    registered = init_station(tmp_path / "st-r", "st-r", election_files[0], ["t1"], ["op1"], port=free_port())
    link_station(central, registered.directory)
    refused(HUB, "municipal-request", registered.directory, tmp_path / "r.csr", words="already registered")

    # An election-day station: known to the register, but never a check-in place.
    run(GATEWAY, "municipal-roll", "add-election-day-station", directory, "st-x", "--municipality", "kaga")
    refused(GATEWAY, "municipal-roll", "add-station", directory, tmp_path / "st-x.csr", tmp_path / "g.json",
            "--municipality", "kaga", "--kind", "common", words="election-day station")  # fmt: skip
    refused(GATEWAY, "municipal-roll", "add-election-day-station", directory, "st-e", "--municipality", "kaga",
            words="checks in at the municipal roll")  # fmt: skip
    shown = run(GATEWAY, "municipal-roll", "status", directory).stdout
    assert "kaga: polls pending, 6 on the register, 0 checked in" in shown
    assert "st-e (early)" in shown and "st-x (election_day)" in shown

    run(GATEWAY, "municipal-roll", "polls", directory, "kaga", "open")
    refused(GATEWAY, "municipal-roll", "polls", directory, "kaga", "open", words="they cannot be opened again")
    refused(GATEWAY, "municipal-roll", "import-voters", directory, "kaga", register.voters_file,
            words="before the polls open")  # fmt: skip
    refused(GATEWAY, "municipal-roll", "serve", directory, "--identity", "municipal-roll-9", words="no certificate")


def test_early_marks_in_and_station_marks_back_through_the_commands(
    tmp_path: Path, central: Central, postgres_admin: str, election_files
):
    """Early voting at the municipal roll, then an election-day station: its roll refuses the
    early voter after `import-early-marks`; after it closed, `export-marks` → `import-station-
    marks` marks its voters and finds the one who voted twice; `gateway status` flags it."""
    url = fresh_database(postgres_admin)
    register = make_register(tmp_path)
    directory = central.directory
    set_up_centre(central, url, register)
    run(GATEWAY, "municipal-roll", "polls", directory, "kaga", "open")
    kaga = MunicipalConfig.read(config_path(directory)).municipality("kaga")
    store = MunicipalStore(url)
    store.add_station("st-e", "kaga", "early")
    roll = MunicipalRoll(store, {"kaga": kaga.core()})

    def vote_early(card: SoftCard) -> None:
        from municipal_fixtures import CardHolder

        holder = CardHolder(kaga.token_public_key(), "st-e", "t1")
        challenge = roll.handle("st-e", "t1", holder.challenge_request())
        _message, request = holder.blind()
        granted = roll.check_in("st-e", "t1", holder.request(card, challenge.challenge, request.blinded))
        assert isinstance(granted, CheckinGranted), granted

    vote_early(register.cards[0])
    day = init_station(tmp_path / "st-day", "st-day", election_files[0], ["d1"], ["op1"], port=free_port(),
                       roll_salt=register.salt, jpki_anchors=register.anchors, jpki_crls=register.crls)  # fmt: skip
    run(HUB, "import-voters", day.directory, register.voters_file)
    link_station(central, day.directory)
    marks = tmp_path / "early-marks.json"
    exported = run(GATEWAY, "municipal-roll", "export-early-marks", directory, "kaga", marks)
    assert "1 early marks of kaga" in exported.stdout and "still open" in exported.stderr
    refused(HUB, "import-early-marks", day.directory, marks, "--marks-key", kaga.token_public_file, "--municipality",
            "kaga", words="Ed25519")  # fmt: skip
    refused(HUB, "import-early-marks", day.directory, marks, "--marks-key", kaga.marks_public_file, "--municipality",
            "nomi", words="municipality")  # fmt: skip
    imported = run(HUB, "import-early-marks", day.directory, marks, "--marks-key", kaga.marks_public_file,
                   "--municipality", "kaga")  # fmt: skip
    assert "1 voters of this station's roll are marked as having voted early in kaga" in imported.stdout
    vote_early(register.cards[1])  # after the marks were taken: the day station will let this voter in again

    segment = RollStore(day.roll_db, (day.token_public_key().key_size + 7) // 8)
    try:
        assert segment.voted_elsewhere() == 1
        refused(HUB, "export-marks", day.directory, tmp_path / "day.json", "--municipality", "kaga",
                words="once its polls are closed")  # fmt: skip
        # The station's election day, as its roll records it (the roll service is tested in tests/hub):
        # voter 1, who voted early after the marks were taken, and one voter who did not vote early.
        late_early = [k for k in store.marked_keys("kaga") if segment.lookup(k) == segment.empty]
        fresh = [k for k in sorted(bytes.fromhex(k) for k in json.loads(register.voters_file.read_text())["voter_keys"])
                 if segment.lookup(k) == segment.empty and k not in late_early]  # fmt: skip
        segment.set_polls("open")
        for key in (late_early[0], fresh[0]):
            segment.mark(key, secrets.token_bytes(len(segment.empty)))
        segment.set_polls("closed")
    finally:
        segment.close()
    run(HUB, "export-marks", day.directory, tmp_path / "day.json", "--municipality", "kaga")
    run(GATEWAY, "municipal-roll", "add-election-day-station", directory, "st-day", "--municipality", "kaga")
    back = run(GATEWAY, "municipal-roll", "import-station-marks", directory, "kaga", "st-day", tmp_path / "day.json")
    assert re.search(r"station st-day: 1 voters marked .* 1 already marked \(voted twice\)", back.stdout), back.stdout
    assert "reconcile" in back.stderr
    refused(GATEWAY, "municipal-roll", "import-station-marks", directory, "kaga", "st-e", tmp_path / "day.json",
            words="checks in at the municipal roll")  # fmt: skip
    store.close()

    status = run(GATEWAY, "status", directory, ok=False)
    assert status.returncode == 1, status.stdout
    assert "municipal roll reconciliation" in status.stdout
    assert "st-day: 1 voter(s) checked in here had already voted at another place" in status.stdout
    assert "kaga: polls open, 6 on the register, marks 2 at early/common places + 1 from election-day" in status.stdout


@pytest.mark.slow
def test_an_early_and_a_common_place_run_by_the_commands_then_reconciled(
    tmp_path: Path, central: Central, postgres_admin: str, election_files
):
    """The whole serving path as installed: `gateway municipal-roll serve`, two `station-hub run`
    (the relay started by `station-hub roll`), polls by the officials' commands at each station and
    at the municipality; one voter checks in at the early place and is refused at the common one;
    the closing reports carry the relays' counts and `gateway status` reconciles them."""
    url = fresh_database(postgres_admin)
    register = make_register(tmp_path)
    set_up_centre(central, url, register)
    early = join(central, tmp_path, "st-e", "early", election_files[0])
    common = join(central, tmp_path, "st-c", "common", election_files[0])
    for station in (early, common):
        link_station(central, station.directory)
    run(GATEWAY, "municipal-roll", "polls", central.directory, "kaga", "open")
    processes: list[subprocess.Popen] = []
    with CentralOffice(central, workers=1, log_dir=tmp_path / "logs") as _office:
        try:
            log = (tmp_path / "logs" / "municipal-roll.log").open("ab")
            serve = [*GATEWAY_PROCESS, "municipal-roll", "serve", central.directory, "--workers", "2"]
            processes.append(subprocess.Popen(serve, stdout=log, stderr=log))
            for station in (early, common):
                out = (tmp_path / "logs" / f"{station.station_id}.log").open("ab")
                processes.append(subprocess.Popen([*HUB_PROCESS, "run", station.directory], stdout=out, stderr=out))
                wait_for_port(station.host, station.port, 15, processes[-1])
            for station in (early, common):
                opened = run(HUB_PROCESS, "polls", station.directory, "open", "--operator", "op1", "--training-cards")
                assert json.loads(opened.stdout)["type"] == "zero_report"
            key = early.token_public_key()
            with TerminalClient(early, "e1").connect() as at_early, TerminalClient(common, "c1").connect() as at_common:
                token = _check_in_when_served(at_early, register.cards[0])
                assert tokens.verify(key, token.message, token.signature)
                assert cast(at_early, {"contest-1": {"candidate-1"}}, token)
                with pytest.raises(CheckinRefused) as again:
                    at_common.check_in(register.cards[0])
                assert again.value.reason == "already_voted"
                other = at_common.check_in(register.cards[1])
                assert cast(at_common, {"contest-1": {"candidate-2"}}, other)
            for station in (early, common):
                closed = run(HUB_PROCESS, "polls", station.directory, "close", "--operator", "op1", "--training-cards",
                             "--declare-unreachable", station.terminals[0])  # fmt: skip
                report = json.loads(closed.stdout)
                assert (report["check_ins"], report["ballots"]) == (1, 1), report
            with TerminalClient(common, "c1").connect() as late:
                with pytest.raises(CheckinRefused) as after:
                    late.check_in(register.cards[2])
                assert after.value.reason == "polls_not_open"
            run(GATEWAY, "municipal-roll", "polls", central.directory, "kaga", "close")
            wait_until_complete(central, ["st-e", "st-c"], timeout=60)
            status = run(GATEWAY_PROCESS, "status", central.directory, ok=False)
            assert "st-e (kaga, early): 1 check-ins, 1 ballots, marked on the municipal register" in status.stdout
            assert "st-c (kaga, common): 1 check-ins, 1 ballots" in status.stdout
            assert "2 check-ins at early/common places; in all 2 check-ins, 2 ballots, 0 voted twice" in status.stdout
            assert "! kaga" not in status.stdout and "! st-" not in status.stdout, status.stdout
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                assert process.wait(20) == 0, process.args


def cast(terminal: TerminalClient, choices: dict[str, set[str]], token: Any) -> bool:
    """Seal and submit a ballot as a booth does; True once the ledger holds it (its ack)."""
    ack = terminal.submit(terminal.submission(terminal.seal(choices, token)))
    return ack["result"] in ("held", "accepted")


def _check_in_when_served(client: TerminalClient, card: SoftCard, timeout: float = 20.0) -> Any:
    """The first check-in, once the relay and the municipal roll are both up (until then the
    booth is told ``roll_unreachable``, which is what it must say)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return client.check_in(card)
        except CheckinRefused as refusal:
            if refusal.reason != "roll_unreachable" or time.monotonic() > deadline:
                raise
            time.sleep(0.3)
