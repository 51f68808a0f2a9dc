"""Fixtures shared by several test folders: the session's private pcscd and its card slot.

pcscd has one control socket per machine (/run/pcscd/pcscd.comm), so the session starts one
instance with its own reader config (vpcd on free ports) and refuses to run beside a pcscd it
did not start; a pcscd left over from an interrupted run of these tests is stopped first.
Card tests (tests/card) and booth tests (tests/booth) share it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from appliance.drivers.pcsc import PcscTransport
from appliance.simulators.jpki_card import SimulatedCard
from appliance.simulators.pcscd import PcscdUnavailable, PrivatePcscd
from appliance.simulators.vpcd import VpcdCardLink


@pytest.fixture(scope="session")
def pcscd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivatePcscd]:
    try:
        running = PrivatePcscd(tmp_path_factory.mktemp("pcscd")).start()
    except PcscdUnavailable as error:
        pytest.fail(str(error))
    try:
        yield running
    finally:
        running.stop()


class CardSlot:
    """The session reader's slot, used the way a hand uses it: one card at a time.

    Each insertion first waits until pcscd has seen the reader empty (a card pulled and
    another pushed in faster than pcscd polls would otherwise look like no change at all),
    and every card still in the reader is pulled out when the test ends, pass or fail, so
    one test's card can never block the next test's reader.
    """

    def __init__(self, pcscd: PrivatePcscd) -> None:
        self.pcscd = pcscd
        self.links: list[VpcdCardLink] = []

    def insert(self, card: SimulatedCard) -> VpcdCardLink:
        self.wait_empty()
        link = VpcdCardLink(card, port=self.pcscd.port)
        self.links.append(link)
        return link

    def remove(self, link: VpcdCardLink) -> None:
        link.close()
        self.wait_empty()

    def wait_empty(self, timeout: float = 10) -> None:
        transport = PcscTransport(self.pcscd.reader)
        try:
            if not transport.wait_for_removal(timeout):
                raise AssertionError("pcscd still reports a card in the virtual reader")
        finally:
            transport.close()

    def empty(self) -> None:
        for link in self.links:
            link.close()
        self.links.clear()
        self.wait_empty()


@pytest.fixture
def card_slot(pcscd: PrivatePcscd) -> Iterator[CardSlot]:
    slot = CardSlot(pcscd)
    try:
        yield slot
    finally:
        slot.empty()
