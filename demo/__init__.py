"""Whole-election demonstration on one machine (the README's main command)."""
