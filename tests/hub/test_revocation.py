"""A revoked terminal's ballots are refused by the ledger, even while it stays connected."""

from __future__ import annotations

from hub_fixtures import TERMINALS

from infra.pki import StationCA, load_certificate
from station_hub.station import DeviceDirectory, Station


def test_revoking_a_terminal_takes_effect_on_its_next_lookup(station: Station) -> None:
    directory = DeviceDirectory(station)
    terminal, other = TERMINALS[0], TERMINALS[1]
    assert not isinstance(directory.lookup(terminal), str)
    certificate = load_certificate(station.cert_file(terminal))
    ca = StationCA.load(station.ca_file.parent)
    ca.revoke(certificate.serial_number)
    ca.write_crl()
    assert directory.lookup(terminal) == "revoked_device"
    assert not isinstance(directory.lookup(other), str), "only the revoked terminal is refused"
    assert directory.lookup("no-such-terminal") == "unknown_device"
