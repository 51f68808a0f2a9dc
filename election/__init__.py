"""Election core: pure, I/O-free cryptography and formats shared by every component."""
