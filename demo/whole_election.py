"""A whole election on one machine, through the real parts, then its independent verification.

Central broker and gateway workers, a station hub (its Mosquitto with mutual TLS, ledger,
roll, forwarder), three booth terminals provisioned the technicians' way, voters with virtual
My Number cards on a PC/SC reader (pcscd + vpcd) and on PN532 readers (the adafruit driver
over a pseudo-terminal to the PN532 emulator), scripted voters going through the booths' real
session and UI API — some challenge their ballot first —, polls opened and closed by the
operator, forwarding, tally, decryption by 3 of 5 trustees, and ``election verify``.

With ``--common-place`` (the default): a municipal roll on PostgreSQL, an early-voting place
and a common polling place with a booth each (demo/multi_site.py); a voter votes early, tries
again at the common place on election day and is refused; the centre reconciles check-ins,
ballots and marks.

    polling-station-demo [--voters-per-booth N] [--out DIR] [--no-common-place]
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import click

from appliance.card import AuthMode
from appliance.card.testca import CardFile, TestCa
from appliance.config import load_config
from appliance.provision import ProvisionRequest, ReaderSettings, provision
from appliance.runner import BoothRunner
from appliance.simulators.jpki_card import VirtualJpkiCard
from appliance.simulators.pcscd import PrivatePcscd
from appliance.simulators.pn532_emulator import Pn532Emulator, PtyPn532
from appliance.simulators.scripted_voter import ScriptedVoter
from appliance.simulators.vpcd import VpcdCardLink
from demo.linking import link_station
from demo.multi_site import MultiSite
from election.manifest import Manifest
from election.record import DirectoryRecord
from election.simulation import ceremony_to_files
from election.stations import lookup_tracking_code
from election.verify import CHECKS, verify_record
from gateway.central import init_central
from gateway.harness import CentralOffice, export_and_tally, wait_until_complete
from infra.broker import free_port
from infra.mqtt import HubClient
from infra.official_card import OfficialInReader
from infra.officials import make_training_card
from station_hub.enrolment import enroll, write_package
from station_hub.operator import change_polls
from station_hub.roll import RollStore, read_voter_keys
from station_hub.station import Station, init_station

STATION_ID = "station-1"
OPERATOR = "op1"
TRUSTEES, QUORUM = 5, 3
PIN = "1234"


class Stage:
    """Prints each step with the elapsed time, so the run shows its progress."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def __call__(self, text: str) -> None:
        click.echo(f"[{time.monotonic() - self.started:6.1f} s] {text}")


def demo_manifest(batch_min: int = 3) -> Manifest:
    def name(en: str, ja: str) -> dict[str, str]:
        return {"en": en, "ja": ja}

    return Manifest.from_json(
        {
            "version": 2,
            "election_id": "demo-2026",
            "name": name("Demonstration election 2026", "2026年 模擬選挙"),
            "contests": [
                {
                    "id": "governor",
                    "name": name("Governor", "知事"),
                    "limit": 1,
                    "selections": [
                        {"id": "sato", "name": name("Sato Hanako", "佐藤 花子")},
                        {"id": "suzuki", "name": name("Suzuki Ichiro", "鈴木 一郎")},
                        {"id": "takahashi", "name": name("Takahashi Ken", "高橋 健")},
                    ],
                },
                {
                    "id": "assembly",
                    "name": name("Assembly (choose up to 2)", "議会（2名まで）"),
                    "limit": 2,
                    "selections": [
                        {"id": "tanaka", "name": name("Tanaka Yui", "田中 結衣")},
                        {"id": "watanabe", "name": name("Watanabe Sho", "渡辺 翔")},
                        {"id": "ito", "name": name("Ito Mei", "伊藤 芽衣")},
                        {"id": "yamamoto", "name": name("Yamamoto Ren", "山本 蓮")},
                    ],
                },
            ],
            # A rehearsal: a real election mixes at least 10 ballots per batch (the manifest
            # refuses fewer in production); the demo's few voters need small batches.
            "batch_min": batch_min,
            "mode": "rehearsal",
        }
    )


