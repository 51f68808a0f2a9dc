"""The rulesets loaded into real network namespaces: packets the role needs pass, others do not.

Two namespaces joined by a veth pair stand for a booth (192.168.50.20) and its hub
(192.168.50.1); the booth's namespace also holds the central broker's address
(203.0.113.10) for the hub's outbound rule. Real TCP connections are tried both ways.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_firewall import ruleset

BOOTH_IP, HUB_IP, CENTRAL_IP = "192.168.50.20", "192.168.50.1", "203.0.113.10"
LISTENER = """
import socket, sys
sockets = []
for address in sys.argv[1:]:
    host, port = address.rsplit(":", 1)
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((host, int(port)))
    server.listen()
    sockets.append(server)
print("ready", flush=True)
sys.stdin.read()
"""
CONNECT = """
import socket, sys
host, port, source = sys.argv[1], int(sys.argv[2]), sys.argv[3]
connection = socket.socket()
connection.settimeout(1.0)
if source:
    connection.bind((source, 0))
try:
    connection.connect((host, port))
    print("open")
except OSError as error:
    print(f"blocked {type(error).__name__}")
"""


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@dataclass
class Namespaces:
    booth: str
    hub: str
    listeners: list[subprocess.Popen]

    def load(self, namespace: str, rules: str, tmp_path: Path) -> None:
        path = tmp_path / f"{namespace}.nft"
        path.write_text(rules)
        subprocess.run(["ip", "netns", "exec", namespace, "nft", "-f", str(path)], check=True, timeout=30)

    def listen(self, namespace: str, *addresses: str) -> None:
        listener = subprocess.Popen(
            ["ip", "netns", "exec", namespace, sys.executable, "-c", LISTENER, *addresses],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.listeners.append(listener)
        assert listener.stdout is not None and listener.stdout.readline() == "ready\n"

    def connect(self, namespace: str, host: str, port: int, source: str = "") -> str:
        result = subprocess.run(
            ["ip", "netns", "exec", namespace, sys.executable, "-c", CONNECT, host, str(port), source],
            capture_output=True, text=True, timeout=30, check=True,
        )  # fmt: skip
        return result.stdout.split()[0]


@pytest.fixture
def namespaces() -> Iterator[Namespaces]:
    suffix = os.getpid()
    booth, hub = f"ps-fw-booth-{suffix}", f"ps-fw-hub-{suffix}"
    pair = Namespaces(booth, hub, [])
    try:
        ip("netns", "add", booth)
        ip("netns", "add", hub)
        ip("link", "add", "psfw-b", "netns", booth, "type", "veth", "peer", "name", "psfw-h", "netns", hub)
        for namespace, device, addresses in ((booth, "psfw-b", (BOOTH_IP, CENTRAL_IP)), (hub, "psfw-h", (HUB_IP,))):
            for address in addresses:
                ip("-n", namespace, "addr", "add", f"{address}/24", "dev", device)
            ip("-n", namespace, "link", "set", device, "up")
            ip("-n", namespace, "link", "set", "lo", "up")
        ip("-n", hub, "route", "add", "203.0.113.0/24", "dev", "psfw-h")
        yield pair
    finally:
        for listener in pair.listeners:
            listener.kill()
            listener.wait(timeout=10)
        for namespace in (booth, hub):
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True, timeout=30)


def test_booth_reaches_only_the_hubs_mqtt_port(namespaces: Namespaces, tmp_path: Path) -> None:
    namespaces.load(namespaces.booth, ruleset("booth"), tmp_path)
    namespaces.listen(namespaces.hub, f"{HUB_IP}:8883", f"{HUB_IP}:1883", f"{HUB_IP}:22")
    namespaces.listen(namespaces.booth, f"{BOOTH_IP}:22", "127.0.0.1:8080")
    assert namespaces.connect(namespaces.booth, HUB_IP, 8883) == "open"
    assert namespaces.connect(namespaces.booth, HUB_IP, 1883) == "blocked"  # plain MQTT: no
    assert namespaces.connect(namespaces.booth, HUB_IP, 22) == "blocked"
    assert namespaces.connect(namespaces.booth, "127.0.0.1", 8080) == "open"  # the kiosk UI
    assert namespaces.connect(namespaces.hub, BOOTH_IP, 22) == "blocked"  # no SSH into a booth


def test_hub_serves_the_station_lan_and_reaches_only_the_central_broker(namespaces: Namespaces, tmp_path: Path) -> None:
    namespaces.load(namespaces.hub, ruleset("hub"), tmp_path)
    namespaces.listen(namespaces.hub, f"{HUB_IP}:8883", f"{HUB_IP}:22")
    namespaces.listen(namespaces.booth, f"{CENTRAL_IP}:8883", f"{CENTRAL_IP}:443", f"{BOOTH_IP}:9999")
    assert namespaces.connect(namespaces.booth, HUB_IP, 8883, source=BOOTH_IP) == "open"
    assert namespaces.connect(namespaces.booth, HUB_IP, 8883, source=CENTRAL_IP) == "blocked"  # not the station LAN
    assert namespaces.connect(namespaces.booth, HUB_IP, 22, source=BOOTH_IP) == "blocked"
    assert namespaces.connect(namespaces.hub, CENTRAL_IP, 8883) == "open"
    assert namespaces.connect(namespaces.hub, CENTRAL_IP, 443) == "blocked"
    assert namespaces.connect(namespaces.hub, BOOTH_IP, 9999) == "blocked"
