"""The APDU transport core: one command in, one complete response out, over any ApduTransport.

ISO/IEC 7816-4 lets a card answer a command in pieces, and real cards (and some readers'
T=0 bridges) do:

* ``61xx`` — "xx more bytes are waiting": fetch them with GET RESPONSE (Le = xx, 00 = 256),
  as often as the card keeps answering ``61xx``, and concatenate the parts;
* ``6Cxx`` — "wrong Le, the right one is xx": send the same command again with Le = xx.

Both are legal, so refusing them would turn away genuine cards. Both are also a way for a
broken or hostile card to keep the terminal busy, so every loop here is bounded (a number of
rounds and a total size) and anything beyond the bound is a ``CardProtocolError`` — the card
module's "card invalid" — never a hang. Short reads (READ BINARY answering fewer bytes than
asked) are the file reader's business: see ``JpkiAuthenticator._read_file``.
"""

from __future__ import annotations

import logging

from appliance.card import apdu
from appliance.card.errors import CardProtocolError
from appliance.card.transport import ApduTransport

log = logging.getLogger(__name__)

MAX_GET_RESPONSES = 16
"""GET RESPONSE rounds per command: 16 × 256 bytes covers any JPKI answer (≤ 4 KiB)."""
MAX_CHAINED_RESPONSE = 4096
"""Bytes one command's answer may total across its GET RESPONSE parts (as the PN532 driver)."""


class CardChannel:
    """Sends commands to a card and returns each one's whole answer (data of every part, last SW)."""

    def __init__(self, transport: ApduTransport) -> None:
        self._transport = transport

    def transceive(self, command: apdu.CommandApdu) -> apdu.ResponseApdu:
        """The complete response to ``command``: ``61xx`` collected, ``6Cxx`` re-sent once.

        The status word returned is the last part's (``9000`` when all went well). Raises
        CardProtocolError for a response that breaks the rules or the bounds.
        """
        response = self._send_with_le(command)
        data = bytearray(response.data)
        rounds = 0
        while response.sw1 == apdu.SW1_MORE_DATA:
            rounds += 1
            if rounds > MAX_GET_RESPONSES:
                raise CardProtocolError(f"card kept answering 61xx after {MAX_GET_RESPONSES} GET RESPONSE commands")
            response = self._send_with_le(apdu.get_response(response.sw2 or apdu.MAX_SHORT_LE))
            data += response.data
            if len(data) > MAX_CHAINED_RESPONSE:
                raise CardProtocolError(f"card's chained response exceeds {MAX_CHAINED_RESPONSE} bytes")
        if rounds:
            log.debug("card answered in %d GET RESPONSE parts", rounds + 1)
        return apdu.ResponseApdu(bytes(data), response.sw)

    def _send_with_le(self, command: apdu.CommandApdu) -> apdu.ResponseApdu:
        """Send once; on ``6Cxx`` send again with Le = xx. A second ``6Cxx`` is a broken card."""
        response = self._send(command)
        if response.sw1 != apdu.SW1_WRONG_LE:
            return response
        corrected = apdu.with_le(command, response.sw2 or apdu.MAX_SHORT_LE)
        log.debug("card asked for Le %d instead of %s", corrected.le, command.le)
        response = self._send(corrected)
        if response.sw1 == apdu.SW1_WRONG_LE:
            raise CardProtocolError(f"card answered 6Cxx again ({response.sw:04X}) to the Le it asked for")
        return response

    def _send(self, command: apdu.CommandApdu) -> apdu.ResponseApdu:
        response = apdu.ResponseApdu.parse(self._transport.transmit(command.encode()))
        if command.le is not None and len(response.data) > command.le:
            raise CardProtocolError(f"card returned {len(response.data)} bytes for an Le of {command.le}")
        return response
