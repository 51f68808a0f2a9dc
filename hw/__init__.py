"""The booth's wiring as data: ``hw/schematics/pinmap.json`` ships inside this package.

It is a package only so that the pin map travels in the wheel and is found with
``importlib.resources`` on an installed terminal (appliance/drivers/pinmap.py), while the
file itself stays where the technician and the diagrams expect it: ``hw/schematics/``.
"""
