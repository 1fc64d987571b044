"""jaxspectra.models."""
