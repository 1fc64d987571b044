"""Spectral monitor: σ_max, ‖W‖_F, stable rank, singular values / Σ̂, Gram diagonal and
off-diagonal, max σ per group, and paper 002's one-step SD variation ΔΣ_t (§3.3).

Three ways to run it, all computing the same statistics (:func:`matrix_stats`):

* :class:`SpectralMonitor` — a :class:`~jaxspectra.monitors.base.DeviceMonitor` (inside the
  jit-compiled step, every ``every`` steps). It sees only the step's params, so it reports no ΔΣ.
* :class:`HostSpectralMonitor` — a :class:`~jaxspectra.monitors.base.HostMonitor`: the trainer
  copies the params out after steps t and t+1 (for every t with ``t % every == 0``); a
  background thread computes the spectra in NumPy while the device keeps training and reports
  the stats of W_{t+1} (the params after step t) with ΔΣ = ‖Σ̂(W_{t+2}) − Σ̂(W_{t+1})‖_F, the
  exact one-step quantity, never a multi-step difference divided by the gap.
* :func:`spectral_monitor` — an optax ``GradientTransformation`` (identity on the updates) that,
  placed *last* in a chain, knows W_t = params and W_{t+1} = params + updates, and records the
  stats and the one-step ΔΣ every ``every`` steps under ``lax.cond`` into its state
  (``optax.tree.get(opt_state, "delta_sigma")``).

Route: singular values are √λ of the short side's Gram matrix (``eigvalsh``, float32 with
full-precision matmuls): 4–25× cheaper than an SVD. Its absolute error ≈ eps·σ_1²/σ_i only
affects the smallest σ; ΔΣ sums over all σ normalised by tr Σ, and the test
``tests/monitors/test_spectral.py::test_delta_sigma_resolution`` shows that on pairs one small
step apart the float32 Gram ΔΣ differs from a float64 SVD's by ≪ 1e-4 (paper 002's floor).

Statistics of a matrix W (…, m, n) with short side k = min(m, n) (paper 004 works tall, so its
Gram WᵀW is the short side's):

==================  =======================================================================
``sigma_max``       σ_1
``fro``             ‖W‖_F (from the Gram's trace)
``stable_rank``     ‖W‖_F² / σ_1² (paper 003, Def. 3.1)
``gram_offdiag``    ‖offdiag(G)‖_F with G the k×k short-side Gram (paper 004's DGram target: 0)
``gram_diag``       diag(G) (array, k): squared column norms (tall) / row norms (wide)
``sv``              σ_1 ≥ … ≥ σ_k (array, float32); Σ̂ = sv / sum(sv) is not stored twice
==================  =======================================================================

Metric keys: ``spectral/<group>/<block_i | top>/<module>/<stat>`` (e.g.
``spectral/attention/block_3/q/stable_rank``); a fused ``qkv`` is split into ``q``, ``k``, ``v``
(``split_qkv=True``); stacked leading axes (MoE experts) add ``/e<i>``; and
``spectral/<group>/max_sigma`` per group.
"""

from __future__ import annotations

import concurrent.futures
import sys
import threading
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from jaxspectra import groups as G
from jaxspectra import matrices
from jaxspectra.linalg import _safe_div

SCALAR_STATS = ("sigma_max", "fro", "stable_rank", "gram_offdiag")
ARRAY_STATS = ("sv", "gram_diag")
DEFAULT_GROUPS = ("attention", "mlp", "embedding", "head", "other")


# ----------------------------------------------------------------------------------------------
# per-matrix statistics (device: jnp; host: NumPy)
# ----------------------------------------------------------------------------------------------


def _short_gram(w: jax.Array) -> jax.Array:
    """The short side's k×k Gram matrix (WWᵀ for a wide W, WᵀW for a tall or square one)."""
    wf = matrices.oriented(w.astype(jnp.float64 if w.dtype == jnp.float64 else jnp.float32), "tall")
    return jnp.matmul(matrices.mT(wf), wf, precision=lax.Precision.HIGHEST)


