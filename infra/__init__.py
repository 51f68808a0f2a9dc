"""The site layer every service stands on: PKI and certificate directories, the MQTT client,
the broker process, private-key files, durable SQLite stores, logging and the service loop.

Imports :mod:`election` and :mod:`protocol` only; :mod:`appliance`, :mod:`station_hub` and
:mod:`gateway` import it and never each other.
"""
