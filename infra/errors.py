"""The site layer's error: a directory, configuration or service that cannot do what was asked."""


class SiteError(Exception):
    """A station or central directory, its configuration or a service cannot do what was asked;
    the message says what an operator or technician can do about it."""
