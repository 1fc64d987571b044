"""Rotating-slice spectral monitor: Σ̂ and the one-step ΔΣ of k of the N matrices per due step.

Paper 002 (Def. 3.1, §3.3) needs, per matrix, the singular distribution Σ̂ = Σ / tr Σ and the
one-step variation ΔΣ_u = ‖Σ̂(W_{u+1}) − Σ̂(W_u)‖_F. Computing both for *every* matrix on one
step costs 2N eigenproblems on that step (GPT-2-small: 2 × 74 of 768 × 768, the +10 % / +55 %
of issue 24 at every 50 / 10 steps). Here the N matrices are cut into ``S = ceil(N / k)``
fixed slices of at most k, and the u-th measurement (u % every == 0) takes slice
``s(u) = (u // every) % S``: the spectra of its matrices from W_u and, one update later, from
W_{u+1} — the *same* matrices (the slice is fixed at u), so ΔΣ pairs each matrix with itself.

What a record means (the trainer hook is
:class:`jaxspectra.train.monitor_hooks.RotatingSpectralHook`): the record at step ``u`` holds,
for each matrix of slice ``s(u)`` only,

==============================  ===============================================================
``<name>/sv``                    σ_1 ≥ … ≥ σ_k of W_u (array; Σ̂ = sv / sum(sv))
``<name>/sigma_max``             σ_1(W_u)
``<name>/stable_rank``           Σσ_i² / σ_1² of W_u
``<name>/delta_sigma``           ‖Σ̂(W_{u+1}) − Σ̂(W_u)‖_F (one step; float64 from the two sv)
``spectral_rot/slice``           s(u); ``spectral_rot/n_slices`` = S
==============================  ===============================================================

with W_u the params after u updates (the device and optax monitors' label). So every matrix is
measured every ``every · S`` updates, at the steps u ≡ s·every (mod every·S) of its slice s
(:func:`measured_steps`); a step u on which a matrix is not measured has no key for it.

Route (:func:`gram_spectrum`): σ = √λ of the short side's Gram matrix (float32 ``eigvalsh``),
same-shape matrices of a slice batched into one eigenproblem
(:func:`jaxspectra.matrices.map_banks`). The Gram's matmul precision is the cheapest that passes
the accuracy test (``tests/monitors/test_rotating.py``: Σ̂ within 1e-5 of a float64 SVD's and ΔΣ
within :data:`DELTA_SIGMA_TOL`): bf16 inputs with float32 accumulation when the weights are
*stored* in bf16 (the products are then exact), full float32 (``HIGHEST``) otherwise —
bf16-rounded float32 weights fail the ΔΣ test (the test pins that too).
``precision="auto"`` picks between the two; ``solver`` chooses the eigensolver
(``"eigh"``: XLA's default, ``"jacobi"``: cuSOLVER's Jacobi, GPU only, ``"svd"``: the
singular values of the Gram, no eigenvectors).

Single runs only: a sweep's member axis would be read as stacked matrices.

Example:
  >>> import numpy as np
  >>> p = {"block_0": {"attn": {"qkv": {"kernel": np.ones((4, 12))}, "o": {"kernel": np.eye(4)}}}}
  >>> plan = plan_slices(p, k=3)
  >>> [[plan.units[i].name.rsplit("/", 1)[1] for i in sl] for sl in plan.slices]
  [['o', 'q'], ['k', 'v']]
  >>> [slice_of(plan, every=10, u=u) for u in (0, 5, 10, 20)]
  [0, None, 1, 0]
  >>> sv = jax.jit(slice_spectra_fn(plan, 0))(p)
  >>> [round(float(x), 4) for x in sv["spectral/attention/block_0/o"]]
  [1.0, 1.0, 1.0, 1.0]
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxspectra import matrices
from jaxspectra.monitors.spectral import DEFAULT_GROUPS, delta_sigma, matrix_entries

PRECISIONS = ("auto", "highest", "bf16")
SOLVERS = ("eigh", "jacobi", "svd")
DELTA_SIGMA_TOL = 1e-5  # issue 24: |ΔΣ − ΔΣ_float64 SVD| ≤ 1e-5 (paper 002's floor is ~1e-4)


# ----------------------------------------------------------------------------------------------
# spectra
# ----------------------------------------------------------------------------------------------


def gram_spectrum(w: jax.Array, precision: str = "auto", solver: str = "eigh") -> jax.Array:
    """σ_1 ≥ … ≥ σ_k (float32, k = the short side) of ``w`` (…, m, n) as √λ of the short
    side's Gram matrix (paper 002 Def. 3.1 needs only Σ; module docstring for the options)."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; known: {list(PRECISIONS)}")
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; known: {list(SOLVERS)}")
    if w.ndim < 2:
        raise ValueError(f"gram_spectrum needs a (..., m, n) array, got shape {w.shape}")
    tall = matrices.oriented(w, "tall")
    if precision == "bf16" or (precision == "auto" and w.dtype == jnp.bfloat16):
        a = tall.astype(jnp.bfloat16)  # exact products, float32 accumulation
        g = jnp.matmul(matrices.mT(a), a, preferred_element_type=jnp.float32)
    else:
        a = tall.astype(jnp.float32)
        g = jnp.matmul(matrices.mT(a), a, precision=lax.Precision.HIGHEST)
    g = 0.5 * (g + matrices.mT(g))
    if solver == "svd":
        lam = jnp.linalg.svd(g, compute_uv=False)  # = eigenvalues of a PSD matrix, descending
    else:
        impl = lax.linalg.EighImplementation.JACOBI if solver == "jacobi" else None
        lam = lax.linalg.eigh(g, implementation=impl)[1][..., ::-1]
    return jnp.sqrt(jnp.clip(lam, 0.0, None))


