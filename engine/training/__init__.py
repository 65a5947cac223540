"""Training of the bundled model (not shipped in the desktop bundle)."""
