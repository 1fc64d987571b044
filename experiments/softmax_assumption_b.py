"""Paper 001 App. J.3 (Tables 1–3, Fig. 8): Assumption B and κ(J²) on the tiny ViT of Fig. 2b.

Per network, per (image, layer, head) — the unit of every statistic below:

* **Scores**: the [CLS] query's row, as App. J.3 ("attention weights a* = φ(K p*) of the CLS
  token"): s_j = ⟨k_j, q_CLS⟩/√d_h over all 1 + 49 tokens, recomputed in float64 from the
  network's float32 q, k (so p* ↔ q_CLS/√d_h, one per image); a = softmax(s) in float64.
* **Important set** S_i: a_j ≥ 50% of the row's max (App. J.3), :func:`select_important`.
* **Subspaces**: per head, I = the uncentred PCA of the important keys of all images (the fewest
  components with ≥ 90% of their energy), U = I⊥ in the head's key space (d_h = 16 in the full
  preset), :func:`important_subspace`.
* **ρ_U**: per pair the exact ρ_{U,i} = max_{x∈U} ‖K_S x‖/‖K_{S^c} x‖ (a generalised eigenvalue)
  and the paper's estimate (the max over 200 random unit x ∈ U, one draw per head); per head the
  max over images (B1 says "for each i"), and the pooled ratio of all images' rows stacked
  (:func:`rho_U_pooled`, what App. J.3's "for each head" may also mean). An undefined ρ (every
  token important, so K_{S^c} has no rows in U) is reported as ∞.
* **δ** (B2) with vector values: the head's values v_j ∈ ℝ^{d_h} (after W_V, before W_O),
  μ_i = Σ_j a_j v_j and δ_i = min_{j∈S_i} ‖v_j − μ_i‖₂ (:func:`vector_value_margins`; App. J.3
  writes |(u_i)_j − μ_i|_2, and ∂(head output)/∂s_j = a_j (v_j − μ), so this is the quantity
  (B2)'s |u_j − μ| plays for a scalar value). Absolute scale: values of our ViT, not the paper's.
* **κ(J²)**: exact κ(J(a)²|1⊥) = (λ_n/λ₂)² from the secular-equation eigenvalues (float64,
  accurate for λ₂ ≪ eps·λ_n) beside the paper's (max a/min a)² (an upper bound, Lemma 1).

Networks: ``smoke`` builds the two calibrated teachers of :mod:`.softmax_vit_mnist`'s smoke preset
on generated images (no data directory, no students). ``full`` reads a finished
``softmax_vit_mnist --preset full`` run (``--set vit_run=DIR``: ``params_sparse.npz``,
``params_non-sparse.npz``, ``summary.json``) and analyses both teachers and, per teacher, the
student of seed 0 at that teacher's best η, on the run's held-out MNIST images
(``$JAXSPECTRA_DATA_DIR``). Criteria: :mod:`._assumption_b_criteria`.
"""

from __future__ import annotations

import json
import math
import pathlib
import time
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxspectra.theory.results import (
    important_subspace,
    log10_kappa_J2_paper,
    log10_kappa_J2_tangent,
    rho_U_per_example,
    rho_U_pooled,
    rho_U_sampled_per_example,
    select_important,
    vector_value_margins,
)

from . import _assumption_b_criteria as crit
from . import softmax_vit_mnist as vit
from ._presets import apply_overrides

DESCRIPTION = ("paper 001 App. J.3 (Tables 1-3, Fig. 8): Assumption B (ρ_U, δ) and κ(J²) "
               "on the tiny ViT's [CLS] attention")

_BASE: dict[str, Any] = dict(
    vit_overrides=(), frac=0.5, var=0.9, n_vectors=200, sample_seed=0, chunk=500,
    b1_min_frac=crit.B1_MIN_FRAC, sample_min_ratio=crit.SAMPLE_MIN_RATIO,
    sample_min_frac=crit.SAMPLE_MIN_FRAC, b2_min_frac=crit.B2_MIN_FRAC,
    kappa_min_log10=crit.KAPPA_MIN_LOG10, kappa_gap=crit.KAPPA_GAP_DECADES,
)
PRESETS: dict[str, dict[str, Any]] = {
    # softmax_vit_mnist's smoke teachers (2 layers x 2 heads, generated images), 200 images
    "smoke": dict(_BASE, source="teachers", vit_preset="smoke", vit_run="", n_images=200),
    # a finished softmax_vit_mnist full run: teachers + best-η students, 2000 held-out images
    "full": dict(_BASE, source="run", vit_preset="full", vit_run="", n_images=2000),
}
PAPER = {"rho": {"median": 0.244, "p90": 0.365, "max": 0.431, "frac_below_1": 1.0},
         "delta": {"median": 0.030, "p10": 0.001, "min": 0.0002, "frac_positive": 1.0},
         "kappa": {"median": 4.4e5, "p90": 2.1e8}}
