"""The gateway's own error type: a message a central-office operator can act on."""


class GatewayError(Exception):
    """A configuration, store or protocol problem at the central office."""
