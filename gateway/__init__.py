"""Central gateway."""