CLAIM_B1 = ('App. J.3, Table 1: "all 24 layer-head combinations satisfy ρ_U < 1, with median '
            'ρ_U = 0.244"')
CLAIM_SAMPLE = ('App. J.3: ρ_U "by sampling 200 random unit vectors in U" (an estimate from '
                'below of the max)')
CLAIM_B2 = ('App. J.3, Table 2: "all heads exhibit strictly positive value-compatibility '
            'margins"')
CLAIM_KAPPA = ('App. J.3, Table 3: "The extremely large condition numbers … validate Theorem 2\'s '
               'prediction that sparse attention induces severe ill-conditioning" (median 4.4e5)')
CLAIM_EST = ('App. J.3: "κ(J(a*)²) ≈ (max_j a_j / min_j a_j)²" (Lemma 1 makes it an upper '
             'bound only; errata)')


# ------------------------------------------------------------------------------------------
# Config and networks
# ------------------------------------------------------------------------------------------


def resolve_config(preset: str, overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """The preset with ``--set`` overrides applied and validated; ``vit_cfg`` is the ViT run's
    configuration (``softmax_vit_mnist``'s ``vit_preset`` with ``vit_overrides`` ``k=v`` items)."""
    cfg = apply_overrides(PRESETS, preset, overrides)
    if cfg["source"] not in ("teachers", "run"):
        raise ValueError(f"source must be 'teachers' or 'run', got {cfg['source']!r}")
    if cfg["source"] == "run" and not cfg["vit_run"]:
        raise ValueError("the full preset reads a finished ViT run: pass --set vit_run=DIR, the "
                         "--out directory of `jaxspectra reproduce softmax_vit_mnist --preset "
                         "full` (it holds params_sparse.npz, params_non-sparse.npz, summary.json)")
    if int(cfg["n_images"]) < 2 or int(cfg["n_vectors"]) < 1 or int(cfg["chunk"]) < 1:
        raise ValueError("n_images must be >= 2, n_vectors and chunk >= 1")
    if not 0 < cfg["frac"] <= 1 or not 0 < cfg["var"] <= 1:
        raise ValueError(f"frac and var must be in (0, 1], got {cfg['frac']}, {cfg['var']}")
    items = cfg["vit_overrides"]
    items = (items,) if isinstance(items, str) else items
    vo = {}
    for item in (i for i in items if i):
        if "=" not in item:
            raise ValueError(f"vit_overrides items must be key=value, got {item!r}")
        k, v = item.split("=", 1)
        vo[k.strip()] = v.strip()
    cfg["vit_cfg"] = vit.resolve_config(cfg["vit_preset"], vo)
    return cfg


def analysis_images(vit_cfg: dict[str, Any], n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(all standardised images, indices analysed)``: the ViT run's held-out images first (the
    students never trained on them), then training images if ``n`` asks for more."""
    X, tr, ho = vit.load_images(vit_cfg)
    idx = np.concatenate([ho, tr])[:n]
    return X, idx


def smoke_networks(cfg: dict[str, Any], X: np.ndarray) -> list[dict[str, Any]]:
    """The two teachers of ``softmax_vit_mnist``'s smoke preset, calibrated as there."""
    vc = cfg["vit_cfg"]
    _, tr, ho = vit.load_images(vc)
    fns = vit.teacher_fns(vc)
    nets = []
    for name, target in zip(vit.TEACHERS, vc["targets_log10"]):
        t = vit.build_teacher(vc, fns, float(target), X[ho[-vc["n_calib"]:]])
        nets.append({"key": f"teacher_{name}", "label": f"{name} teacher", "sparse":
                     name == "sparse", "role": "teacher", "model": fns["model"],
                     "params": t["params"]})
    return nets


def run_networks(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """Teachers and best-η seed-0 students of a finished ViT run (``vit_run``)."""
    vc, run_dir = cfg["vit_cfg"], pathlib.Path(cfg["vit_run"])
    if not run_dir.is_dir():
        raise FileNotFoundError(f"vit_run={run_dir} is not a directory; run `jaxspectra reproduce "
                                f"softmax_vit_mnist --preset {cfg['vit_preset']} --out DIR` first "
                                "and pass --set vit_run=DIR")
    need = [run_dir / f"params_{n}.npz" for n in vit.TEACHERS] + [run_dir / "summary.json"]
    missing = [p.name for p in need if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"vit_run={run_dir} lacks {missing}; it must be the --out "
                                "directory of a finished softmax_vit_mnist run (which writes them)")
    best = json.loads((run_dir / "summary.json").read_text()).get("best_eta")
    if not best or any(n not in best for n in vit.TEACHERS):
        raise ValueError(f"{run_dir}/summary.json has no best_eta per teacher; re-run "
                         "softmax_vit_mnist")
    model, _ = vit.make_model(vc, vc["teacher_init_std"])
    like = jax.jit(lambda k: model.init(k, jnp.zeros((1, 28, 28), jnp.float32)))(
        jax.random.key(0))
    nets = []
    for name in vit.TEACHERS:
        teacher, students, grid = vit.load_params(run_dir / f"params_{name}.npz", like)
        eta = float(best[name])
        hit = np.flatnonzero((grid[:, 0] == 0) & np.isclose(grid[:, 1], eta))
        if hit.size != 1:
            raise ValueError(f"params_{name}.npz has no seed-0 student at η = {eta} (grid "
                             f"{grid.tolist()})")
        m = int(hit[0])
        nets.append({"key": f"teacher_{name}", "label": f"{name} teacher", "sparse":
                     name == "sparse", "role": "teacher", "model": model, "params": teacher})
        nets.append({"key": f"student_{name}", "label": f"student of the {name} teacher (seed 0, "
                     f"η = {eta:g})", "sparse": name == "sparse", "role": "student",
                     "model": model, "params": jax.tree.map(lambda x, m=m: x[m], students)})
    return nets


# ------------------------------------------------------------------------------------------
# Extraction: [CLS] scores, keys and values per layer and head
# ------------------------------------------------------------------------------------------


def qkv_fn(model):
    """Jitted ``(params, images) -> [L, B, T, 3d]`` outputs of every layer's fused qkv
    projection (captured from the forward pass itself)."""

    def f(params, images):
        _, state = model.apply(params, images, capture_intermediates=lambda m, _n: m.name == "qkv",
                               mutable=["intermediates"])
        inter = state["intermediates"]
        blocks = sorted((k for k in inter if k.startswith("block_")), key=lambda k: int(k[6:]))
        return jnp.stack([inter[b]["attn"]["qkv"]["__call__"][0] for b in blocks])

    return jax.jit(f)


def head_tensors(model, params, images: np.ndarray, n_heads: int,
                 chunk: int = 500) -> dict[str, np.ndarray]:
    """float64 ``scores [L, H, B, T]`` of the [CLS] query; the network's own float32
    ``keys``/``values [L, H, B, T, d_h]`` (cast to float64 per head by the analysis, so 2000
    images × 24 heads never sit in memory in float64 at once).

    ``s_j = ⟨k_j, q_0⟩/√d_h``: the pre-softmax logits of the [CLS] row (as the model's attention,
    in float64 from its float32 q and k)."""
    f = qkv_fn(model)
    out = np.concatenate([np.asarray(f(params, jnp.asarray(images[i:i + chunk])))
                          for i in range(0, images.shape[0], chunk)], axis=1)
    L, B, T, d3 = out.shape
    d = d3 // 3
    dh = d // n_heads
    q, k, v = (out[..., i * d:(i + 1) * d].reshape(L, B, T, n_heads, dh).transpose(0, 3, 1, 2, 4)
               for i in range(3))
    scores = np.einsum("lhbtd,lhbd->lhbt", k.astype(np.float64),
                       q[:, :, :, 0, :].astype(np.float64)) / math.sqrt(dh)
    return {"scores": scores, "keys": k, "values": v}


# ------------------------------------------------------------------------------------------
# Analysis of one head and one network
# ------------------------------------------------------------------------------------------


def analyse_head(scores: np.ndarray, K: np.ndarray, V: np.ndarray, frac: float, var: float,
                 n_vectors: int, seed: int) -> dict[str, Any]:
    """Everything App. J.3 computes for one layer-head over B images (module docstring)."""
    imp = select_important(scores, frac)
    Q_I, Q_U = important_subspace(K, imp, var)
    rho = rho_U_per_example(K, imp, Q_U)
    rho_s = rho_U_sampled_per_example(K, imp, Q_U, n_vectors, seed)
    rows = K[imp]
    e_I = np.sum((rows @ Q_I) ** 2)
    kU = np.linalg.norm(rows @ Q_U, axis=1) if Q_U.shape[1] else np.zeros(len(rows))
    kI = np.linalg.norm(rows @ Q_I, axis=1)
    with np.errstate(divide="ignore"):
        log_ratio = np.log10(kU / kI)
    return {"rho": rho, "rho_sampled": rho_s, "rho_pooled": rho_U_pooled(K, imp, Q_U),
            "delta": vector_value_margins(V, scores, imp),
            "v_norm_max": np.linalg.norm(V, axis=2).max(1),
            "log10_kappa": log10_kappa_J2_tangent(scores),
            "log10_kappa_paper": log10_kappa_J2_paper(scores),
            "s": imp.sum(1), "dim_I": Q_I.shape[1], "dim": K.shape[2],
            "explained_I": float(e_I / np.sum(rows ** 2)), "log10_kU_kI": log_ratio}


def analyse_network(t: dict[str, np.ndarray], cfg: dict[str, Any]) -> dict[str, Any]:
    """Per-pair arrays ``[L, H, B]`` and per-head arrays ``[L, H]`` of one network."""
    L, H = t["scores"].shape[:2]
    heads = [[analyse_head(t["scores"][lyr, h], t["keys"][lyr, h].astype(np.float64),
                           t["values"][lyr, h].astype(np.float64),
                           cfg["frac"], cfg["var"], int(cfg["n_vectors"]),
                           int(cfg["sample_seed"]) + 1000 * lyr + h)
              for h in range(H)] for lyr in range(L)]
    pair = {k: np.stack([np.stack([hd[k] for hd in row]) for row in heads])
            for k in ("rho", "rho_sampled", "delta", "v_norm_max", "log10_kappa",
                      "log10_kappa_paper", "s")}
    head = {k: np.array([[hd[k] for hd in row] for row in heads], dtype=float)
            for k in ("rho_pooled", "dim_I", "explained_I")}
    head["rho"] = pair["rho"].max(2)
    head["rho_sampled"] = pair["rho_sampled"].max(2)
    return {**pair, "heads": head, "last_log10_kU_kI": [hd["log10_kU_kI"] for hd in heads[-1]],
            "dim": heads[0][0]["dim"]}


def quantiles(x: np.ndarray, qs: tuple[float, ...]) -> list[float]:
    """Quantiles without interpolation (``inf`` entries stay ``inf``, never ``nan``)."""
    x = np.asarray(x, np.float64).ravel()
    return [float(np.quantile(x, q, method="inverted_cdf")) for q in qs]


# ------------------------------------------------------------------------------------------
# Criteria
# ------------------------------------------------------------------------------------------


def checks(cfg: dict[str, Any], nets: list[dict], res: dict[str, dict]) -> list[dict]:
    out = []
    d_model = int(cfg["vit_cfg"]["d_model"])
    for n in nets:
        r = res[n["key"]]
        ok, det = crit.b1_holds(r["rho"], cfg["b1_min_frac"])
        out.append({"claim": CLAIM_B1, "network": n["label"], "ok": ok,
                    "criterion": f"exact ρ_U,i < 1 on ≥ {cfg['b1_min_frac']:.0%} of (image, "
                    "layer-head) pairs (undefined ρ counts as a violation)",
                    "ours": f"{det['frac_below_1']:.1%} (undefined: {det['frac_undefined']:.1%}); "
                    f"per head (max over images): {np.mean(r['heads']['rho'] < 1):.0%} of heads"})
        ok, det = crit.sampling_faithful(r["heads"]["rho"], r["heads"]["rho_sampled"],
                                         cfg["sample_min_ratio"], cfg["sample_min_frac"])
        out.append({"claim": CLAIM_SAMPLE, "network": n["label"], "ok": ok,
                    "criterion": f"per head, 200-sample ρ_U ≥ {cfg['sample_min_ratio']} × exact "
                    f"on ≥ {cfg['sample_min_frac']:.0%} of heads (heads with finite exact ρ)",
                    "ours": f"{det['frac_faithful']:.0%} of {det['n_heads']} heads, median "
                    f"sampled/exact {det['median_ratio']:.2f}"})
        res_floor = crit.b2_resolution(r["v_norm_max"], d_model)
        ok, det = crit.b2_holds(r["delta"], res_floor, cfg["b2_min_frac"])
        out.append({"claim": CLAIM_B2, "network": n["label"], "ok": ok,
                    "criterion": f"δ_i > {d_model}·eps32·max_j‖v_j‖ (the float32 resolution of "
                    f"the values) on ≥ {cfg['b2_min_frac']:.0%} of pairs",
                    "ours": f"{det['frac_resolved']:.1%} (δ > 0: {det['frac_positive']:.1%})"})
    for role in ("teacher", "student"):
        pair = {n["sparse"]: n for n in nets if n["role"] == role}
        if len(pair) != 2:
            continue
        ok, det = crit.kappa_sparse_vs_dense(res[pair[True]["key"]]["log10_kappa"],
                                             res[pair[False]["key"]]["log10_kappa"],
                                             cfg["kappa_min_log10"], cfg["kappa_gap"])
        out.append({"claim": CLAIM_KAPPA, "network": f"{role}s: sparse vs non-sparse", "ok": ok,
                    "criterion": f"median exact κ(J²) (sparse) ≥ 1e{cfg['kappa_min_log10']:g} and "
                    f"≥ {cfg['kappa_gap']:g} decades above the non-sparse network's",
                    "ours": f"median log10 κ {det['median_log10_sparse']:.2f} vs "
                    f"{det['median_log10_dense']:.2f} (gap {det['gap_decades']:.2f})"})
    ok, det = crit.estimate_is_upper_bound(
        np.concatenate([res[n["key"]]["log10_kappa"].ravel() for n in nets]),
        np.concatenate([res[n["key"]]["log10_kappa_paper"].ravel() for n in nets]))
    out.append({"claim": CLAIM_EST, "network": "all pairs of all networks", "ok": ok,
                "criterion": "exact κ(J²|1⊥) ≤ (max a/min a)² on every pair",
                "ours": f"holds on {det['frac_bound_holds']:.1%}; the estimate overstates by "
                f"{det['median_overstatement_decades']:.2f} decades (median)"})
    return out


# ------------------------------------------------------------------------------------------
# Figures
# ------------------------------------------------------------------------------------------

_COL = {"teacher_sparse": "tab:orange", "teacher_non-sparse": "tab:blue",
        "student_sparse": "tab:red", "student_non-sparse": "tab:cyan"}


def _finite_log10(x: np.ndarray, cap: float) -> tuple[np.ndarray, float]:
    """log10 of x with +inf mapped to ``cap`` (drawn as the "∞" bin) and the fraction mapped."""
    x = np.asarray(x, np.float64).ravel()
    inf = ~np.isfinite(x)
    with np.errstate(divide="ignore"):
        lx = np.log10(np.where(inf, 1.0, np.maximum(x, 1e-300)))
    return np.where(inf, cap, lx), float(inf.mean())


def plot_hist(nets, res, path: pathlib.Path, title: str) -> None:
    plt = vit._plt()
    fig, axes = plt.subplots(1, 3, figsize=(16, 5.6))
    for n in nets:
        r, c = res[n["key"]], _COL[n["key"]]
        lr, f_inf = _finite_log10(r["rho"], 2.5)
        axes[0].hist(lr, bins=60, range=(-4, 2.6), histtype="step", color=c, lw=1.4,
                     label=f"{n['label']} (∞: {f_inf:.0%})")
        ld, _ = _finite_log10(r["delta"], 0)
        axes[1].hist(np.clip(ld, -12, 2), bins=60, range=(-12, 2), histtype="step", color=c,
                     lw=1.4, label=n["label"])
        axes[2].hist(np.clip(r["log10_kappa"].ravel(), 0, 40), bins=80, range=(0, 40),
                     histtype="step", color=c, lw=1.4, label=f"{n['label']}: exact")
        axes[2].hist(np.clip(r["log10_kappa_paper"].ravel(), 0, 40), bins=80, range=(0, 40),
                     histtype="step", color=c, lw=1.0, ls="--", label=f"{n['label']}: (max/min)²")
    axes[0].axvline(0, color="k", ls=":", lw=1)
    axes[0].axvline(math.log10(PAPER["rho"]["median"]), color="gray", ls="--", lw=1,
                    label="paper's median 0.244")
    axes[0].set_xlabel("log₁₀ ρ_U,i (exact; ∞ drawn at 2.5)")
    axes[1].axvline(math.log10(PAPER["delta"]["median"]), color="gray", ls="--", lw=1,
                    label="paper's median 0.030")
    axes[1].set_xlabel("log₁₀ δ_i = log₁₀ min_{j∈S} ‖v_j − μ‖ (clipped to [−12, 2])")
    for v, lab in ((PAPER["kappa"]["median"], "paper's median"), (PAPER["kappa"]["p90"],
                                                                  "paper's p90")):
        axes[2].axvline(math.log10(v), color="gray", ls="--", lw=1, label=f"{lab} {v:.1e}")
    axes[2].set_xlabel("log₁₀ κ(J²|1⊥) (solid: exact; dashed: App. J.3's (max a/min a)²)")
    for ax, t in zip(axes, ("Table 1: ρ_U per (image, layer-head)", "Table 2: δ per (image, "
                            "layer-head)", "Table 3: κ(J²) per (image, layer-head)")):
        ax.set_title(t, fontsize=10)
        ax.set_ylabel("count")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6.5, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=1)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")  # the legends sit below the axes
    plt.close(fig)


def plot_fig8(nets, res, path: pathlib.Path, title: str) -> None:
    """Fig. 8 for the final layer of each network: ρ_U per head, log₁₀(‖k_U‖/‖k_I‖) of the
    important keys, dim I and its explained variance."""
    plt = vit._plt()
    fig, axes = plt.subplots(len(nets), 3, figsize=(15, 3.2 * len(nets)), squeeze=False)
    for row, n in zip(axes, nets):
        r = res[n["key"]]
        hd = r["heads"]
        H = hd["rho"].shape[1]
        x = np.arange(H)
        for off, key, lab in ((-0.25, "rho", "exact (max over images)"),
                              (0.0, "rho_sampled", "200-sample (max over images)"),
                              (0.25, "rho_pooled", "pooled rows, exact")):
            vals = hd[key][-1]
            shown = np.where(np.isfinite(vals), vals, 1e3)
            row[0].bar(x + off, np.maximum(shown, 1e-6), width=0.25, label=lab)
        row[0].axhline(1, color="k", ls=":", lw=1)
        row[0].set_yscale("log")
        row[0].set_xticks(x, [f"head {h}" for h in range(H)])
        row[0].set_ylabel(f"{n['label']}\nρ_U (∞ drawn at 1e3)", fontsize=8)
        row[0].legend(fontsize=6.5)
        for h, lr in enumerate(r["last_log10_kU_kI"]):
            fin = lr[np.isfinite(lr)]
            if fin.size:
                row[1].hist(np.clip(fin, -3, 1), bins=50, range=(-3, 1), histtype="step",
                            lw=1.2, label=f"head {h} ({lr.size} keys)")
        row[1].axvline(0, color="k", ls=":", lw=1)
        row[1].set_xlabel("log₁₀(‖k_U‖/‖k_I‖), important keys, last layer (clipped to [−3, 1])")
        row[1].legend(fontsize=6.5)
        row[2].bar(x, hd["dim_I"][-1], color="tab:gray")
        for h in range(H):
            row[2].text(h, hd["dim_I"][-1][h], f"{hd['explained_I'][-1][h]:.0%}",
                        ha="center", va="bottom", fontsize=7)
        row[2].axhline(r["dim"], color="k", ls=":", lw=1, label=f"d_h = {r['dim']}")
        row[2].set_xticks(x, [f"head {h}" for h in range(H)])
        row[2].set_ylabel("dim I (label: energy explained)", fontsize=8)
        row[2].legend(fontsize=6.5)
        for ax in row:
            ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ------------------------------------------------------------------------------------------
# Tables, report, run
# ------------------------------------------------------------------------------------------


def _g(v: float) -> str:
    return "∞" if v == math.inf else f"{v:.3g}"


def tables(nets, res) -> list[str]:
    p = PAPER
    lines = ["## Table 1 — (B1) ρ_U", "",
             "| network | over | median | p90 | max | fraction < 1 |", "|---|---|---|---|---|---|",
             f"| **paper** | 24 heads, 200-sample | {p['rho']['median']} | {p['rho']['p90']} | "
             f"{p['rho']['max']} | 100% |"]
    for n in nets:
        r = res[n["key"]]
        for lab, x in (("pairs, exact", r["rho"]), ("pairs, 200-sample", r["rho_sampled"]),
                       ("heads (max over images), exact", r["heads"]["rho"]),
                       ("heads (max over images), 200-sample", r["heads"]["rho_sampled"]),
                       ("heads, pooled rows, exact", r["heads"]["rho_pooled"])):
            med, p90, mx = quantiles(x, (0.5, 0.9, 1.0))
            lines.append(f"| {n['label']} | {lab} | {_g(med)} | {_g(p90)} | {_g(mx)} | "
                         f"{np.mean(np.asarray(x) < 1):.1%} |")
    lines += ["", "## Table 2 — (B2) δ (vector values, head space)", "",
              "| network | median δ | p10 | min | fraction > 0 | median max_j‖v_j‖ |",
              "|---|---|---|---|---|---|",
              f"| **paper** (scalar u, their scale) | {p['delta']['median']} | {p['delta']['p10']} "
              f"| {p['delta']['min']} | 100% | — |"]
    for n in nets:
        r = res[n["key"]]
        med, p10, mn = quantiles(r["delta"], (0.5, 0.1, 0.0))
        lines.append(f"| {n['label']} | {_g(med)} | {_g(p10)} | {_g(mn)} | "
                     f"{np.mean(r['delta'] > 0):.1%} | {np.median(r['v_norm_max']):.3g} |")
    lines += ["", "## Table 3 — κ(J²) of the [CLS] row", "",
              "| network | median κ exact | p90 exact | median (max/min)² | p90 (max/min)² | "
              "median |S_i| | median log10 R |", "|---|---|---|---|---|---|---|",
              f"| **paper** ((max/min)²) | — | — | {p['kappa']['median']:.2g} | "
              f"{p['kappa']['p90']:.2g} | — | — |"]
    for n in nets:
        r = res[n["key"]]
        me, pe = quantiles(r["log10_kappa"], (0.5, 0.9))
        mp, pp = quantiles(r["log10_kappa_paper"], (0.5, 0.9))
        lines.append(f"| {n['label']} | 1e{me:.2f} | 1e{pe:.2f} | 1e{mp:.2f} | 1e{pp:.2f} | "
                     f"{np.median(r['s']):g} | {mp / 2:.2f} |")
    lines += ["", "## Subspaces (per head: dim I of d_h, energy of the important keys in I)", "",
              "| network | dim I per layer (heads) | d_h |", "|---|---|---|"]
    for n in nets:
        hd = res[n["key"]]["heads"]
        lines.append(f"| {n['label']} | " + "; ".join(
            ",".join(str(int(v)) for v in row) for row in hd["dim_I"]) + f" | {res[n['key']]['dim']} |")
    return lines


def write_report(path, preset, cfg, nets, res, cks, figs, wall, n_images) -> pathlib.Path:
    passed = all(c["ok"] for c in cks)
    vc = cfg["vit_cfg"]
    src = ("softmax_vit_mnist's smoke teachers on generated images (no students)"
           if cfg["source"] == "teachers" else f"the ViT run in `{cfg['vit_run']}` "
           "(teachers and the seed-0 student at each teacher's best η)")
    lines = [f"# Paper 001 App. J.3 — Assumption B and κ(J²) on the tiny ViT ({preset})", "",
             f"`jaxspectra reproduce softmax_assumption_b --preset {preset}` — "
             f"**{'PASSED' if passed else 'FAILED'}**; device {vit._device()}; wall {wall:.1f} s",
             "", f"Networks: {src}; ViT {vc['n_layers']} layers × {vc['n_heads']} heads, "
             f"d = {vc['d_model']}, patch {vc['patch_size']}; {n_images} images ({vc['data']}, "
             "held-out first). Per (image, layer, head): the [CLS] query's row; S_i = {a_j ≥ "
             f"{cfg['frac']:g}·max a}}; I = PCA of the head's important keys ({cfg['var']:.0%} "
             f"energy), U = I⊥; ρ_U exact and from {cfg['n_vectors']} random x ∈ U; δ with the "
             "head's value vectors, δ_i = min_{j∈S_i} ‖v_j − μ_i‖₂; κ(J²|1⊥) exact (float64 secular "
             "eigenvalues) beside (max a/min a)².", "",
             "| claim (paper) | network | criterion (fixed before the run) | ours | verdict |",
             "|---|---|---|---|---|"]
    for c in cks:
        lines.append(f"| {c['claim']} | {c['network']} | {c['criterion']} | {c['ours']} | "
                     f"{'pass' if c['ok'] else 'FAIL'} |")
    lines += [""] + tables(nets, res)
    lines += ["", "## Figures", ""] + [f"![{k}]({p.name})" for k, p in figs.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def run(preset: str, out_dir: pathlib.Path, overrides: Mapping[str, Any] | None = None) -> dict:
    """Load or build the networks, extract, analyse, check, plot, write ``report.md``."""
    t0 = time.perf_counter()
    cfg = resolve_config(preset, overrides)
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    nets = run_networks(cfg) if cfg["source"] == "run" else None  # fail fast on a bad vit_run
    X, idx = analysis_images(cfg["vit_cfg"], int(cfg["n_images"]))
    if nets is None:
        nets = smoke_networks(cfg, X)
    images = X[idx]
    res = {}
    for n in nets:
        t = head_tensors(n["model"], n["params"], images, cfg["vit_cfg"]["n_heads"],
                         int(cfg["chunk"]))
        res[n["key"]] = analyse_network(t, cfg)
    cks = checks(cfg, nets, res)
    passed = all(c["ok"] for c in cks)
    figs = {"fig8": out_dir / f"softmax_assumption_b_{preset}_fig8.png",
            "hist": out_dir / f"softmax_assumption_b_{preset}_hist.png"}
    plot_fig8(nets, res, figs["fig8"], "App. J.3 Fig. 8 — final layer: ρ_U per head (dotted: 1), "
              "log₁₀(‖k_U‖/‖k_I‖) of the important keys (dotted: 0), dim I")
    plot_hist(nets, res, figs["hist"], f"App. J.3 Tables 1–3 as distributions over {len(idx)} "
              f"images × {cfg['vit_cfg']['n_layers'] * cfg['vit_cfg']['n_heads']} layer-heads "
              "(grey dashed: the paper's values)")
    wall = time.perf_counter() - t0
    report = write_report(out_dir / "report.md", preset, cfg, nets, res, cks, figs, wall, len(idx))
    summary = {"preset": preset, "passed": passed, "wall_s": wall, "device": vit._device(),
               "n_images": int(len(idx)), "checks": cks,
               "networks": {n["key"]: {
                   "label": n["label"],
                   "rho_pairs_q": quantiles(res[n["key"]]["rho"], (0.5, 0.9, 1.0)),
                   "rho_heads": res[n["key"]]["heads"]["rho"].tolist(),
                   "rho_heads_sampled": res[n["key"]]["heads"]["rho_sampled"].tolist(),
                   "rho_heads_pooled": res[n["key"]]["heads"]["rho_pooled"].tolist(),
                   "delta_q": quantiles(res[n["key"]]["delta"], (0.5, 0.1, 0.0)),
                   "log10_kappa_q": quantiles(res[n["key"]]["log10_kappa"], (0.5, 0.9)),
                   "log10_kappa_paper_q": quantiles(res[n["key"]]["log10_kappa_paper"],
                                                    (0.5, 0.9)),
                   "dim_I": res[n["key"]]["heads"]["dim_I"].tolist()} for n in nets}}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1, default=float))
    np.savez_compressed(out_dir / "pairs.npz", **{  # per (layer, head, image), for re-analysis
        f"{n['key']}/{k}": res[n["key"]][k] for n in nets
        for k in ("rho", "rho_sampled", "delta", "v_norm_max", "log10_kappa",
                  "log10_kappa_paper", "s")})
    return {"report": report, "passed": passed, "checks": cks, "summary": summary,
            "figures": figs}


__all__ = ["DESCRIPTION", "PRESETS", "run", "resolve_config"]
