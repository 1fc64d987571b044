"""jaxspectra.monitors."""
