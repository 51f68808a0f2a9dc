"""Booth figures: time from the voter's "cast" to the hub's acknowledgement, and the booth's memory.

A station hub (Mosquitto with mutual TLS, ledger, roll) and one booth terminal run as their
own processes (`station-hub run`, `booth run`); the booth reads virtual cards through the
PN532 emulator on a pseudo-terminal; scripted voters drive it through the kiosk's HTTP API.
Prints cast→ack p50/p99 (what the voter waits for the tracking code) and the booth
process's resident memory (VmRSS, and its peak VmHWM) after the session.

    .venv/bin/python benchmarks/bench_booth.py [--voters N]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from appliance.card import AuthMode
from appliance.card.testca import TestCa
from appliance.config import load_config
from appliance.provision import ReaderSettings
from appliance.simulators.jpki_card import VirtualJpkiCard
from appliance.simulators.pn532_emulator import Pn532Emulator, PtyPn532
from appliance.simulators.scripted_voter import ScriptedVoter, VoterError
from demo.whole_election import OPERATOR, PIN, demo_manifest, hub_process, polls, provision_terminal, random_choices
from election.record import RecordWriter
from election.simulation import ceremony, write_election_package
from infra.broker import free_port
from station_hub.enrolment import write_package
from station_hub.roll import RollStore, read_voter_keys
from station_hub.station import init_station


def memory_kib(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields


def wait_ready(voter: ScriptedVoter, booth: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            voter.wait_screen("idle", timeout=1, hub_online=True)
            return
        except (OSError, VoterError):
            if booth.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the booth did not come up") from None
            time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--voters", type=int, default=20)
    args = parser.parse_args()
    rng = random.Random(1)
    manifest = demo_manifest()
    with tempfile.TemporaryDirectory() as temporary:
        root = Path(temporary)
        _trustees, publics, context = ceremony(manifest, 3, 2)
        write_election_package(RecordWriter(root / "package"), manifest, context, publics)
        cards = TestCa.create(root / "test-ca")
        voters = [cards.issue_card(pin=PIN) for _ in range(args.voters)]
        salt = rng.randbytes(32)
        # Card-proven check-ins: the roll alone holds the salt and checks each card against the CA and CRL.
        station = init_station(root / "station", "bench", root / "package", ["T01"], [OPERATOR], port=free_port(),
                               roll_salt=salt, jpki_anchors=[cards.directory / "auth-ca.pem"],
                               jpki_crls=[cards.crl_path(AuthMode.AUTH)])  # fmt: skip
        store = RollStore(station.roll_db, (station.token_public_key().key_size + 7) // 8)
        store.import_voters(read_voter_keys(json.dumps(cards.roll(salt, AuthMode.AUTH)).encode()))
        store.close()
        write_package(station, root / "station-package.json")
        pty = PtyPn532(Pn532Emulator(None))
        reader = ReaderSettings("pn532-uart", port=pty.port)
        config = provision_terminal(station, "T01", root / "T01", reader, root / "station-package.json")
        ui_port = load_config(config).ui_port
        with hub_process(station.directory, root / "hub.log"):
            booth = subprocess.Popen([sys.executable, "-m", "appliance.cli", "run", "--config", str(config)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
            try:
                voter = ScriptedVoter(f"http://127.0.0.1:{ui_port}/", timeout=60)
                wait_ready(voter, booth)
                polls(station, "open")
                latencies = []
                for card in voters:
                    with pty.lock:
                        pty.emulator.insert(VirtualJpkiCard(card))
                    voter.wait_screen("pin")
                    voter.pin(PIN)
                    voter.vote(random_choices(manifest, rng))
                    voter.seal()
                    started = time.perf_counter()
                    receipt = voter.cast(wait_for_code=True)
                    latencies.append(time.perf_counter() - started)
                    assert receipt["tracking_code"], "no acknowledgement"
                    voter.tap("done")
                    with pty.lock:
                        pty.emulator.remove()
                    voter.wait_screen("idle", card_present=False)
                memory = memory_kib(booth.pid)
            finally:
                booth.terminate()
                booth.wait(10)
                pty.close()
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    print(
        f"voters={len(latencies)} cast_to_ack_p50_ms={statistics.median(latencies) * 1e3:.1f} "
        f"cast_to_ack_p99_ms={p99 * 1e3:.1f} booth_rss_mib={memory['VmRSS'] / 1024:.1f} "
        f"booth_peak_rss_mib={memory['VmHWM'] / 1024:.1f}"
    )


if __name__ == "__main__":
    main()
