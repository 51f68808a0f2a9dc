"""The protocol tests: one small in-memory election (protocol_kit), the shared table of bad
ballots (bad_ballots), one valid example of every message (protocol_samples) and hostile
inputs (mutations) for property-based fuzzing of every decoder and handler.

Hypothesis runs with a fixed budget and derandomised (``mutations.FUZZ``), so CI is
deterministic and bounded; nothing here needs a broker.
"""
