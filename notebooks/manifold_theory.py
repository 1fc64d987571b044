# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Paper 004 §4.2 / App. C: softmax saturation, Props. 4.1/4.2, and the DGram retractions
#
# The extraction lost every displayed formula of §4.2 and App. C, so the bounds here are derived in
# `jaxspectra.theory.saturation` (float64) and checked against `jax.jacobian`:
#
# * ‖J_softmax(z)‖_F ≤ f(δ) = 1 − (1 + (n−1)e^{−δ})^{−2} ≤ 2(n−1)e^{−δ}, δ the logit gap;
# * logit scale ‖S‖₂ ≤ ‖X‖₂²‖W_Q‖₂‖W_K‖₂/√d_h and |S_ij| ≤ ‖x_i‖‖x_j‖‖W_Q‖₂‖W_K‖₂/√d_h;
# * Prop. 4.1 (Stiefel): ‖J‖_F ≥ c(n, R) > 0 whatever W_Q, W_K; Prop. 4.2 (DGram): ‖J‖_F → 0.
#
# Then the two DGram retractions of `jaxspectra.optim.retractions` on points already on the
# manifold: the authors' sorted one moves them, the library default fixes them.
#
# `JAXSPECTRA_NB_SIZE=small` (the tests) uses few draws; the default (`full`) more, and writes the
# figures to `docs/figures/manifold_theory_*.png`.

# %%
import json
import math
import os
import pathlib

import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from jaxspectra.optim.retractions import retract
from jaxspectra.theory import saturation as S

SIZE = os.environ.get("JAXSPECTRA_NB_SIZE", "full")
DRAWS = 10 if SIZE == "small" else 200
FIG_DIR = pathlib.Path("docs/figures") if SIZE == "full" and pathlib.Path("docs/figures").is_dir() \
    else None
EPS64 = float(np.finfo(np.float64).eps)
rng = np.random.default_rng(0)
results = {"size": SIZE, "draws": DRAWS}


def save(fig, name):
    if FIG_DIR is not None:
        fig.savefig(FIG_DIR / f"manifold_theory_{name}.png", dpi=110)


# %% [markdown]
# ## The saturation bound ‖J‖_F ≤ f(δ)
# Random logit rows at several lengths n, and the worst case for a given gap (the other n−1
# logits tied). Nothing saturates until δ > ln(n−1). Comparison tolerance: J's entries carry
# absolute error ~eps, so 8·n·eps.

# %%
ns = [8, 64] if SIZE == "small" else [8, 64, 1024]
fig, ax = plt.subplots(figsize=(6.5, 4), layout="constrained")
gaps = np.linspace(0, 25, 200)
worst_excess = -np.inf
for i, n in enumerate(ns):
    pts = []
    for _ in range(DRAWS):
        z = rng.standard_normal(n) * rng.uniform(0.5, 15)
        g, jf = S.logit_gap(z), S.softmax_jacobian_fro(z)
        worst_excess = max(worst_excess, jf - S.saturation_bound(g, n) - 8 * n * EPS64)
        pts.append((g, jf))
    for g in np.linspace(0, 25, 6 if SIZE == "small" else 26):
        z = np.r_[g, np.zeros(n - 1)]
        jf = S.softmax_jacobian_fro(z)
        worst_excess = max(worst_excess, jf - S.saturation_bound(g, n) - 8 * n * EPS64)
        pts.append((g, jf))
    pts = np.array(pts)
    ax.semilogy(pts[:, 0], np.maximum(pts[:, 1], 1e-17), ".", color=f"C{i}", ms=3,
                label=f"‖J‖_F, n = {n}")
    ax.semilogy(gaps, S.saturation_bound(gaps, n), color=f"C{i}", label=f"f(δ), n = {n}")
    ax.axvline(math.log(n - 1), color=f"C{i}", ls=":", lw=0.8)
ax.set(xlabel="logit gap δ", ylabel="‖J_softmax‖_F", ylim=(1e-12, 2))
ax.legend(fontsize=7)
save(fig, "saturation")
plt.show()
results["saturation_max_excess"] = float(worst_excess)
# the n − 1 matters: a GPT-2 row (n = 1024) at gap 6 is far from one-hot
jf1024 = S.softmax_jacobian_fro(np.r_[6.0, np.zeros(1023)])
results["n1024_gap6"] = {"jac_fro": jf1024, "no_n_bound": 2 * math.exp(-6.0),
                         "f": S.saturation_bound(6.0, 1024)}
print(results)

# %% [markdown]
# ## Logit scale (§4.2) and Props. 4.1 / 4.2

# %%
spec_ratio, entry_ratio = [], []
n, d, dh, R = 6, 8, 4, 1.5
scale = 1 / math.sqrt(dh)
c41 = S.prop41_lower_bound(n, R, scale)
min_stiefel = np.inf
for _ in range(DRAWS):
    x = rng.standard_normal((n, d))
    wq, wk = rng.standard_normal((d, dh)) * 2, rng.standard_normal((d, dh)) * 2
    r = S.logit_bounds(x, wq, wk, scale)
    spec_ratio.append(r["spec"] / r["spec_bound"])
    entry_ratio.append(r["entry_ratio_max"])
    qs, ks = (np.linalg.qr(rng.standard_normal((d, dh)))[0] for _ in range(2))
    xs = x * (R / np.linalg.norm(x, axis=1, keepdims=True))
    u, _, vt = np.linalg.svd(qs @ ks.T)
    xs[0], xs[1] = R * u[:, 0], R * vt[0]  # the largest logit Stiefel allows
    for row in S.logit_bounds(xs, qs, ks, scale)["S"]:
        min_stiefel = min(min_stiefel, S.softmax_jacobian_fro(row))
