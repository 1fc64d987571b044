"""jaxspectra.train."""