# ----------------------------------------------------------------------------------------------
# the matrices and their slices
# ----------------------------------------------------------------------------------------------


class Unit(NamedTuple):
    """One monitored 2-D matrix: its metric prefix, the entry of
    :func:`~jaxspectra.monitors.spectral.matrix_entries` it comes from and its index in that
    entry's leading (expert) axes."""

    name: str
    entry: int
    index: tuple[int, ...]
    mn: tuple[int, int]  # tall shape (bank key)


class SlicePlan(NamedTuple):
    """The N units and their S = ceil(N / k) slices (``slices[s]`` = unit indices, sizes
    within one of each other; units of one shape are adjacent so a slice's eigenproblems
    batch)."""

    units: tuple[Unit, ...]
    slices: tuple[tuple[int, ...], ...]
    groups: tuple[str, ...]
    split_qkv: bool

    @property
    def n_slices(self) -> int:
        return len(self.slices)


def plan_slices(params: Any, k: int, groups: Sequence[str] = DEFAULT_GROUPS,
                split_qkv: bool = True) -> SlicePlan:
    """Cut the monitored matrices of ``params`` (arrays or shape structs) into slices of ≤ k."""
    if k < 1:
        raise ValueError(f"k (matrices per slice) must be ≥ 1, got {k}")
    entries = _entries(params, tuple(groups), split_qkv)
    units = []
    for e, (prefix, _, shape) in enumerate(entries):
        lead, (m, n) = shape[:-2], shape[-2:]
        for idx in np.ndindex(*lead):
            tag = "".join(f"/e{i}" for i in idx)
            units.append(Unit(prefix + tag, e, tuple(int(i) for i in idx), (max(m, n), min(m, n))))
    if not units:
        raise ValueError(f"no ≥ 2-D parameters in groups {list(groups)}: nothing to monitor")
    order = sorted(range(len(units)), key=lambda i: (units[i].mn, i))  # stable: shape, then tree
    n_slices = math.ceil(len(units) / k)  # sizes differ by at most one (≤ k each)
    slices = tuple(tuple(int(i) for i in part) for part in np.array_split(order, n_slices))
    return SlicePlan(tuple(units), slices, tuple(groups), split_qkv)


def _entries(params: Any, groups: tuple[str, ...], split_qkv: bool):
    """``(prefix, group, shape)`` of :func:`matrix_entries`, from arrays or shape structs
    (traced abstractly: nothing is computed)."""
    names: list[tuple[str, str]] = []

    def shapes(p):
        ents = matrix_entries(p, groups, split_qkv)
        names.extend((prefix, grp) for prefix, grp, _ in ents)
        return [x for _, _, x in ents]

    structs = jax.eval_shape(shapes, params)
    return [(p, g, tuple(x.shape)) for (p, g), x in zip(names, structs)]


