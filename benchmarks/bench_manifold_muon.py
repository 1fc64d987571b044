"""Manifold Muon update on GPT-2-small's 48 Muon matrices, ours beside the authors' PyTorch code.

One process times, on GPT-2-small's 48 Muon matrices (qkvᵀ 12×2304×768, o 12×768², fc/projᵀ
24×3072×768), K = 20 dual steps, at the second optimiser step (momentum entries ~2e-3):

* ``authors`` — paper 004's public PyTorch code (``manifold_muon.py`` + ``msign.py``, MIT), loaded
  from ``--peer-dir`` (a copy of ``../shared/peers/module-wise-manifold-muon`` in an ignored folder
  of the checkout, e.g. ``.carry/peers/``; never committed): their training path (per matrix,
  early stop tol = 1e-6) and their batched variant (per bank, fixed K), α = 0.1, η = lr;
* ``paper004`` — our faithful preset (bf16 Polar-Express sign, absolute tol, sorted DGram
  retraction), and with a fixed K (their batched variant);
* ``default`` — the library default (float32 accurate sign, robust stop, default retraction);
* the variants of issue 25 item 2 on top of paper004 (and the warm one on the default): the
  robust stop (early stops that fire), the sign through the n×n Gram (``inner_sign="gram"``),
  the Gram sign warm-started from the previous dual step (``"gram_warm"``, 2 polishing steps);
  the dual ascent of every bank in one ``while_loop`` (``one_loop=True``, same result); for
  DGram also paper004 with the default retraction (no eigen-solve);
* the floor of today's design: 21 bf16 Polar-Express signs of the banks.

Columns: median ms, the authors' time (same run) / ours, mean sign evaluations per matrix (of
K = 20), mean RMS tangent violation of the directions, the manifold error after the step, the
TFLOP/s implied by the sign iterations actually run. Without ``--peer-dir`` (or without torch)
the authors' rows are skipped and the ratio column uses their H100 figures from
``../shared/notes/gpu-measurements.md`` (marked as such).

Run (GPU): ``python -m jaxspectra.benchmarks.bench_manifold_muon --peer-dir
.carry/peers/module-wise-manifold-muon`` (``--quick``: 2 layers, d = 32, a CPU sanity run);
``jaxspectra bench manifold_muon`` runs it too and reads the peer folder from
``$JAXSPECTRA_PEER_DIR``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxspectra import linalg
from jaxspectra.optim import manifold_muon as mm

from .harness import REGISTRY, BenchResult, benchmark, device_name, render, time_fn

AUTHORS_MS = {"stiefel": 1699.0, "dgram": 2540.0}
AUTHORS_BATCHED_MS = {"stiefel": 356.0, "dgram": 1302.0}
BASELINE_SOURCE = "../shared/notes/gpu-measurements.md (authors' PyTorch code, one H100)"


def gpt2_muon_params(n_layer: int, d: int, key: jax.Array) -> dict:
    """The Muon-managed kernels of a GPT-2 (qkv d×3d, o d×d, fc d×4d, proj 4d×d per block)."""
    shapes = {("attn", "qkv"): (d, 3 * d), ("attn", "o"): (d, d), ("mlp", "fc"): (d, 4 * d),
              ("mlp", "proj"): (4 * d, d)}
    params: dict = {}
    keys = jax.random.split(key, n_layer * len(shapes))
    i = 0
    for layer in range(n_layer):
        block: dict = {"attn": {}, "mlp": {}}
        for (scope, name), shape in shapes.items():
            block[scope][name] = {"kernel": 0.02 * jax.random.normal(keys[i], shape, jnp.float32)}
            i += 1
        params[f"block_{layer}"] = block
    return params


def _banks(params: dict) -> list[jax.Array]:
    """The tall same-shape banks the update stacks (qkvᵀ, o, fcᵀ with proj)."""
    by_shape: dict[tuple[int, int], list[jax.Array]] = {}
    for w in jax.tree.leaves(params):
        t = w if w.shape[-2] >= w.shape[-1] else jnp.swapaxes(w, -1, -2)
        by_shape.setdefault(t.shape[-2:], []).append(t.reshape((-1,) + t.shape[-2:]))
    return [jnp.concatenate(v) for v in by_shape.values()]


def sign_flops(params: dict, state: mm.ManifoldMuonState, pe_steps: int = 10) -> float:
    """FLOPs of the sign iterations of one step: (signs used + 1 retraction) × 10 PE steps."""
    total = 0.0
    for w, k in zip(jax.tree.leaves(params), jax.tree.leaves(state.inner_steps)):
        m, n = max(w.shape[-2:]), min(w.shape[-2:])
        per_sign = pe_steps * (4 * m * n * n + 2 * n**3)
        total += per_sign * (float(np.sum(np.asarray(k))) + np.prod(np.shape(k)))
    return total


def manifold_error(params: dict, manifold: str) -> float:
    """max over matrices of ‖WᵀW − I‖_max (Stiefel) or of the normalised Gram's off-diagonal."""
    worst = 0.0
    for w in jax.tree.leaves(params):
        w = np.asarray(w, np.float64)
        if w.shape[-2] < w.shape[-1]:
            w = np.swapaxes(w, -1, -2)
        g = np.swapaxes(w, -1, -2) @ w
        if manifold == "stiefel":
            err = np.abs(g - np.eye(g.shape[-1])).max()
        else:
            d = np.sqrt(np.diagonal(g, axis1=-2, axis2=-1))
            err = np.abs(g / d[..., :, None] / d[..., None, :] - np.eye(g.shape[-1])).max()
        worst = max(worst, float(err))
    return worst


