"""Hardware drivers behind small interfaces: readers (PC/SC, PN532) and the companion board."""
