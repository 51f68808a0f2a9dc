"""Booth terminal appliance."""