def _variants(manifold: str, lr: float) -> list[tuple[str, optax.GradientTransformation]]:
    """(label, transformation) pairs timed for ``manifold``."""
    paper = lambda **kw: mm.paper004_manifold_muon(lr, manifold, **kw)  # noqa: E731
    default = lambda **kw: mm.manifold_muon(lr, manifold, **kw)  # noqa: E731
    out = [
        ("paper004 (faithful)", paper()),
        ("paper004 + robust stop", paper(stop_rule="robust")),
        ("paper004 + robust stop, one loop for all banks",
         paper(stop_rule="robust", one_loop=True)),
        ("paper004 + gram sign (fp32) + robust stop", paper(inner_sign="gram", stop_rule="robust")),
        ("paper004 + gram warm (2 polish) + robust stop",
         paper(inner_sign="gram_warm", stop_rule="robust")),
    ]
    if manifold == "dgram":
        out.append(("paper004, default retraction Q*diag(QtX)",
                    paper(retraction="default", retraction_sign_method="polar_express")))
    out += [
        ("default (accurate fp32 sign, robust stop)", default()),
        ("default + gram sign (fp32)", default(inner_sign="gram")),
        ("default + gram warm (2 polish)", default(inner_sign="gram_warm")),
    ]
    return out


# --------------------------------------------------------------------------------------------
# the authors' code, loaded from a folder given on the command line
# --------------------------------------------------------------------------------------------


def check_peer_dir(peer_dir: str | Path) -> Path:
    """``peer_dir`` as a Path if it holds the authors' two files, else a clear error."""
    d = Path(peer_dir)
    if not (d / "manifold_muon.py").is_file() or not (d / "msign.py").is_file():
        raise FileNotFoundError(
            f"--peer-dir {str(d)!r} must hold the authors' manifold_muon.py and msign.py: copy "
            "../shared/peers/module-wise-manifold-muon into an ignored folder of the checkout, "
            "e.g. `mkdir -p .carry/peers && cp -r ../shared/peers/module-wise-manifold-muon "
            ".carry/peers/`"
        )
    return d


def load_peer(peer_dir: str | Path) -> Any:
    """Import the authors' ``manifold_muon.py`` (which imports ``msign`` from its own folder)
    from ``peer_dir`` under a private module name; raises with the fix when it is missing."""
    d, f = check_peer_dir(peer_dir), Path(peer_dir) / "manifold_muon.py"
    added = str(d.resolve())
    sys.path.insert(0, added)
    saved = sys.modules.pop("msign", None)
    try:
        spec = importlib.util.spec_from_file_location("_jaxspectra_peer_manifold_muon", f)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(added)
        sys.modules.pop("msign", None)  # the peer's module keeps its own reference
        if saved is not None:
            sys.modules["msign"] = saved
    return mod


