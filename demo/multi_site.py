"""The demo's second and third polling places (issue 17): early voting at the city hall and a
common polling place (共通投票所) on election day, both checking voters in against one
municipal roll on a real PostgreSQL server — so that a voter who voted early and tries again
at the common place is refused.

Everything runs through the real parts, set up the way an election office would with the
commands (``gateway municipal-roll init|add-municipality|import-voters|add-station|polls|
serve``, ``station-hub municipal-request|municipal-link``; the same functions here):

- a PostgreSQL server (Debian ``postgresql``) holding the municipality's register;
- ``gateway municipal-roll serve`` on the central broker;
- two station hubs (``station-hub run``: Mosquitto, ledger, the roll relay to the municipal
  roll, forwarder), each registered at the centre with the municipality's token key;
- one booth at each, provisioned the technicians' way, with a PN532 reader (the emulator on a
  pseudo-terminal), and a scripted voter with a virtual My Number card tapping, typing the PIN
  and voting through the booth's own page.

Their chains go to the central office with the election-day station's, so the record, the
tally and the verifier cover all three places; the centre's reconciliation (``gateway
status``) is printed at the end. The municipality's voters hold cards of their own test CA
(so the election-day station's roll and its audit-log checks stay exactly as they were).

Called by demo/whole_election.py (``--common-place``, on by default in ``./demo.sh``)::

    with MultiSite(out, central, package_dir, rng, say) as site:   # before the central broker starts
        site.start(stack, logs)                                     # once it runs
        site.early_voting(manifest)                                 # days before election day
        …                                                           # election day at station-1
        site.common_place(manifest)                                 # the same voter: refused
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.card import AuthMode
from appliance.card.testca import CardFile, TestCa
from appliance.config import load_config
from appliance.provision import ReaderSettings
from appliance.runner import BoothRunner
from appliance.simulators.jpki_card import VirtualJpkiCard
from appliance.simulators.pn532_emulator import Pn532Emulator, PtyPn532
from appliance.simulators.scripted_voter import ScriptedVoter
from demo.linking import link_station
from election.manifest import Manifest
from gateway.central import Central
from gateway.municipal_roll import MunicipalStore, add_municipality, grant_municipal_link, init_municipal_roll
from gateway.reconcile import gather
from infra.broker import free_port
from infra.pgserver import PostgresServer
from station_hub.enrolment import write_package
from station_hub.municipal_relay import install_municipal_grant, request_municipal_link
from station_hub.roll import read_voter_keys
from station_hub.station import Station, init_station

MUNICIPALITY = "demo-city"
PLACES = (("city-hall", "early", "E01"), ("hall-2", "common", "C01"))
"""(station, kind, terminal) of the municipality's polling places (device ids are election-wide)."""


@dataclass
class Place:
    station: Station
    kind: str
    terminal: str
    pty: PtyPn532
    config: Path
    runner: BoothRunner | None = None
    cast: list[dict[str, list[str]]] = field(default_factory=list)
    tracking_codes: list[str] = field(default_factory=list)

    def voter(self) -> ScriptedVoter:
        assert self.runner is not None and self.runner.ui is not None
        return ScriptedVoter(self.runner.ui.url, timeout=60)

    def insert(self, card: CardFile) -> Callable[[], None]:
        """Tap ``card`` on this booth's PN532 reader; returns how to take it away."""
        with self.pty.lock:
            self.pty.emulator.insert(VirtualJpkiCard(card))

        def remove() -> None:
            with self.pty.lock:
                self.pty.emulator.remove()

        return remove


