"""Multiphase SFT mixes and the knowledge phase's row kinds."""
