"""jaxspectra.theory: paper 001 (softmax-induced ill-conditioning), in float64.

Modules (import them directly):

* :mod:`~jaxspectra.theory.softmax_jacobian` — ``J(z) = diag(z) - zzᵀ``, Lemma 1, exact κ on 1⊥.
* :mod:`~jaxspectra.theory.prompt_attention` — the model ``f = φ(XWp)ᵀXv`` (eq. 2), the linear
  control, the §4 teacher–student generator, the attention ratio R from logits.
* :mod:`~jaxspectra.theory.operators` — ``F(p)`` (eq. 9), ``H_p`` (§3.2), the block operator 𝒥,
  condition numbers on the range with a resolution flag.
* :mod:`~jaxspectra.theory.results` — the paper's results as functions (and counterexamples).
* :mod:`~jaxspectra.theory.msign_bounds` — paper 003 §4 / App. B: Thms 4.2 (and its counterexample),
  4.4, 4.5 (with ‖H‖₂), 4.6, 4.10, 4.12, Lemma B.1.
* :mod:`~jaxspectra.theory.msign_cost` — paper 003's FLOP model (Table 5, eqs. 15–17) and the
  T(P) = T∞/(1 + r/P) throughput fit (App. A.4).
* :mod:`~jaxspectra.theory.saturation` — paper 004 §4.2 / App. C: softmax saturation bound, logit
  scale, Props. 4.1/4.2.
"""
