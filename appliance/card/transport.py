"""The one interface between the JPKI client and any reader (PC/SC, PN532 on any bus)."""

from typing import Protocol, runtime_checkable


@runtime_checkable
class ApduTransport(Protocol):
    """Moves APDUs to a card that is already activated.

    Implementations raise CardRemoved when the card is gone, CardProtocolError when the reader
    or card answers something malformed, and ReaderUnavailable when the reader is unreachable.
    Every call returns or raises within a bounded time.
    """

    def transmit(self, apdu: bytes) -> bytes:
        """Send one command APDU; return the response APDU including SW1 SW2."""
        ...

    def card_present(self) -> bool:
        """Whether the activated card is still in the field (costs no PIN try)."""
        ...

    def release(self) -> None:
        """Deactivate the card and free the reader; safe to call twice."""
        ...
