"""Card authentication at the booth: the JPKI client (My Number card), sans-I/O.

Readers live in appliance.drivers (PC/SC, PN532); they implement ApduTransport.
"""

from appliance.card.authenticator import (
    AuthenticatedVoter,
    AuthMode,
    CardStatus,
    JpkiAuthenticator,
    card_handle,
)
from appliance.card.errors import (
    BadCardSignature,
    CardError,
    CardLocked,
    CardProtocolError,
    CardRemoved,
    CardRevoked,
    CertificateExpired,
    InvalidPinFormat,
    ReaderUnavailable,
    RevocationListStale,
    UnknownIssuer,
    WrongPin,
)
from appliance.card.transport import ApduTransport
from appliance.card.trust import TrustStore
from appliance.card.voter_key import derive_voter_key, voter_key_of

__all__ = [
    "ApduTransport",
    "AuthMode",
    "AuthenticatedVoter",
    "BadCardSignature",
    "CardError",
    "CardLocked",
    "CardProtocolError",
    "CardRemoved",
    "CardRevoked",
    "CardStatus",
    "CertificateExpired",
    "InvalidPinFormat",
    "JpkiAuthenticator",
    "ReaderUnavailable",
    "RevocationListStale",
    "TrustStore",
    "UnknownIssuer",
    "WrongPin",
    "card_handle",
    "derive_voter_key",
    "voter_key_of",
]