@dataclass
class Booth:
    """One terminal: its reader (PC/SC or PN532 emulator), its runner and its voters."""

    terminal: str
    runner: BoothRunner
    insert: Callable[[CardFile], Callable[[], None]]
    voters: list[CardFile]
    cast: list[dict[str, list[str]]] = field(default_factory=list)
    tracking_codes: list[str] = field(default_factory=list)
    challenges: int = 0
    finished: list[float] = field(default_factory=list)
    """When each voter's cast ballot was held by the hub (monotonic clock), beside
    ``tracking_codes``: the true casting order, which nothing stored may keep (kept in memory
    for the order test, never written)."""
    challenged: list[tuple[dict[str, list[str]], float]] = field(default_factory=list)
    """The choices each challenger revealed, and when."""


def provision_terminal(station: Station, terminal: str, data_dir: Path, reader: ReaderSettings,
                       package: Path) -> Path:  # fmt: skip
    """The technicians' path (docs/provisioning.md): flash.sh's provisioning from the station
    package makes the device key and a certificate request, the hub enrols it (`station-hub
    enroll`), the certificate is installed; the booth's site file (booth.toml) gives its UI port.
    No file is copied by hand: the card trust, roll key and election come from the package."""
    request = ProvisionRequest(terminal, package, data_dir, no_board=True, reader=reader)
    if not provision(request).waiting_for_certificate:
        raise RuntimeError(f"{terminal}: expected to wait for its certificate")
    certificate = data_dir.parent / f"{terminal}.pem"
    certificate.write_bytes(enroll(station, (data_dir / "device" / "request.csr").read_bytes()).pem)
    result = provision(ProvisionRequest(terminal, package, data_dir, certificate=certificate))
    if result.waiting_for_certificate:
        raise RuntimeError(f"{terminal}: the enrolled certificate was not installed")
    site = data_dir.parent / f"{terminal}-booth.toml"
    site.write_text(f'mode = "training"\ndata_dir = "{data_dir}"\n\n[ui]\nport = {free_port()}\n')
    return site


@contextmanager
def hub_process(station_dir: Path, log: Path) -> Iterator[subprocess.Popen]:
    """``station-hub run``: Mosquitto, ledger, roll and (once registered) the forwarder."""
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "station_hub.cli", "run", str(station_dir)], stdout=out, stderr=out
        )
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


OFFICIALS_READER = "Virtual PCD 00 01"
"""vpcd's second reader (the first is booth T01's): the officials' cards, one after the other."""
OFFICIAL_PINS = {"station_manager": "1357", "witness": "2468"}


def officials_cards(station: Station, directory: Path, pcscd: PrivatePcscd) -> list[OfficialInReader]:
    """The station manager's and a witness's training cards (`station-hub issue-official-card
    --training`), each inserted in turn into the officials' reader through pcscd when it signs."""
    signers = []
    for function, pin in OFFICIAL_PINS.items():
        path = directory / f"{function}.json"
        make_training_card(station.directory, function, f"demo-{function}", pin, path)
        card = CardFile.load(path)

        def insert(card: CardFile = card) -> Callable[[], None]:
            return VpcdCardLink(VirtualJpkiCard(card), port=pcscd.port + 1).close

        signers.append(OfficialInReader(OFFICIALS_READER, function, lambda label, pin=pin: pin, insert=insert,
                                        wait=20))  # fmt: skip
    return signers


def polls(station: Station, command: str, officials: list[OfficialInReader] | None = None) -> dict:
    with HubClient(station, OPERATOR) as operator:
        operator.connect()
        return change_polls(operator, command, timeout=30, officials=officials)


def random_choices(manifest: Manifest, rng: random.Random) -> dict[str, list[str]]:
    return {c.id: sorted(rng.sample(c.selection_ids(), rng.randint(0, c.limit))) for c in manifest.contests}


