"""The nftables rulesets: valid for nft, and allowing only what each role needs."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import deploy_root  # noqa: F401  (puts deploy/ on the import path)
import pytest
from install import InstallOptions, plan_files

HUB = "192.168.50.1"


def ruleset(role: str, **overrides) -> str:
    extra = {"station_net": "192.168.50.0/24", "central_host": "203.0.113.10"} if role == "hub" else {}
    options = InstallOptions(root=Path("/nonexistent"), role=role, hub_host=HUB, skip_pip=True, **extra, **overrides)
    (planned,) = [file for file in plan_files(options) if file.path == "/etc/nftables.conf"]
    return planned.content


def chain(text: str, name: str) -> list[str]:
    """The rule lines of one chain (without comments)."""
    body = re.search(rf"chain {name} \{{\n(.*?)\n\t\}}", text, re.S)
    assert body, name
    return [re.sub(r' comment ".*"$', "", line.strip()) for line in body.group(1).splitlines() if line.strip()]


def nft_check(text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    nft = shutil.which("nft") or "/usr/sbin/nft"
    path = tmp_path / "ruleset.nft"
    path.write_text(text)
    return subprocess.run([nft, "-c", "-f", str(path)], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("role", ["booth", "hub"])
def test_nft_accepts_the_ruleset(role: str, tmp_path: Path) -> None:
    result = nft_check(ruleset(role), tmp_path)
    assert result.returncode == 0, result.stderr


def test_nft_check_can_fail(tmp_path: Path) -> None:
    result = nft_check(ruleset("booth").replace("policy drop;", "policy maybe;"), tmp_path)
    assert result.returncode != 0


@pytest.mark.parametrize("role", ["booth", "hub"])
def test_everything_not_listed_is_dropped(role: str) -> None:
    text = ruleset(role)
    assert text.count("flush ruleset") == 1  # no rule of another table survives
    for name in ("input", "forward", "output"):
        assert f"hook {name} priority filter; policy drop;" in chain(text, name)[0]
    assert chain(text, "forward") == ["type filter hook forward priority filter; policy drop;"]


def test_booth_talks_only_to_its_hub() -> None:
    text = ruleset("booth")
    assert f"define HUB = {HUB}" in text and "define HUB_MQTT_PORT = 8883" in text
    assert chain(text, "output")[1:] == [
        'oif "lo" accept',
        "ct state invalid drop",
        "ct state established,related accept",
        "ip daddr $HUB tcp dport $HUB_MQTT_PORT accept",
        "ip daddr $HUB udp dport 123 accept",
        "udp sport 68 udp dport 67 accept",
        "icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit } accept",
    ]
    inbound = chain(text, "input")[1:]
    assert not [rule for rule in inbound if "tcp dport" in rule]  # no service listens for the LAN, SSH included


def test_hub_accepts_the_station_lan_and_reaches_the_central_broker() -> None:
    text = ruleset("hub")
    assert "define STATION_NET = 192.168.50.0/24" in text and "define CENTRAL = 203.0.113.10" in text
    inbound = chain(text, "input")
    assert [rule for rule in inbound if "dport" in rule and "udp sport 67" not in rule] == [
        "ip saddr $STATION_NET tcp dport $HUB_MQTT_PORT accept",
        "ip saddr $STATION_NET udp dport 123 accept",
    ]
    outbound = [rule for rule in chain(text, "output") if "daddr" in rule]
    assert outbound == ["ip daddr $CENTRAL tcp dport $CENTRAL_PORT accept", "ip daddr $CENTRAL udp dport 123 accept"]


def test_ssh_only_when_asked_for_and_only_from_the_given_network() -> None:
    assert "dport 22" not in ruleset("hub")
    staged = ruleset("hub", mode="training", ssh_from="192.168.50.0/28")
    assert "ip saddr 192.168.50.0/28 tcp dport 22 accept" in chain(staged, "input")
