"""Errors of the station hub, each with a message an operator can act on."""


class HubError(Exception):
    """The station directory, configuration or a service cannot do what was asked."""
