"""The observers' site's static files (``style.css``, ``tracker.js``), read by ``election.publish``
with ``importlib.resources``.

A regular package (not a namespace) so that ``files("election.site")`` is this folder both
installed and in a checkout, where ``tests/election`` would otherwise be taken for ``election``.
"""