def _peer_rows(peer: Any, params: dict, grads: dict, manifold: str, lr: float, quick: bool
               ) -> list[dict]:
    """Time the authors' training path (per matrix) and batched variant (per bank)."""
    import torch  # lazy: only the GPU image has it

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    mats = [torch.tensor(np.asarray(w), device=dev) for w in jax.tree.leaves(params)]
    gs = [torch.tensor(np.asarray(g), device=dev) for g in jax.tree.leaves(grads)]

    def sync(_):
        if dev == "cuda":
            torch.cuda.synchronize()

    def per_matrix():
        return [peer.manifold_muon(w, g, eta=lr, alpha=0.1, steps=20, tol=1e-6,
                                   manifold=manifold) for w, g in zip(mats, gs)]

    banks: dict[tuple[int, ...], list[int]] = {}
    for i, w in enumerate(mats):
        banks.setdefault(tuple(w.shape), []).append(i)
    wb = [torch.stack([mats[i] for i in ix]) for ix in banks.values()]
    gb = [torch.stack([gs[i] for i in ix]) for ix in banks.values()]

    def batched():
        return [peer.batched_manifold_muon(w, g, eta=lr, alpha=0.1, steps=20, manifold=manifold)
                for w, g in zip(wb, gb)]

    reps = dict(warmup=1, repeats=3, sync=sync)
    rows = []
    for label, fn in (("authors (PyTorch), per matrix, early stop (their training path)",
                       per_matrix),
                      ("authors (PyTorch), batched per bank, fixed K", batched)):
        t = time_fn(fn, **reps)
        out = fn()
        new = {"w": [o.detach().cpu().numpy() for o in out]}
        if fn is batched:  # unstack the banks back to matrices
            new = {"w": [m for b in new["w"] for m in b]}
        rows.append({"manifold": manifold, "variant": label, "ms": t * 1e3,
                     "manifold err": manifold_error(new, manifold)})
    return rows


@benchmark("manifold_muon", "Manifold Muon update on GPT-2-small's 48 Muon matrices (K=20): ours "
           "(paper004, default, issue-25 variants) beside the authors' PyTorch code, one process")