def cast_random(
    voter: ScriptedVoter, manifest: Manifest, rng: random.Random, where: str
) -> tuple[dict[str, list[str]], str]:
    """The voter on the ballot screen marks random choices, seals and casts: (choices, tracking
    code), once the receipt says the hub holds the ballot (RuntimeError if it does not)."""
    choices = random_choices(manifest, rng)
    voter.vote(choices)
    voter.seal()
    receipt = voter.cast(wait_for_code=True)
    if receipt["receipt"] != "held":
        raise RuntimeError(f"{where}: the hub did not confirm it holds the ballot")
    return choices, receipt["tracking_code"]


def run_voters(booth: Booth, manifest: Manifest, rng: random.Random, challenge_every: int, say: Stage) -> None:
    """Each voter taps the card, types the PIN, votes (maybe challenges first), casts, leaves."""
    assert booth.runner.ui is not None
    voter = ScriptedVoter(booth.runner.ui.url, timeout=60)
    for number, card in enumerate(booth.voters, start=1):
        voter.wait_screen("idle", card_present=False)
        remove = booth.insert(card)
        try:
            voter.wait_screen("pin")
            voter.pin(PIN)
            voter.wait_screen("ballot")
            if challenge_every and number % challenge_every == 0:
                revealed = random_choices(manifest, rng)
                voter.vote(revealed)
                voter.seal()
                voter.challenge()  # Benaloh: the ballot is opened, spoiled, never counted
                booth.challenges += 1
                booth.challenged.append((revealed, time.monotonic()))
                voter.tap("vote_again")
            choices, code = cast_random(voter, manifest, rng, f"{booth.terminal}, voter {number}")
            booth.cast.append(choices)
            booth.tracking_codes.append(code)
            booth.finished.append(time.monotonic())
            voter.tap("done")
        finally:
            remove()
        say(f"{booth.terminal}: voter {number}/{len(booth.voters)} cast, tracking code {code}")


