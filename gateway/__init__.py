"""The central office: receives every station's chain, verifies it, stores it, exports and tallies."""
