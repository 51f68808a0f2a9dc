"""The pin map's package: ``pinmap.json`` here is found with ``importlib.resources``.

A regular package (not a namespace) so that ``files("hw.schematics")`` is this folder both
installed and in a checkout, where ``tests/hw`` would otherwise be taken for ``hw``.
"""
