"""jaxspectra.optim: optax transformations for spectral optimisers and the registry by name.

* :mod:`~jaxspectra.optim.registry` — :func:`build_optimizer`, :func:`prepare_params`,
  :data:`OPTIMIZERS` (what the trainer calls).
* :mod:`~jaxspectra.optim.schedules` — :func:`build_schedule` and the schedules of papers 003/004.
* :mod:`~jaxspectra.optim.muon` — ``optax.contrib.muon`` and paper 004's Muon.
* :mod:`~jaxspectra.optim.module_wise` — per-module assignment, paper 004's five presets.
* :mod:`~jaxspectra.optim.classic` — torch-style Adam with L2, SGD with momentum.
* :mod:`~jaxspectra.optim.msign`, :mod:`~jaxspectra.optim.manifold_muon` — MSign (paper 003) and
  Manifold Muon (paper 004); import them from their modules.
"""

from jaxspectra.optim.registry import OPTIMIZERS, build_optimizer, prepare_params
from jaxspectra.optim.schedules import SCHEDULES, build_schedule

__all__ = ["OPTIMIZERS", "SCHEDULES", "build_optimizer", "build_schedule", "prepare_params"]
