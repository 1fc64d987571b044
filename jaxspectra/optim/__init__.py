"""jaxspectra.optim."""