def matrix_stats(w: jax.Array) -> dict[str, jax.Array]:
    """Spectral statistics of ``w`` (…, m, n) over its last two axes (see the module table).

    Batched over leading axes; float32 (float64 for float64 input); jit/vmap-safe.
    """
    if w.ndim < 2:
        raise ValueError(f"matrix_stats needs a (..., m, n) array, got shape {w.shape}")
    g = _short_gram(w)
    lam = jnp.linalg.eigvalsh(g)[..., ::-1]
    sv = jnp.sqrt(jnp.clip(lam, 0.0, None))
    diag = jnp.diagonal(g, axis1=-2, axis2=-1)
    fro2 = jnp.sum(diag, axis=-1)
    off = g - diag[..., :, None] * jnp.eye(g.shape[-1], dtype=g.dtype)
    return {
        "sigma_max": sv[..., 0],
        "fro": jnp.sqrt(fro2),
        "stable_rank": _safe_div(fro2, jnp.square(sv[..., 0])),
        "gram_offdiag": jnp.sqrt(jnp.sum(jnp.square(off), axis=(-2, -1))),
        "gram_diag": diag,
        "sv": sv,
    }


def distribution(sv: Any) -> Any:
    """Σ̂ = Σ / tr Σ (paper 002, Def. 3.1) from singular values (jnp or NumPy, last axis)."""
    xp = jnp if isinstance(sv, jax.Array) else np
    tot = xp.sum(sv, axis=-1, keepdims=True)
    return xp.where(tot > 0, sv / xp.where(tot > 0, tot, 1.0), 0.0)


def delta_sigma(sv_t: Any, sv_next: Any) -> Any:
    """ΔΣ_t = ‖Σ̂_{t+1} − Σ̂_t‖_F (paper 002 §3.3) from the singular values at t and t+1."""
    xp = jnp if isinstance(sv_t, jax.Array) else np
    return xp.sqrt(xp.sum(xp.square(distribution(sv_next) - distribution(sv_t)), axis=-1))


def matrix_stats_np(w: np.ndarray, dtype: Any = np.float32) -> dict[str, np.ndarray]:
    """NumPy twin of :func:`matrix_stats` for the host monitor (``dtype`` of the Gram route)."""
    wf = matrices.oriented(np.asarray(w, dtype=dtype), "tall")
    g = matrices.mT(wf) @ wf
    lam = np.linalg.eigvalsh(g)[..., ::-1]
    sv = np.sqrt(np.clip(lam, 0.0, None))
    diag = np.diagonal(g, axis1=-2, axis2=-1).copy()
    fro2 = diag.sum(-1)
    off = g - diag[..., :, None] * np.eye(g.shape[-1], dtype=g.dtype)
    s1 = sv[..., 0]
    return {
        "sigma_max": s1,
        "fro": np.sqrt(fro2),
        "stable_rank": np.where(s1 > 0, fro2 / np.where(s1 > 0, s1 * s1, 1.0), 0.0),
        "gram_offdiag": np.sqrt(np.square(off).sum((-2, -1))),
        "gram_diag": diag,
        "sv": sv.astype(np.float32),
    }


# ----------------------------------------------------------------------------------------------
# which matrices, under which names
# ----------------------------------------------------------------------------------------------


def matrix_entries(params: Any, groups: Sequence[str] = DEFAULT_GROUPS,
                   split_qkv: bool = True) -> list[tuple[str, str, Any]]:
    """``(prefix, group, matrix)`` for every monitored leaf of ≥ 2 dims (a fused qkv split
    into its q, k, v parts). ``prefix`` is ``spectral/<group>/<block_i | top>/<module>``."""
    unknown = set(groups) - set(G.GROUPS)
    if unknown:
        raise ValueError(f"unknown parameter group(s) {sorted(unknown)}; known: {list(G.GROUPS)}")
    out = []
    for path, x in jax.tree_util.tree_flatten_with_path(params)[0]:
        if np.ndim(x) < 2:
            continue
        grp = G.path_group(path, np.ndim(x))
        if grp not in groups:
            continue
        layer = G.layer_index(path)
        where = "top" if layer is None else f"block_{layer}"
        mod = G.module_name(path)
        if mod == "qkv" and split_qkv and x.shape[-1] % 3 == 0:
            for name, part in zip("qkv", G.split_qkv(x)):
                out.append((f"spectral/{grp}/{where}/{name}", grp, part))
        else:
            out.append((f"spectral/{grp}/{where}/{mod}", grp, x))
    return out


