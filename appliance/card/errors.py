"""Every way a card authentication can fail, one class each.

The booth's voter session shows a different screen for each class, so the classes are
distinct rather than one error with a code. Messages are written for a person and never
contain anything read from the card's certificate.
"""


class CardError(Exception):
    """Base of every card-authentication failure."""


class InvalidPinFormat(CardError):
    """The entered PIN/password cannot be right for this mode; nothing was sent to the card."""


class WrongPin(CardError):
    """The card refused the PIN or password and spent one try."""

    def __init__(self, tries_left: int) -> None:
        super().__init__(f"wrong PIN or password: {tries_left} tries left")
        self.tries_left = tries_left


class CardLocked(CardError):
    """The PIN or password has no tries left; only the municipal office can reset it."""

    def __init__(self) -> None:
        super().__init__("the card's PIN or password is locked")


class CardRevoked(CardError):
    """The certificate is on the provisioned revocation list."""

    def __init__(self) -> None:
        super().__init__("the card's certificate has been revoked")


class CertificateExpired(CardError):
    """The certificate (or its issuer) is outside its validity period."""

    def __init__(self) -> None:
        super().__init__("the card's certificate is expired or not yet valid")


class UnknownIssuer(CardError):
    """The certificate was not issued by any provisioned trust anchor."""

    def __init__(self) -> None:
        super().__init__("the card's certificate was not issued by a trusted authority")


class RevocationListStale(CardError):
    """The booth's CRL for the card's issuing CA is out of date (``now`` is not within
    ``this_update <= now < next_update``), or missing: no card of that CA can be judged.

    Not the card's fault and not the voter's: the station must install a fresh CRL. The
    voter is told so before typing anything, and the card is sent no PIN.
    """

    def __init__(self) -> None:
        super().__init__("the terminal's revocation list for this card's issuer is out of date")


class BadCardSignature(CardError):
    """The card's signature over the terminal's challenge does not verify.

    This is what a cloned certificate on a card without the matching private key looks like.
    """

    def __init__(self) -> None:
        super().__init__("the card could not prove it holds the certificate's key")


class CardRemoved(CardError):
    """The card left the reader (or never arrived) before the flow finished."""

    def __init__(self, detail: str = "the card was removed") -> None:
        super().__init__(detail)


class CardProtocolError(CardError):
    """The card or reader answered something that does not follow the protocol."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ReaderUnavailable(CardError):
    """The reader itself (PN532, PC/SC service) could not be reached."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