def run(quick: bool, peer_dir: str | Path | None = None,
        manifolds: tuple[str, ...] = ("stiefel", "dgram")) -> BenchResult:
    n_layer, d = (2, 32) if quick else (12, 768)
    lr = 0.02
    key = jax.random.key(0)
    peer_dir = peer_dir or os.environ.get("JAXSPECTRA_PEER_DIR")
    peer, peer_note = None, "no --peer-dir given: the authors' rows are skipped"
    if peer_dir and importlib.util.find_spec("torch") is None:
        peer_note = "PyTorch is not installed: the authors' rows are skipped"
    elif peer_dir:
        try:
            peer = load_peer(peer_dir)
            peer_note = f"authors' code loaded from {peer_dir}"
        except ImportError as e:  # torch missing
            peer_note = f"the authors' code could not be imported ({e}): their rows are skipped"
    rows = []
    for manifold in manifolds:
        params = mm.project_to_manifold(gpt2_muon_params(n_layer, d, key), manifold,
                                        sign_method="auto")
        # step 1's gradient stands in for the accumulated momentum (sum form: ~20x a gradient),
        # step 2's is a GPT-2-sized gradient (entries ~1e-4 at global-norm clip 1): G ~ 2e-3
        g_keys = jax.random.split(jax.random.fold_in(key, 1), 2)
        grads = [jax.tree.map(lambda w, k=k, s=s: s * jax.random.normal(k, w.shape, w.dtype),
                              params) for k, s in zip(g_keys, (2e-3, 1e-4))]
        # the authors' function takes the momentum G directly: give it ours at step 2
        g_mom = jax.tree.map(lambda a, b: b + 0.95 * (0.95 * a + b), grads[0], grads[1])
        peer_ms = AUTHORS_MS[manifold]
        if peer is not None:
            prow = _peer_rows(peer, params, g_mom, manifold, lr, quick)
            peer_ms = prow[0]["ms"]
            rows += prow
        for label, opt in _variants(manifold, lr):
            update = jax.jit(opt.update)
            state = opt.init(params)
            # one step in: momentum holds g₀ (sum form), and the warm start has a Λ to reuse
            upd, state = update(grads[0], state, params)
            p1 = optax.apply_updates(params, upd)
            t = time_fn(update, grads[1], state, p1, warmup=1, repeats=3)
            upd, new_state = update(grads[1], state, p1)
            p2 = optax.apply_updates(p1, upd)
            steps = np.concatenate([np.ravel(x) for x in jax.tree.leaves(new_state.inner_steps)])
            viol = np.concatenate([np.ravel(x) for x in jax.tree.leaves(new_state.violation)])
            rows.append({
                "manifold": manifold,
                "variant": label,
                "ms": t * 1e3,
                "authors / ours (x)": peer_ms / (t * 1e3),
                "mean signs/matrix": float(steps.mean()),
                "mean violation": float(viol.mean()),
                "max violation": float(viol.max()),
                "manifold err": manifold_error(p2, manifold),
                "sign TFLOP/s": sign_flops(p1, new_state) / t / 1e12,
            })
        # the floor: one bf16 Polar-Express sign of every bank, times (K + 1) signs per step
        banks = _banks(params)
        sign_all = jax.jit(lambda bs: [linalg.matrix_sign(b, method="polar_express") for b in bs])
        t_sign = time_fn(sign_all, banks, warmup=1, repeats=3 if quick else 10)
        flops_round = sum(10 * b.shape[0] * (4 * b.shape[1] * b.shape[2] ** 2 + 2 * b.shape[2] ** 3)
                          for b in banks)
        rows.append({
            "manifold": manifold,
            "variant": "floor: 21 x one PE-bf16 sign of the banks (K=20 + retraction)",
            "ms": 21 * t_sign * 1e3,
            "authors / ours (x)": peer_ms / (21 * t_sign * 1e3),
            "sign TFLOP/s": flops_round / t_sign / 1e12,
        })
    ratio_src = ("the authors' per-matrix time measured in this run" if peer is not None else
                 f"their H100 figures ({BASELINE_SOURCE}: Stiefel {AUTHORS_MS['stiefel']:.0f} ms, "
                 f"DGram {AUTHORS_MS['dgram']:.0f} ms), meaningful on an H100 only")
    notes = (
        f"{peer_note}. 'authors / ours' divides {ratio_src}. Goal: >= 15x at K=20. Shapes: "
        + ("quick (2 layers, d=32)" if quick else "GPT-2 small (12 layers, d=768)")
        + ". Timed at the second step (momentum entries ~2e-3, gradient entries 1e-4); the "
        "authors' functions get the same momentum G. Manifold err: max |WᵀW − I| (Stiefel) or "
        "the normalised Gram's off-diagonal (DGram) after the step. The robust stop, the gram "
        "warm start and the default change the result (violation columns); gram (fp32) computes "
        "the same polynomial as the tall iteration."
    )
    return BenchResult(rows=rows, notes=notes, title="Manifold Muon update (paper 004)")


def main(argv: list[str] | None = None) -> int:
    """``python -m jaxspectra.benchmarks.bench_manifold_muon [--peer-dir DIR] [--quick]
    [--manifold stiefel|dgram|both] [--out DIR] [--update-docs [--docs-file F]]``."""
    import argparse

    from .run import DEFAULT_OUT, _update_docs

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--peer-dir", default=None,
                    help="folder with the authors' manifold_muon.py and msign.py")
    ap.add_argument("--quick", action="store_true", help="2 layers, d=32 (CPU sanity run)")
    ap.add_argument("--manifold", choices=("stiefel", "dgram", "both"), default="both",
                    help="time one manifold only (two shorter runs; the section then holds it)")
    ap.add_argument("--out", default=DEFAULT_OUT, help="output directory")
    ap.add_argument("--update-docs", action="store_true")
    ap.add_argument("--docs-file", default="docs/benchmarks.md")
    a = ap.parse_args(argv)
    if a.peer_dir:
        check_peer_dir(a.peer_dir)  # fail now, with the fix, if the folder is wrong
    name = "manifold_muon"
    description = REGISTRY[name][0]
    manifolds = ("stiefel", "dgram") if a.manifold == "both" else (a.manifold,)
    result = run(a.quick, a.peer_dir, manifolds)
    section = render(name, description, result, device_name(), quick=a.quick)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.md").write_text(section + "\n")
    (out / f"{name}.json").write_text(json.dumps(
        {"device": device_name(), "quick": a.quick, "rows": result.rows, "notes": result.notes},
        indent=1, default=str))
    print(section, flush=True)
    if a.update_docs and not _update_docs(Path(a.docs_file), name, section):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