def _expand(prefix: str, stats: dict[str, Any], batch_shape: tuple[int, ...]) -> dict[str, Any]:
    """Name the stats of one (possibly stacked) leaf; stacked axes become ``/e<i>``."""
    if not batch_shape:
        return {f"{prefix}/{k}": v for k, v in stats.items()}
    out = {}
    for idx in np.ndindex(*batch_shape):
        tag = "/".join(f"e{i}" for i in idx)
        for k, v in stats.items():
            out[f"{prefix}/{tag}/{k}"] = v[idx]
    return out


def _group_max(metrics: dict[str, Any], entries_groups: dict[str, str], xp) -> dict[str, Any]:
    best: dict[str, Any] = {}
    for key, v in metrics.items():
        if key.endswith("/sigma_max"):
            grp = key.split("/")[1]
            best[grp] = v if grp not in best else xp.maximum(best[grp], v)
    return {f"spectral/{g}/max_sigma": v for g, v in best.items()}


def _banked_stats(entries: list[tuple[str, str, Any]]) -> list[dict[str, jax.Array]]:
    """:func:`matrix_stats` of every entry, same-shaped matrices stacked into one batched
    eigenproblem (:func:`jaxspectra.matrices.map_banks`); each entry's stats keep its leading
    axes."""
    stacks = [x.reshape((-1,) + x.shape[-2:]) for _, _, x in entries]
    per = matrices.map_banks(matrix_stats, stacks)
    return [
        {k: v.reshape(x.shape[:-2] + v.shape[1:]) for k, v in st.items()}
        for st, (_, _, x) in zip(per, entries)
    ]


def spectral_metrics(params: Any, groups: Sequence[str] = DEFAULT_GROUPS,
                     split_qkv: bool = True, arrays: bool = True) -> dict[str, jax.Array]:
    """All spectral metrics of ``params`` (pure, jit-compatible): same-shaped matrices are
    stacked into one batched eigenproblem. ``arrays=False`` drops ``sv``/``gram_diag``."""
    entries = matrix_entries(params, groups, split_qkv)
    metrics: dict[str, Any] = {}
    for (prefix, _, x), stats in zip(entries, _banked_stats(entries)):
        sub = {k: v for k, v in stats.items() if arrays or k in SCALAR_STATS}
        metrics.update(_expand(prefix, sub, tuple(x.shape[:-2])))
    metrics.update(_group_max(metrics, {}, jnp))
    return metrics


# ----------------------------------------------------------------------------------------------
# device monitor (the trainer's hooked step)
# ----------------------------------------------------------------------------------------------


class SpectralMonitor:
    """:class:`~jaxspectra.monitors.base.DeviceMonitor`: :func:`spectral_metrics` of the step's
    params every ``every`` steps (no ΔΣ: use :class:`HostSpectralMonitor` or
    :func:`spectral_monitor` for the one-step SD variation)."""

    def __init__(self, every: int = 50, groups: Sequence[str] = DEFAULT_GROUPS,
                 split_qkv: bool = True, arrays: bool = True, name: str = "spectral"):
        if every < 1:
            raise ValueError(f"every must be ≥ 1, got {every}")
        self.every, self.groups, self.split_qkv, self.arrays = every, tuple(groups), split_qkv, arrays
        self.name = name

    def init(self, params: Any) -> Any:
        return ()

    def __call__(self, params: Any, batch: Any, state: Any):
        return spectral_metrics(params, self.groups, self.split_qkv, self.arrays), state


# ----------------------------------------------------------------------------------------------
# host monitor (off the critical path)
# ----------------------------------------------------------------------------------------------


