"""PC/SC readers (CCID: Sony RC-S300, ACS ACR1252U, ...) as an ApduTransport, via pyscard.

Uses pyscard's thin `smartcard.scard` layer so every call has an explicit timeout and every
failure code maps onto the card module's errors.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from smartcard import scard

from appliance.card.errors import CardProtocolError, CardRemoved, ReaderUnavailable

log = logging.getLogger(__name__)

_STATUS_PRESENT = 0x0004
"""pcsc-lite's SCARD_PRESENT bit of SCardStatus' state (pyscard does not export it)."""
_CARD_GONE = {
    scard.SCARD_W_REMOVED_CARD,
    scard.SCARD_E_NO_SMARTCARD,
    scard.SCARD_W_RESET_CARD,
    scard.SCARD_W_UNPOWERED_CARD,
}
_PRESENT = scard.SCARD_STATE_PRESENT
_USABLE_CARD = scard.SCARD_STATE_PRESENT | scard.SCARD_STATE_MUTE
# How long a failed exchange waits for pcscd to notice a removal before calling it a
# protocol error instead (pcscd polls readers a few times a second).
_REMOVAL_SETTLE_S = 1.5


def _message(code: int) -> str:
    return f"{scard.SCardGetErrorMessage(code)} (0x{code & 0xFFFFFFFF:08X})"


class PcscTransport:
    """One card in one PC/SC reader, connected exclusively."""

    def __init__(self, reader: str | None = None) -> None:
        code, self._context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
        if code != scard.SCARD_S_SUCCESS:
            raise ReaderUnavailable(f"PC/SC service not available: {_message(code)}")
        self._reader = reader
        self._card: int | None = None
        self._protocol = scard.SCARD_PROTOCOL_T1

    def readers(self) -> list[str]:
        code, names = scard.SCardListReaders(self._context, [])
        if code == scard.SCARD_E_NO_READERS_AVAILABLE:
            return []
        if code != scard.SCARD_S_SUCCESS:
            raise ReaderUnavailable(f"cannot list PC/SC readers: {_message(code)}")
        return list(names)

    def wait_for_card(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for a card, then connect to it; False if none came."""
        if self._reader is None:
            names = self.readers()
            if not names:
                raise ReaderUnavailable("no PC/SC reader is connected")
            self._reader = names[0]
        if not self._await_state(timeout, lambda state: bool(state & _USABLE_CARD == _PRESENT)):
            return False
        self._connect()
        return True

    def wait_for_removal(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds until the reader is empty ("please take your card")."""
        if self._reader is None:
            return True
        if not self._await_state(timeout, lambda state: not state & scard.SCARD_STATE_PRESENT):
            return False
        self._disconnect()
        return True

    def _await_state(self, timeout: float, wanted: Callable[[int], bool]) -> bool:
        deadline = time.monotonic() + timeout
        state = scard.SCARD_STATE_UNAWARE
        while True:
            remaining_ms = max(0, int((deadline - time.monotonic()) * 1000))
            code, states = scard.SCardGetStatusChange(self._context, remaining_ms, [(self._reader, state)])
            if code == scard.SCARD_E_TIMEOUT:
                return False
            if code != scard.SCARD_S_SUCCESS:
                raise ReaderUnavailable(f"reader {self._reader!r}: {_message(code)}")
            state = states[0][1]
            if state & scard.SCARD_STATE_UNKNOWN:
                raise ReaderUnavailable(f"reader {self._reader!r} is not connected")
            if wanted(state):
                return True
            if time.monotonic() >= deadline:
                return False

    def _connect(self) -> None:
        code, card, protocol = scard.SCardConnect(
            self._context,
            self._reader,
            scard.SCARD_SHARE_EXCLUSIVE,
            scard.SCARD_PROTOCOL_T0 | scard.SCARD_PROTOCOL_T1,
        )
        if code in _CARD_GONE:
            raise CardRemoved("the card left the reader while connecting")
        if code != scard.SCARD_S_SUCCESS:
            raise CardProtocolError(f"cannot connect to the card: {_message(code)}")
        self._card, self._protocol = card, protocol

    def transmit(self, apdu: bytes) -> bytes:
        if self._card is None:
            raise CardRemoved("no card is connected")
        code, response = scard.SCardTransmit(self._card, self._protocol, list(apdu))
        # A card pulled mid-exchange can show as success with no status word (vpcd does).
        if code == scard.SCARD_S_SUCCESS and (len(response) >= 2 or not self._removal_settles()):
            return bytes(response)
        if code in _CARD_GONE or code == scard.SCARD_S_SUCCESS or self._removal_settles():
            self._disconnect()
            raise CardRemoved()
        raise CardProtocolError(f"the card exchange failed: {_message(code)}")

    def card_present(self) -> bool:
        if self._card is None:
            return False
        code, _reader, state, _protocol, _atr = scard.SCardStatus(self._card)
        return code == scard.SCARD_S_SUCCESS and bool(state & _STATUS_PRESENT)

    def _removal_settles(self) -> bool:
        """After a failed exchange, wait briefly for pcscd to report whether the card left."""
        try:
            return self._await_state(_REMOVAL_SETTLE_S, lambda state: not state & _PRESENT)
        except ReaderUnavailable:
            return False

    def _disconnect(self) -> None:
        if self._card is not None:
            scard.SCardDisconnect(self._card, scard.SCARD_UNPOWER_CARD)
            self._card = None

    def release(self) -> None:
        """Power the card down and let the next one in; the reader stays open."""
        self._disconnect()

    def close(self) -> None:
        """Release the PC/SC context; the transport is unusable afterwards."""
        self._disconnect()
        if self._context is not None:
            scard.SCardReleaseContext(self._context)
            self._context = None