class MultiSite:
    """The municipal roll and its two polling places (see the module doc)."""

    def __init__(self, out: Path, central: Central, package: Path, rng: random.Random,
                 say: Callable[[str], None]) -> None:  # fmt: skip
        self.out = out / "municipal"
        self.central = central
        self.package = package
        self.rng = rng
        self.say = say
        self.stack = ExitStack()
        self.places: list[Place] = []
        self.voters: list[CardFile] = []
        self.url = ""

    @property
    def station_ids(self) -> list[str]:
        return [place.station.station_id for place in self.places]

    # --- before the central broker starts (its ACL lists the municipal roll's identity) ------

    def __enter__(self) -> MultiSite:
        try:
            self._prepare()
        except BaseException:
            self.stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stack.close()

    def _prepare(self) -> None:
        from demo.whole_election import PIN, provision_terminal

        self.out.mkdir(parents=True)
        ca = TestCa.create(self.out / "test-ca")
        self.voters = [ca.issue_card(pin=PIN) for _ in range(2)]
        # A short folder: PostgreSQL's socket path is limited to 107 bytes.
        pg_root = Path(tempfile.mkdtemp(prefix="demo-pg-", dir="/tmp"))
        self.stack.callback(shutil.rmtree, pg_root, ignore_errors=True)
        self.say(f"municipal roll of {MUNICIPALITY}: PostgreSQL server (register), `gateway municipal-roll init`")
        server = self.stack.enter_context(PostgresServer(pg_root / "server", durable=False))
        self.url = server.url
        init_municipal_roll(self.central.directory, self.url, processes=1)
        salt = self.rng.randbytes(32)
        trust = {"jpki_anchors": [ca.directory / "auth-ca.pem"], "jpki_crls": [ca.crl_path(AuthMode.AUTH)]}
        add_municipality(self.central.directory, MUNICIPALITY, roll_salt=salt, **trust)
        store = MunicipalStore(self.url)
        try:
            keys = read_voter_keys(json.dumps(ca.roll(salt, AuthMode.AUTH)).encode())
            store.import_voters(MUNICIPALITY, keys)
            store.change_polls(MUNICIPALITY, "open")
        finally:
            store.close()
        self.say(f"{MUNICIPALITY}: token key, roll salt, marks key; {len(keys)} voters on its register; polls open")
        for station_id, kind, terminal in PLACES:
            directory = self.out / station_id
            station = init_station(directory, station_id, self.package, [terminal], ["op1"], port=free_port(),
                                   training_terminal_keys=False, **trust)  # fmt: skip
            # `station-hub municipal-request` → `gateway municipal-roll add-station` → `station-hub municipal-link`
            grant = grant_municipal_link(self.central.directory, request_municipal_link(station), MUNICIPALITY, kind)
            install_municipal_grant(station, grant.encode())
            station = Station.open(directory)
            package = self.out / f"{station_id}-package.json"
            write_package(station, package)  # the booth blinds with the municipality's token key
            pty = PtyPn532(Pn532Emulator(None))
            self.stack.callback(pty.close)
            reader = ReaderSettings("pn532-uart", port=pty.port)
            config = provision_terminal(station, terminal, self.out / "terminals" / terminal, reader, package)
            link_station(self.central, directory)  # registered with its enrolled booth and the municipality's key
            self.places.append(Place(station, kind, terminal, pty, config))
            self.say(f"{station_id}: {kind} polling place of {MUNICIPALITY} (no roll of its own: a relay to the "
                     f"municipal roll), booth {terminal} with a PN532 reader, registered at the centre")  # fmt: skip

    # --- once the central broker runs --------------------------------------------------------

    def start(self, stack: ExitStack, logs: Path) -> None:
        """`gateway municipal-roll serve`, the two hubs and their booths (stopped with ``stack``)."""
        from demo.whole_election import hub_process

        log = (logs / "municipal-roll.log").open("ab")
        stack.callback(log.close)
        roll = subprocess.Popen([sys.executable, "-m", "gateway.cli", "municipal-roll", "serve",
                                 str(self.central.directory), "--workers", "2"], stdout=log, stderr=log)  # fmt: skip
        stack.callback(_stop, roll)
        for place in self.places:
            stack.enter_context(hub_process(place.station.directory, logs / f"{place.station.station_id}.log"))
        deadline = time.monotonic() + 30
        while b"serving check-ins" not in (logs / "municipal-roll.log").read_bytes():
            if roll.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the municipal roll did not start: see {logs / 'municipal-roll.log'}")
            time.sleep(0.1)
        for place in self.places:
            place.runner = stack.enter_context(BoothRunner(load_config(place.config)))
        for place in self.places:
            assert place.runner is not None and place.runner.booth is not None
            if not place.runner.booth.link.wait_online(20):
                raise RuntimeError(f"booth {place.terminal} did not reach its hub {place.station.station_id}")
        self.say("municipal roll serving on the central broker; hubs city-hall and hall-2 (roll relays) and their "
                 "booths running")  # fmt: skip

    def _vote(self, place: Place, card: CardFile, manifest: Manifest) -> None:
        from demo.whole_election import PIN, cast_random

        voter = place.voter()
        voter.wait_screen("idle", card_present=False)
        remove = place.insert(card)
        try:
            voter.wait_screen("pin")
            voter.pin(PIN)
            self._past_check_in(place, voter, "ballot")
            choices, code = cast_random(voter, manifest, self.rng, f"{place.terminal} at {place.station.station_id}")
            place.cast.append(choices)
            place.tracking_codes.append(code)
            voter.tap("done")
        finally:
            remove()
        self.say(f"{place.station.station_id} ({place.kind}): voter checked in at the municipal roll, cast, "
                 f"tracking code {code}")  # fmt: skip

    def _refused(self, place: Place, card: CardFile) -> dict[str, Any]:
        from demo.whole_election import PIN

        voter = place.voter()
        voter.wait_screen("idle", card_present=False)
        remove = place.insert(card)
        try:
            voter.wait_screen("pin")
            voter.pin(PIN)
            return self._past_check_in(place, voter, "already_voted", "ballot")
        finally:
            remove()

    def _past_check_in(self, place: Place, voter: ScriptedVoter, *screens: str) -> dict[str, Any]:
        """The screen after the check-in. Should the municipal roll not answer (a relay still
        reconnecting to the central broker), the booth says so plainly and the voter retries."""
        for _attempt in range(10):
            view = voter.wait_screen(*screens, "hub_unreachable", timeout=60)
            if view["screen"] != "hub_unreachable":
                return view
            self.say(f"{place.terminal}: the booth says {view.get('unreachable')!r} (nobody checked in): retry")
            time.sleep(1.0)
            voter.tap("retry")
        raise RuntimeError(f"{place.terminal}: the municipal roll stayed unreachable")

    def _polls(self, place: Place, command: str) -> dict[str, Any]:
        from demo.whole_election import polls

        return polls(place.station, command)  # the station's training officials' cards

    def early_voting(self, manifest: Manifest) -> None:
        """Days before election day: the city hall opens, voter A votes early, it closes."""
        place = self.places[0]
        self._polls(place, "open")
        self.say(f"EARLY VOTING at {place.station.station_id}: polls opened (zero report)")
        self._vote(place, self.voters[0], manifest)
        report = self._polls(place, "close")
        self.say(f"{place.station.station_id}: polls closed; closing report {report.get('ballots')} ballots, "
                 f"{report.get('check_ins')} check-ins (the relay's count)")  # fmt: skip

    def common_place(self, manifest: Manifest) -> bool:
        """Election day at the common place: voter A (voted early) is refused, voter B votes.
        True when the booth refused voter A with the already-voted screen."""
        place = self.places[1]
        self._polls(place, "open")
        self.say(f"COMMON POLLING PLACE {place.station.station_id} on election day: polls opened")
        view = self._refused(place, self.voters[0])
        refused = view["screen"] == "already_voted"
        self.say(f"{place.station.station_id}: the voter who voted early at city-hall taps the card and types the "
                 f"PIN: the booth shows {view['screen']!r}" + (" — REFUSED, one person one vote" if refused else
                 " — NOT REFUSED"))  # fmt: skip
        self._vote(place, self.voters[1], manifest)
        report = self._polls(place, "close")
        self.say(f"{place.station.station_id}: polls closed; closing report {report.get('ballots')} ballots, "
                 f"{report.get('check_ins')} check-ins")  # fmt: skip
        store = MunicipalStore(self.url)
        try:
            store.change_polls(MUNICIPALITY, "close")
        finally:
            store.close()
        return refused

    @property
    def cast(self) -> list[dict[str, list[str]]]:
        return [choices for place in self.places for choices in place.cast]

    def reconciliation(self) -> tuple[list[str], bool]:
        """`gateway status`'s reconciliation: its lines, and True if nothing disagrees."""
        store = self.central.store()
        try:
            found = gather(self.central.directory, store)
        finally:
            store.close()
        assert found is not None
        return found.text(), not found.problems


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)