class HostSpectralMonitor:
    """:class:`~jaxspectra.monitors.base.HostMonitor` computing the spectra in NumPy threads.

    Wants the params after steps t and t+1 for every t with ``t % every == 0``; reports, under
    step t, the stats of the first copy and ``…/delta_sigma`` (one step apart, paper 002 §3.3).
    ``dtype`` is the Gram route's precision (float32: the route tested against a float64 SVD;
    float64 on the host if you can afford it). ``workers`` background threads (NumPy's LAPACK
    releases the GIL).

    **Bounded queue** (issue 24): at most ``max_pending`` measurements (a measurement = the
    pair t, t+1) are in flight — submitted and not yet finished — so at most ``2·max_pending``
    host copies of the params are held and the backlog at the end of training is at most
    ``max_pending`` measurements' compute. A measurement due while the queue is full is
    *skipped*: :meth:`wants` answers False for t and t+1 (so the trainer does not even copy the
    params), ``skipped`` counts it, every result carries the running count under
    ``spectral_host/skipped`` and :meth:`close` reports the total in one line. A skipped step
    has no record (never a stale or multi-step ΔΣ).

    Example:
      >>> import numpy as np
      >>> mon = HostSpectralMonitor(every=10)
      >>> w = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
      >>> for t in (0, 1):
      ...     mon.submit(t, {"block_0": {"attn": {"o": {"kernel": w * (1 + 0.01 * t)}}}})
      >>> [(s, round(float(m["spectral/attention/block_0/o/delta_sigma"]), 6)) for s, m in mon.close()]
      [(0, 0.0)]
    """

    def __init__(self, every: int = 50, groups: Sequence[str] = DEFAULT_GROUPS,
                 split_qkv: bool = True, arrays: bool = True, dtype: Any = np.float32,
                 workers: int = 1, max_pending: int = 2, name: str = "spectral_host"):
        if every < 2:
            raise ValueError(f"every must be ≥ 2 (t and t+1 are both copied), got {every}")
        if max_pending < 1:
            raise ValueError(f"max_pending (measurements in flight) must be ≥ 1, got "
                             f"{max_pending}")
        self.every, self.groups, self.split_qkv, self.arrays = every, tuple(groups), split_qkv, arrays
        self.dtype, self.name, self.max_pending = dtype, name, max_pending
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers)
        self._lock = threading.Lock()
        self._pending: dict[int, concurrent.futures.Future] = {}
        self._first: dict[int, dict[str, Any]] = {}
        self._done: list[tuple[int, dict[str, Any]]] = []
        self._decided: dict[int, bool] = {}  # first steps: accepted (True) or skipped (False)
        self._open: set[int] = set()  # accepted first steps whose measurement is not finished
        self.skipped = 0
        self.accepted = 0

    def wants(self, step: int) -> bool:
        if step < 0:
            return False
        r = step % self.every
        if r == 1:  # the partner of a measurement: only if that one was accepted
            return self._decided.get(step - 1, False)
        if r != 0:
            return False
        if step not in self._decided:  # one decision per step (wants may be asked twice)
            self._collect(block=False)
            ok = len(self._open) < self.max_pending
            self._decided[step] = ok
            self.skipped += not ok
            for old in [s for s in self._decided if s < step - 1]:
                del self._decided[old]
        return self._decided[step]

    def _compute(self, params: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for prefix, _, x in matrix_entries(params, self.groups, self.split_qkv):
            st = matrix_stats_np(np.asarray(x), self.dtype)
            out.update(_expand(prefix, st, tuple(np.shape(x)[:-2])))
        return out

    def submit(self, step: int, params: Any) -> None:
        if step % self.every == 0:  # a measurement is in flight from its first copy on
            self._decided[step] = True
            self._open.add(step)
            self.accepted += 1
        with self._lock:
            self._pending[step] = self._pool.submit(self._compute, params)

    def _collect(self, block: bool) -> None:
        with self._lock:
            steps = sorted(self._pending)
        for s in steps:
            fut = self._pending[s]
            if not block and not fut.done():
                continue
            res = fut.result()
            with self._lock:
                del self._pending[s]
            first = s % self.every == 0
            if first:
                self._first[s] = res
            elif s - 1 in self._first:
                self._done.append((s - 1, self._finish(self._first.pop(s - 1), res)))
                self._open.discard(s - 1)
        if block:  # a first copy whose partner never came (end of training): stats only
            for s in sorted(self._first):
                self._done.append((s, self._finish(self._first.pop(s), None)))
                self._open.discard(s)

    def _finish(self, a: dict[str, Any], b: dict[str, Any] | None) -> dict[str, Any]:
        out = {k: v for k, v in a.items() if self.arrays or k.rsplit("/", 1)[1] in SCALAR_STATS}
        if b is not None:
            for k, v in a.items():
                if k.endswith("/sv"):
                    out[k[:-3] + "/delta_sigma"] = float(delta_sigma(v.astype(np.float64),
                                                                     b[k].astype(np.float64)))
        out.update(_group_max(out, {}, np))
        out["spectral_host/skipped"] = self.skipped
        return {k: (float(v) if np.ndim(v) == 0 else v) for k, v in out.items()}

    def poll(self) -> list[tuple[int, dict[str, Any]]]:
        self._collect(block=False)
        done, self._done = self._done, []
        return done

    def close(self) -> list[tuple[int, dict[str, Any]]]:
        self._collect(block=True)
        self._pool.shutdown(wait=True)
        if self.skipped:
            print(f"jaxspectra: host monitor {self.name!r} skipped {self.skipped} of "
                  f"{self.skipped + self.accepted} measurements (queue full: max_pending="
                  f"{self.max_pending}); raise every, or use the rotating device monitor",
                  file=sys.stderr, flush=True)
        done, self._done = self._done, []
        return done


# ----------------------------------------------------------------------------------------------
# optax form
# ----------------------------------------------------------------------------------------------


class SpectralMonitorState(NamedTuple):
    """State of :func:`spectral_monitor`: the last record (``step`` = the count it was taken at,
    −1 before the first) of σ_max, stable rank, Σ̂-based ΔΣ per matrix (dicts keyed like the
    metrics, without the ``/<stat>`` suffix)."""

    count: jax.Array
    step: jax.Array
    sigma_max: dict[str, jax.Array]
    stable_rank: dict[str, jax.Array]
    delta_sigma: dict[str, jax.Array]


def spectral_monitor(every: int = 50, groups: Sequence[str] = DEFAULT_GROUPS,
                     split_qkv: bool = True) -> optax.GradientTransformation:
    """Identity transformation recording σ_max, stable rank and ΔΣ_t every ``every`` steps.

    Put it **last** in the chain: it reads W_t = ``params`` and W_{t+1} = params + updates (the
    final updates), so ΔΣ_t = ‖Σ̂(W_{t+1}) − Σ̂(W_t)‖_F is the exact one-step quantity. Recording
    runs under ``lax.cond`` (no cost on the other steps).

    Example:
      >>> import jax.numpy as jnp, optax
      >>> p = {"block_0": {"mlp": {"fc": {"kernel": jnp.eye(4, 3)}}}}
      >>> tx = optax.chain(optax.sgd(0.1), spectral_monitor(every=2))
      >>> s = tx.init(p)
      >>> u, s = tx.update(jax.tree.map(jnp.ones_like, p), s, p)
      >>> float(optax.tree.get(s, "sigma_max")["spectral/mlp/block_0/fc"])
      1.0
    """
    if every < 1:
        raise ValueError(f"every must be ≥ 1, got {every}")

    def init(params):
        z = {n: jnp.zeros(x.shape[:-2], jnp.float32)
             for n, _, x in matrix_entries(params, groups, split_qkv)}
        return SpectralMonitorState(jnp.zeros((), jnp.int32), -jnp.ones((), jnp.int32), z,
                                    dict(z), dict(z))

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("spectral_monitor needs params: call update(updates, state, params)")
        new_params = optax.apply_updates(params, updates)

        def record(_):
            now, nxt = (matrix_entries(p, groups, split_qkv) for p in (params, new_params))
            a = {n: st for (n, _, _), st in zip(now, _banked_stats(now))}
            b = {n: st["sv"] for (n, _, _), st in zip(nxt, _banked_stats(nxt))}
            f32 = lambda v: v.astype(jnp.float32)
            return (state.count,
                    {n: f32(a[n]["sigma_max"]) for n in a},
                    {n: f32(a[n]["stable_rank"]) for n in a},
                    {n: f32(delta_sigma(a[n]["sv"], b[n])) for n in a})

        def keep(_):
            return state.step, state.sigma_max, state.stable_rank, state.delta_sigma

        step, smax, srank, dsig = lax.cond(state.count % every == 0, record, keep, None)
        return updates, SpectralMonitorState(state.count + 1, step, smax, srank, dsig)

    return optax.GradientTransformation(init, update)
