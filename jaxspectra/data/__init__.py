"""jaxspectra.data."""
