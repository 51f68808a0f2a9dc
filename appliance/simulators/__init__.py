"""Device simulators for tests, demos and training: virtual JPKI card, PN532 emulator, virtual companion board."""
