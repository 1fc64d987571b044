"""jaxspectra.theory."""
