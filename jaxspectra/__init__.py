"""jaxspectra: optimisation dynamics of transformers in JAX.

Subpackages: ``linalg`` (polar/sign, stable rank, spectra), ``theory`` (softmax Jacobian, H_p,
paper-001 bounds), ``optim`` (msign, manifold_muon, module_wise, schedules), ``models``,
``monitors``, ``data``, ``train``. Import them directly; this top-level module stays light.
"""

__version__ = "0.1.0"
