"""Card test fixtures live in card_fixtures (importable by name from the tests)."""

from card_fixtures import (  # noqa: F401
    cards,
    connect,
    pcsc_connect,
    pn532_connect,
    pn532_rig,
    virtual_card,
)