def run(
    out: Path,
    voters_per_booth: int,
    challenge_every: int,
    seed: int | None,
    pcscd: PrivatePcscd | None = None,
    *,
    common_place: bool = False,
    batch_min: int = 3,
    observed: list[Booth] | None = None,
) -> bool:
    """The whole election; True when it verified. ``pcscd``: an already running private one;
    ``observed`` receives the booths (what each voter chose and when), for tests."""
    say = Stage()
    rng = random.Random(seed)
    manifest = demo_manifest(batch_min)
    out.mkdir(parents=True, exist_ok=False)
    logs = out / "logs"
    logs.mkdir()

    say(f"key ceremony: {TRUSTEES} trustees, any {QUORUM} can decrypt")
    package = out / "election-package"
    _context, key_files = ceremony_to_files(manifest, TRUSTEES, QUORUM, package, out / "trustee-keys")

    terminals = ["T01", "T02", "T03"]
    say(f"voter cards: {3 * voters_per_booth} virtual My Number cards from the test CA, and the roll")
    cards = TestCa.create(out / "test-ca")
    voters = [cards.issue_card(pin=PIN) for _ in range(3 * voters_per_booth)]
    roll_salt = rng.randbytes(32)
    roll = json.dumps(cards.roll(roll_salt, AuthMode.AUTH)).encode()

    say(f"station hub {STATION_ID}: CA, certificates, Mosquitto config (mutual TLS, per-client ACL), roll")
    # The roll alone holds the roll salt and verifies each card itself against the JPKI CA and CRL.
    station = init_station(out / "station", STATION_ID, package, terminals, [OPERATOR], port=free_port(),
                           roll_salt=roll_salt, jpki_anchors=[cards.directory / "auth-ca.pem"],
                           jpki_crls=[cards.crl_path(AuthMode.AUTH)])  # fmt: skip
    store = RollStore(station.roll_db, (station.token_public_key().key_size + 7) // 8)
    store.import_voters(read_voter_keys(roll))
    store.close()

    say("terminals T01-T03 provisioned the technicians' way (device key made on the device, certificate)")
    station_package = write_package(station, out / "station-package.json")  # `station-hub export-package`
    readers = {"T01": ReaderSettings("pcsc", name=PrivatePcscd.reader)}
    pn532s = [PtyPn532(Pn532Emulator(None)) for _ in range(2)]
    readers |= {t: ReaderSettings("pn532-uart", port=pty.port) for t, pty in zip(terminals[1:], pn532s, strict=True)}
    configs = {
        t: provision_terminal(station, t, out / "terminals" / t, readers[t], out / "station-package.json")
        for t in terminals
    }
    say(f"station package sha256 {station_package.fingerprint()[:16]}…; terminals enrolled, no terminal key on the hub")

    say("central office: its CA and broker; the station registered with its terminals' keys")
    central = init_central(out / "central", package, port=free_port(), workers=2)
    link_station(central, station.directory)

    with ExitStack() as stack:
        # Issue 17: the municipal roll and its early/common places (their identities must be in
        # the central broker's ACL, so before it starts).
        # Its own random source: the election-day voters' choices stay those of the seed.
        site = stack.enter_context(MultiSite(out, central, package, random.Random(seed), say)) if common_place else None
        say("central broker and 2 gateway workers (shared subscription)")
        stack.enter_context(CentralOffice(central, workers=2, log_dir=logs / "central"))
        say("station hub: Mosquitto, ledger, roll, forwarder")
        stack.enter_context(hub_process(station.directory, logs / "station-hub.log"))
        for pty in pn532s:
            stack.callback(pty.close)
        if pcscd is None:
            pcscd = stack.enter_context(PrivatePcscd(out / "pcscd"))

        def vpcd_insert(card: CardFile) -> Callable[[], None]:
            link = VpcdCardLink(VirtualJpkiCard(card), port=pcscd.port)
            return link.close

        def pn532_insert(pty: PtyPn532) -> Callable[[CardFile], Callable[[], None]]:
            def insert(card: CardFile) -> Callable[[], None]:
                with pty.lock:
                    pty.emulator.insert(VirtualJpkiCard(card))

                def remove() -> None:
                    with pty.lock:
                        pty.emulator.remove()

                return remove

            return insert

        inserts = [
            (vpcd_insert, "PC/SC (pcscd + vpcd)"),
            (pn532_insert(pn532s[0]), "PN532 over UART"),
            (pn532_insert(pn532s[1]), "PN532 over UART"),
        ]
        booths = []
        for index, (terminal, (insert, label)) in enumerate(zip(terminals, inserts, strict=True)):
            runner = stack.enter_context(BoothRunner(load_config(configs[terminal])))
            say(f"booth {terminal} running, reader: {label}")
            mine = voters[index * voters_per_booth : (index + 1) * voters_per_booth]
            booths.append(Booth(terminal, runner, insert, mine))
        if observed is not None:
            observed.extend(booths)
        for booth in booths:
            assert booth.runner.booth is not None
            if not booth.runner.booth.link.wait_online(20):
                raise RuntimeError(f"booth {booth.terminal} did not reach the hub")

        if site is not None:
            site.start(stack, logs)
            site.early_voting(manifest)
        officials = officials_cards(station, out / "officials", pcscd)
        report = polls(station, "open", officials)
        say(f"polls opened by {OPERATOR} with the station manager's and a witness's cards (pcscd, PIN on the "
            f"card); signed zero report at chain position {report.get('position')}")  # fmt: skip

        failures: list[BaseException] = []

        def vote(booth: Booth) -> None:
            try:
                run_voters(booth, manifest, random.Random(rng.random()), challenge_every, say)
            except BaseException as error:  # reported after the threads join
                failures.append(error)

        threads = [threading.Thread(target=vote, args=(b,), name=b.terminal) for b in booths]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if failures:
            raise failures[0]

        report = polls(station, "close", officials)
        say(f"polls closed with both officials' cards; signed closing report: {report.get('ballots')} ballots, "
            f"{report.get('check_ins')} check-ins, final head position {report.get('position')}")  # fmt: skip

        refused = site.common_place(manifest) if site is not None else True
        places = [STATION_ID, *(site.station_ids if site is not None else [])]
        say(f"waiting for the central office to hold the whole chain of {', '.join(places)}")
        wait_until_complete(central, places, timeout=120)
        reconciled = True
        if site is not None:
            lines, reconciled = site.reconciliation()
            say("the centre's reconciliation (`gateway status`): check-ins vs ballots vs marks")
            for line in lines:
                click.echo(f"         {line}")
        record = out / "record"
        say(f"export of the election record, tally, decryption by {QUORUM} of {TRUSTEES} trustees")
        summary, results = export_and_tally(central, record, rng.sample(key_files, QUORUM))

    expected: dict[tuple[str, str], int] = {}
    for choices in [c for booth in booths for c in booth.cast] + (site.cast if site is not None else []):
        for contest, marked in choices.items():
            for selection in marked:
                expected[contest, selection] = expected.get((contest, selection), 0) + 1
    click.echo("")
    click.echo(f"RESULTS ({results.ballot_count} ballots cast, {sum(b.challenges for b in booths)} challenged "
               f"and spoiled; trustees present: {', '.join(results.trustees_present)})")  # fmt: skip
    for contest in manifest.contests:
        click.echo(f"  {contest.name['en']} / {contest.name['ja']}")
        for selection in contest.selections:
            total = results.totals[contest.id, selection.id]
            click.echo(f"    {selection.name['en']:<18} {selection.name['ja']:<8} {total:>4}")
    totals_match = all(results.totals[p] == expected.get(p, 0) for p in results.totals)
    click.echo(f"  decrypted totals {'EQUAL' if totals_match else 'DIFFER FROM'} what the scripted voters chose")

    click.echo("")
    click.echo(f"INDEPENDENT VERIFICATION of {record}")
    verification = verify_record(DirectoryRecord(record))
    for check in CHECKS:
        outcome = verification.outcomes[check.number]
        click.echo(f"  [{'PASS' if outcome.passed else 'FAIL'}] {check.number:>2}. {check.title}")
        for problem in outcome.problems[:3]:
            click.echo(f"         - {problem}")
    code = booths[0].tracking_codes[0]
    found = lookup_tracking_code(DirectoryRecord(record), code)
    where = f"found at {found.station_id} in batch {found.entry.batch}" if found else "NOT FOUND"
    click.echo(f"  voter's tracking code {code}: {where}")
    for problem in summary.problems:
        click.echo(f"  export problem: {problem}")
    ok = verification.passed and totals_match and found is not None and not summary.problems and refused and reconciled
    passed = len(CHECKS) - len(verification.failed_checks())
    verdict = "election verified" if ok else "PROBLEMS"
    say(f"{verdict}: {verification.ballots_checked} ballots, {passed}/{len(CHECKS)} checks passed; record in {record}")
    return ok


@click.command()
@click.option("--voters-per-booth", default=4, show_default=True)
@click.option("--challenge-every", default=3, show_default=True, help="every Nth voter challenges once (0: none)")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="working folder (default out/election-<time>)")  # fmt: skip
@click.option("--seed", type=int, default=None, help="drives the voters' choices")
@click.option("--common-place/--no-common-place", default=True, show_default=True,
              help="also an early-voting and a common polling place on one municipal roll (PostgreSQL)")  # fmt: skip
def main(voters_per_booth: int, challenge_every: int, out: Path | None, seed: int | None, common_place: bool) -> None:
    """Run a whole election on this machine through the real parts and verify it."""
    out = (out or Path("out") / f"election-{datetime.now():%Y%m%d-%H%M%S}").resolve()
    if not run(out, voters_per_booth, challenge_every, seed, common_place=common_place):
        sys.exit(1)


if __name__ == "__main__":
    main()
