"""Icons, the bundled model and its card, sample photos: package data found with importlib.resources."""