results["logit_spec_max_ratio"] = float(max(spec_ratio))
results["logit_entry_max_ratio"] = float(max(entry_ratio))
results["prop41"] = {"c": c41, "min_jac_fro_stiefel": float(min_stiefel)}
svals = [1.0, 2.0, 4.0, 8.0, 16.0]
p42 = [S.prop42_construction(s, n=n, d=d, d_h=dh, radius=R) for s in svals]
results["prop42"] = [{"s": s, "gap": r["gap"], "jac_fro": r["jac_fro"],
                      "bound": S.saturation_bound(r["gap"], n)} for s, r in zip(svals, p42)]
fig, ax = plt.subplots(figsize=(5.5, 3.8), layout="constrained")
ax.loglog(svals, [max(r["jac_fro"], 1e-300) for r in results["prop42"]], "o-", label="DGram ‖J‖_F")
ax.loglog(svals, [r["bound"] for r in results["prop42"]], "--", label="f(gap)")
ax.axhline(c41, color="k", ls=":", label="Stiefel floor c(n, R)")
ax.set(xlabel="DGram scale s = ‖W_Q‖₂ = ‖W_K‖₂", ylabel="‖J_softmax‖_F (first row)",
       ylim=(1e-30, 2))
ax.legend(fontsize=8)
save(fig, "props")
plt.show()
print(json.dumps({k: results[k] for k in ("prop41", "prop42")}, indent=1))

# %% [markdown]
# ## The two DGram retractions on points already on the manifold
# X = Q₀·D (orthonormal Q₀, diagonal D): WᵀW = D² is diagonal, so X is on DGram and its singular
# values are its column norms (App. C). A retraction should return X. The authors' sorted one,
# (U Vᵀ)·diag(S), hands column j the j-th largest singular value; the library default Q·diag(QᵀX)
# fixes X. Both use the SVD sign here (float32, the library's dtype): tolerance 50·eps32.

# %%
m, k = 12, 5
tol = 50 * float(np.finfo(np.float32).eps)
moved = {"sorted_unsorted_norms": [], "default_unsorted_norms": [], "sorted_descending_norms": [],
         "stiefel_on_stiefel": []}
sv_vs_colnorm, was_sorted = [], []
for _ in range(DRAWS):
    q0 = np.linalg.qr(rng.standard_normal((m, k)))[0]
    dvals = rng.uniform(0.2, 3.0, k)
    was_sorted.append(bool(np.all(np.diff(dvals) <= 0)))
    x = jnp.asarray(q0 * dvals, jnp.float32)
    xd = jnp.asarray(q0 * np.sort(dvals)[::-1], jnp.float32)

    def rel(y, ref):
        return float(jnp.linalg.norm(y - ref) / jnp.linalg.norm(ref))

    moved["sorted_unsorted_norms"].append(rel(retract(x, "dgram", "sorted", sign_method="svd"), x))
    moved["default_unsorted_norms"].append(rel(retract(x, "dgram", sign_method="svd"), x))
    moved["sorted_descending_norms"].append(
        rel(retract(xd, "dgram", "sorted", sign_method="svd"), xd))
    qs = jnp.asarray(q0, jnp.float32)
    moved["stiefel_on_stiefel"].append(rel(retract(qs, "stiefel", sign_method="svd"), qs))
    xx = q0 * dvals
    sv_vs_colnorm.append(float(np.max(np.abs(np.linalg.svd(xx, compute_uv=False)
                                             - np.sort(np.linalg.norm(xx, axis=0))[::-1]))))
results["retraction_tol"] = tol
results["retraction_max_rel_move"] = {kk: float(max(v)) for kk, v in moved.items()}
results["retraction_min_rel_move"] = {kk: float(min(v)) for kk, v in moved.items()}
# the sorted retraction moves a point exactly when its column norms are not already descending
results["sorted_moves_iff_unsorted"] = all(
    (mvd > tol) == (not srt) for mvd, srt in zip(moved["sorted_unsorted_norms"], was_sorted))
results["unsorted_frac"] = 1 - float(np.mean(was_sorted))
results["dgram_sv_equals_colnorm_max_err"] = float(max(sv_vs_colnorm))
# the README example: column norms (0.5, 2, 1, 1.5)
x4 = jnp.eye(6, 4, dtype=jnp.float32) * jnp.array([0.5, 2.0, 1.0, 1.5], jnp.float32)
results["example_norms"] = {
    "sorted": np.linalg.norm(np.asarray(retract(x4, "dgram", "sorted", sign_method="svd")),
                             axis=0).round(6).tolist(),
    "default": np.linalg.norm(np.asarray(retract(x4, "dgram", sign_method="svd")),
                              axis=0).round(6).tolist()}
fig, ax = plt.subplots(figsize=(6.5, 3.5), layout="constrained")
ax.boxplot([np.maximum(v, 1e-9) for v in moved.values()], tick_labels=[
    "sorted,\nunsorted norms", "default,\nunsorted norms", "sorted,\ndescending norms",
    "Stiefel on\nStiefel"])
ax.set_yscale("log")
ax.axhline(tol, color="r", ls=":", label="50·eps32")
ax.set_ylabel("‖R(X) − X‖_F / ‖X‖_F")
ax.legend(fontsize=8)
save(fig, "retractions")
plt.show()
print(json.dumps({k: results[k] for k in ("retraction_max_rel_move", "retraction_min_rel_move",
                                          "example_norms")}, indent=1))

# %%
if os.environ.get("JAXSPECTRA_NB_RESULTS"):
    with open(os.environ["JAXSPECTRA_NB_RESULTS"], "w") as fh:
        json.dump(results, fh, indent=1, default=float)
print(json.dumps({k: v for k, v in results.items() if k != "prop42"}, indent=1, default=float))