def measured_steps(plan: SlicePlan, every: int, unit: int, end: int, start: int = 0) -> list[int]:
    """The steps u in [start, end) at which matrix ``unit`` is measured (its slice's turn)."""
    s = next(i for i, sl in enumerate(plan.slices) if unit in sl)
    return [u for u in range(start, end) if u % every == 0 and (u // every) % plan.n_slices == s]


def check_rotation(plan: SlicePlan, every: int, end: int) -> tuple[bool, list[str]]:
    """Verdict on the schedule: the slices partition the N matrices (each in exactly one, none
    over ``ceil(N / S)``) and, over [0, end), every window of S consecutive measurement steps
    measures every matrix — i.e. each matrix is reported within ceil(N / k) measurements.
    Returns ``(ok, problems)``."""
    n, problems = len(plan.units), []
    counts = np.bincount([i for sl in plan.slices for i in sl], minlength=n)
    problems += [f"{plan.units[i].name} is in {c} slices" for i, c in enumerate(counts) if c != 1]
    big = math.ceil(n / max(plan.n_slices, 1))
    problems += [f"slice {s} has {len(sl)} > {big} matrices" for s, sl in
                 enumerate(plan.slices) if len(sl) > big]
    due = [u for u in range(end) if u % every == 0]
    for a in range(len(due) - plan.n_slices + 1):
        seen = {i for u in due[a:a + plan.n_slices] for i in plan.slices[slice_of(plan, every, u)]}
        if len(seen) != n:
            problems.append(f"steps {due[a]}..{due[a + plan.n_slices - 1]} miss "
                            f"{n - len(seen)} matrices")
            break
    return not problems, problems


def slice_of(plan: SlicePlan, every: int, u: int) -> int | None:
    """The slice measured at step ``u`` (None when ``u`` is not a measurement step)."""
    return (u // every) % plan.n_slices if u % every == 0 else None


def slice_spectra_fn(plan: SlicePlan, s: int, precision: str = "auto",
                     solver: str = "eigh") -> Callable[[Any], dict[str, jax.Array]]:
    """``params -> {unit name: sv}`` for slice ``s`` (pure; jit it), the slice's same-shape
    matrices stacked into one batched eigenproblem."""
    members = [plan.units[i] for i in plan.slices[s]]

    def fn(params: Any) -> dict[str, jax.Array]:
        entries = matrix_entries(params, plan.groups, plan.split_qkv)
        mats = [entries[u.entry][2][u.index] if u.index else entries[u.entry][2] for u in members]
        stacks = [m[None] for m in mats]
        out = matrices.map_banks(lambda b: gram_spectrum(b, precision, solver), stacks)
        return {u.name: sv[0] for u, sv in zip(members, out)}

    return fn


@functools.lru_cache(maxsize=256)
def jitted_slice_spectra(plan: SlicePlan, s: int, precision: str = "auto",
                         solver: str = "eigh") -> Callable[[Any], dict[str, jax.Array]]:
    """:func:`slice_spectra_fn` jitted, one compiled program per (plan, slice, options) for the
    process (a new monitor on the same model reuses them)."""
    return jax.jit(slice_spectra_fn(plan, s, precision, solver))


# ----------------------------------------------------------------------------------------------
# records (host, float64) and the pairing check
# ----------------------------------------------------------------------------------------------


def record(sv_u: Mapping[str, Any], sv_next: Mapping[str, Any] | None, s: int, n_slices: int,
           arrays: bool = True) -> dict[str, Any]:
    """The metrics of one measurement (module table) from the host singular values of W_u and
    W_{u+1} (``sv_next=None``: the run ended before u + 1, no ΔΣ)."""
    out: dict[str, Any] = {"spectral_rot/slice": s, "spectral_rot/n_slices": n_slices}
    for name, sv in sv_u.items():
        sv64 = np.asarray(sv, np.float64)
        s1 = float(sv64[0])
        out[f"{name}/sigma_max"] = s1
        out[f"{name}/stable_rank"] = float(np.sum(sv64**2) / s1**2) if s1 > 0 else 0.0
        if arrays:
            out[f"{name}/sv"] = np.asarray(sv, np.float32)
        if sv_next is not None:
            if name not in sv_next or np.shape(sv_next[name]) != sv64.shape:
                raise ValueError(f"ΔΣ pairing: {name!r} at u has no partner of the same shape "
                                 "at u + 1")
            out[f"{name}/delta_sigma"] = float(delta_sigma(sv64, np.asarray(sv_next[name],
                                                                            np.float64)))
    return out


def reference_delta_sigma(w_u: Any, w_next: Any) -> float:
    """ΔΣ of one matrix from a float64 NumPy SVD (the ground truth of the accuracy tests)."""
    s0 = np.linalg.svd(np.asarray(w_u, np.float64), compute_uv=False)
    s1 = np.linalg.svd(np.asarray(w_next, np.float64), compute_uv=False)
    return float(np.linalg.norm(s1 / s1.sum() - s0 / s0.sum()))


def check_delta_sigma(records: Mapping[int, Mapping[str, Any]],
                      matrix_at: Callable[[int, str], Any],
                      tol: float = DELTA_SIGMA_TOL) -> tuple[bool, float, list[str]]:
    """Verdict on recorded ΔΣ: every ``<name>/delta_sigma`` at step u within ``tol`` of
    :func:`reference_delta_sigma` of ``matrix_at(u, name)`` and ``matrix_at(u + 1, name)``.

    Returns ``(ok, worst error, failures)``; ``ok`` is False when any value is off or when there
    is no ΔΣ at all (a check that saw nothing must not pass). ``tol`` is the issue's criterion,
    fixed before any run.
    """
    worst, bad, seen = 0.0, [], 0
    for u, rec in records.items():
        for key, v in rec.items():
            if not key.endswith("/delta_sigma"):
                continue
            name = key[: -len("/delta_sigma")]
            err = abs(float(v) - reference_delta_sigma(matrix_at(u, name), matrix_at(u + 1, name)))
            seen += 1
            worst = max(worst, err)
            if not err <= tol:
                bad.append(f"step {u} {name}: |ΔΣ − ref| = {err:.3g} > {tol:g}")
    return (seen > 0 and not bad), worst, bad


def units_matrix(params: Any, plan: SlicePlan, name: str) -> np.ndarray:
    """The 2-D matrix of unit ``name`` in ``params`` (NumPy), as the monitor sees it."""
    u = next((u for u in plan.units if u.name == name), None)
    if u is None:
        raise KeyError(f"no monitored matrix {name!r}")
    x = matrix_entries(jax.tree.map(np.asarray, params), plan.groups, plan.split_qkv)[u.entry][2]
    return np.asarray(x[u.index] if u.index else x)
