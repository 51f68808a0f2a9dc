"""The wire: every message between booth, hub and centre, defined and parsed strictly once.

Imports only :mod:`election`. Every decoder here is total: any byte string yields a typed
value or a :class:`protocol.errors.Refusal` with a :class:`protocol.errors.Reason`, never
another exception.
"""
