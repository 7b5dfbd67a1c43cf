"""Emulators of foreign systems, each a real HTTP server on loopback."""
