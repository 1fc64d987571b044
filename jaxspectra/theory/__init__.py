"""jaxspectra.theory: paper 001 (softmax-induced ill-conditioning), in float64.

Modules (import them directly):

* :mod:`~jaxspectra.theory.softmax_jacobian` — ``J(z) = diag(z) - zzᵀ``, Lemma 1, exact κ on 1⊥.
* :mod:`~jaxspectra.theory.prompt_attention` — the model ``f = φ(XWp)ᵀXv`` (eq. 2), the linear
  control, the §4 teacher–student generator, the attention ratio R from logits.
* :mod:`~jaxspectra.theory.operators` — ``F(p)`` (eq. 9), ``H_p`` (§3.2), the block operator 𝒥,
  condition numbers on the range with a resolution flag.
* :mod:`~jaxspectra.theory.results` — the paper's results as functions (and counterexamples).
"""
