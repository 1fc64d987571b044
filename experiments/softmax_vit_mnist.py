"""Paper 001 §4, Fig. 2b and App. I (Figs. 4–5): a tiny ViT on MNIST trained by SGD on labels
from a teacher ViT with sparse (R ≈ 10⁷) or non-sparse (R ≈ 20) attention.

* **Data.** ``full``: the 10k real MNIST test images (``$JAXSPECTRA_DATA_DIR/mnist``, the only
  MNIST split we have), split by :func:`jaxspectra.data.train_heldout_split` into train and
  held-out. ``smoke``: generated 28×28 images (random blurred strokes and blobs, no data
  directory). The digit labels are **not** used: the targets come from the teachers.
* **Teachers** (:mod:`._vit_teacher`): random ViTs of the student's architecture whose query/key
  projections of each layer are scaled so that the median [CLS] attention ratio of every layer is
  the target (closed form, logits scale by c²), calibrated on images disjoint from the training
  set; their R is verified on the training images and reported per layer and head.
* **Targets**: regression on the teacher's 10 logits, standardised per output over the training
  set (squared loss, as the paper's synthetic experiments; argmax labels of a random teacher are
  badly unbalanced). ℓ is the mean squared error; ℓ₀ the student's at initialisation.
* **Students**: the same architecture (standard init), plain SGD (no momentum) with a constant η
  ∈ {0.001, 0.01, 0.1}, minibatches drawn with replacement by a per-seed key, 3 seeds; the
  seed × η grid of one teacher is *one* vmapped step. The trainer's engine builds LM steps only,
  so the step is :func:`jaxspectra.train.step.make_train_step` with the regression loss,
  ``vmap``-ped over members and driven by :func:`jaxspectra.train.loop.run_loop`; the
  measurements (ℓ on a fixed train probe and on the held-out set, R per layer/head) are a host
  :class:`~jaxspectra.train.hooks.Hook` on the stacked state.
* **Criteria** (:mod:`._vit_criteria`, fixed before the full run): teachers' R within 0.5
  decades of the targets; at each teacher's best η, the sparse teacher's students end with
  ℓ/ℓ₀ ≥ 2× the non-sparse teacher's (geometric means over seeds, and the seeds separate); the
  non-sparse teacher's students reach ℓ/ℓ₀ ≤ 0.5.
"""

from __future__ import annotations

import json
import pathlib
import time
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.traverse_util import flatten_dict, unflatten_dict

from jaxspectra.data.mnist import load_mnist, train_heldout_split
from jaxspectra.models import get_model
from jaxspectra.optim.registry import build_optimizer
from jaxspectra.train.hooks import Hook, StepInfo
from jaxspectra.train.loop import run_loop
from jaxspectra.train.state import Optimizer, TrainState
from jaxspectra.train.step import make_train_step

from . import _vit_criteria as crit
from . import _vit_teacher as vt
from ._presets import apply_overrides

DESCRIPTION = ("paper 001 Fig. 2b / App. I: tiny ViT on MNIST, SGD on labels of a sparse "
               "(R≈1e7) vs non-sparse (R≈20) attention teacher")

_BASE: dict[str, Any] = dict(
    etas=(0.001, 0.01, 0.1), seeds=3, batch_size=128, teacher_seed=1234,
    targets_log10=(1.30103, 7.0),  # R = 20 (non-sparse), R = 1e7 (sparse)
    teacher_init_std=0.125, student_init_std=0.02, n_probe=1024, n_r_probe=256, n_calib=512,
    r_band=crit.R_BAND_DECADES, slower_factor=crit.SLOWER_FACTOR, learn_max_rel=crit.LEARN_MAX_REL,
)
PRESETS: dict[str, dict[str, Any]] = {
    # generated images, 2 layers x 2 heads, d=32, patch 7 (16 patches): CPU, no data directory
    "smoke": dict(_BASE, data="generated", n_images=640, held_out=128, n_layers=2, n_heads=2,
                  d_model=16, d_mlp=32, patch_size=7, steps=200, eval_every=40, batch_size=32,
                  n_probe=128, n_r_probe=32, n_calib=64),
    # the paper's shapes: 6 layers x 4 heads, d=64, MLP 256, patch 4; real MNIST (10k test set)
    "full": dict(_BASE, data="mnist", n_images=10000, held_out=2000, n_layers=6, n_heads=4,
                 d_model=64, d_mlp=256, patch_size=4, steps=5000, eval_every=100),
}
TEACHERS = ("non-sparse", "sparse")
MAP_DECADES = 8  # attention maps: one colour scale, log10(a / max a) from -8 to 0
COLORS = {"non-sparse": "tab:blue", "sparse": "tab:orange"}  # as the paper's Fig. 2b
CLAIM_SLOW = ('§4: "(S)GD suffers from slow convergence as the attention probabilities become '
              'sparser" (Fig. 2b, η = 0.01 chosen from [0.001, 0.01, 0.1])')
CLAIM_R = ('§4: "The ratio R across layers and heads for the sparse attention setting … is '
           'R ≈ 10^7, whereas for the non sparse … the average ratio is R ≈ 20"')


# ------------------------------------------------------------------------------------------
# Config
# ------------------------------------------------------------------------------------------


def resolve_config(preset: str, overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """The preset with ``key=value`` overrides converted to the preset's types, validated."""
    cfg = apply_overrides(PRESETS, preset, overrides)
    for k in ("seeds", "steps", "eval_every", "batch_size", "n_layers", "n_heads"):
        if int(cfg[k]) < 1:
            raise ValueError(f"{k} must be >= 1, got {cfg[k]}")
    if cfg["data"] not in ("generated", "mnist"):
        raise ValueError(f"data must be 'generated' or 'mnist', got {cfg['data']!r}")
    if not 0 < cfg["held_out"] < cfg["n_images"]:
        raise ValueError(f"held_out must be in (0, n_images={cfg['n_images']}), got "
                         f"{cfg['held_out']}")
    if len(cfg["targets_log10"]) != 2:
        raise ValueError("targets_log10 must be two values: non-sparse,sparse (e.g. 1.30103,7)")
    return cfg


# ------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------


def generated_images(n: int, seed: int = 0, size: int = 28) -> np.ndarray:
    """``n`` uint8 ``[size, size]`` images of 1–3 random thick strokes and a blob (smoke data:
    MNIST-like intensity statistics, no data directory)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    out = np.zeros((n, size, size), np.float32)
    for i in range(n):
        img = np.zeros((size, size), np.float32)
        for _ in range(rng.integers(1, 4)):
            p0, p1 = rng.uniform(4, size - 4, 2), rng.uniform(4, size - 4, 2)
            t = np.linspace(0, 1, 24)[:, None]
            pts = p0 * (1 - t) + p1 * t
            d2 = (yy[None] - pts[:, 0, None, None]) ** 2 + (xx[None] - pts[:, 1, None, None]) ** 2
            img = np.maximum(img, np.exp(-d2.min(0) / (2 * 1.2 ** 2)))
        c = rng.uniform(6, size - 6, 2)
        img = np.maximum(img, np.exp(-((yy - c[0]) ** 2 + (xx - c[1]) ** 2) /
                                     (2 * rng.uniform(1.5, 3) ** 2)))
        out[i] = img
    return np.clip(out * 255, 0, 255).astype(np.uint8)


def load_images(cfg: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(images float32 [N, 28, 28] standardised, train_idx, held_idx)``."""

    if cfg["data"] == "mnist":
        raw, _digits = load_mnist(split="test")  # the teachers give the targets, not the digits
        raw = raw[: cfg["n_images"]]
    else:
        raw = generated_images(cfg["n_images"], seed=0)
    tr, ho = train_heldout_split(raw.shape[0], cfg["held_out"], seed=0)
    x = raw.astype(np.float32) / 255.0
    mu, sd = x[tr].mean(), x[tr].std()
    return (x - mu) / sd, tr, ho


# ------------------------------------------------------------------------------------------
# Models, teachers, targets
# ------------------------------------------------------------------------------------------


def make_model(cfg: dict[str, Any], init_std: float):
    return get_model("vit-tiny", n_layers=cfg["n_layers"], n_heads=cfg["n_heads"],
                     d_model=cfg["d_model"], d_mlp=cfg["d_mlp"], patch_size=cfg["patch_size"],
                     init_std=init_std)


def teacher_fns(cfg: dict[str, Any]) -> dict[str, Any]:
    """The teachers' model and compiled init / apply / ratio functions (shared by both)."""
    model, _ = make_model(cfg, cfg["teacher_init_std"])
    x0 = jnp.zeros((1, 28, 28), jnp.float32)
    return {"model": model, "init": jax.jit(lambda k: model.init(k, x0)),
            "apply": jax.jit(model.apply),
            "ratios": jax.jit(lambda p, x: vt.layer_log10_ratios(model, p, x))}


def build_teacher(cfg: dict[str, Any], fns: dict[str, Any], target_log10: float,
                  calib: np.ndarray) -> dict[str, Any]:
    """A teacher of the given target R, calibrated on ``calib`` (images not trained on)."""
    params = fns["init"](jax.random.key(cfg["teacher_seed"]))
    params, scales = vt.calibrate_teacher(fns["model"], params, jnp.asarray(calib), target_log10,
                                          cfg["n_layers"], ratios=fns["ratios"])
    return {**fns, "params": params, "scales": scales, "target_log10": target_log10}


def teacher_targets(teacher: dict[str, Any], x: np.ndarray, train_idx: np.ndarray,
                    chunk: int = 1000) -> np.ndarray:
    """The teacher's logits on every image, standardised per output over the training images."""
    f = teacher["apply"]
    y = np.concatenate([np.asarray(f(teacher["params"], jnp.asarray(x[i:i + chunk])))
                        for i in range(0, x.shape[0], chunk)])
    mu, sd = y[train_idx].mean(0), y[train_idx].std(0)
    if np.any(sd <= 0):
        raise ValueError("a teacher output is constant over the training images; change "
                         "teacher_seed")
    return ((y - mu) / sd).astype(np.float32)


def measure_teacher_r(teacher: dict[str, Any], x: np.ndarray) -> np.ndarray:
    """``[L, B, H]`` log₁₀R of the teacher's [CLS] rows on ``x``."""
    return np.asarray(teacher["ratios"](teacher["params"], jnp.asarray(x)))


# ------------------------------------------------------------------------------------------
# Students: one vmapped SGD step over seed x eta, driven by the trainer's run_loop
# ------------------------------------------------------------------------------------------


def make_optimizer() -> Optimizer:
    """Plain SGD (the registry's ``sgd``, momentum 0) with η in the state, so members differ."""
    tx = optax.inject_hyperparams(
        lambda learning_rate: build_optimizer("sgd", learning_rate, momentum=0.0))(
        learning_rate=0.01)
    return Optimizer(tx=tx, lr=lambda s, t: s.hyperparams["learning_rate"], hp_keys=())


def regression_loss(model):
    """``loss_fn(params, images, targets, rng)``: mean squared error of the student's logits
    against the standardised teacher logits."""

    def loss_fn(params, images, targets, _rng):
        return jnp.mean((model.apply(params, images) - targets) ** 2)

    return loss_fn


class VmappedEngine:
    """What :func:`run_loop` needs of an engine: the vmapped, jitted ``make_train_step``."""

    def __init__(self, loss_fn, opt: Optimizer):
        self._step = jax.jit(jax.vmap(make_train_step(loss_fn, opt), in_axes=(0, 0, 0)),
                             donate_argnums=0)

    def step(self, hooks=()):
        if hooks:
            raise ValueError("this experiment compiles no in-step hooks; use host hooks")
        return self._step

    def init_hook_states(self, hooks, state):
        return {}


def measure_fn(model):
    """Jitted ``(stacked params, x_probe, y_probe, x_held, y_held, x_r) -> (ℓ_probe [M],
    ℓ_held [M], median log₁₀R [M, L, H])``."""

    def one(params, xp, yp, xh, yh, xr):
        lp = jnp.mean((model.apply(params, xp) - yp) ** 2)
        lh = jnp.mean((model.apply(params, xh) - yh) ** 2)
        return lp, lh, jnp.median(vt.layer_log10_ratios(model, params, xr), axis=1)

    return jax.jit(jax.vmap(one, in_axes=(0, None, None, None, None, None)))


class Measure(Hook):
    """Every ``every`` updates (and before the first): ℓ on the train probe and the held-out
    images, and the [CLS] log₁₀R per layer and head (median over the R probe), per member."""

    def __init__(self, every: int, fn, data: tuple):
        self.every, self.at_end = every, True
        self._f, self._data = fn, data
        self.steps: list[int] = []
        self.probe_loss: list[np.ndarray] = []
        self.held_loss: list[np.ndarray] = []
        self.log10_r: list[np.ndarray] = []

    def _measure(self, info: StepInfo) -> None:
        lp, lh, r = self._f(info.state.params, *self._data)
        self.steps.append(info.step)
        self.probe_loss.append(np.asarray(lp))
        self.held_loss.append(np.asarray(lh))
        self.log10_r.append(np.asarray(r))

    def start(self, info: StepInfo) -> None:
        self._measure(info)

    def __call__(self, info: StepInfo) -> None:
        if not self.steps or self.steps[-1] != info.step:
            self._measure(info)


def init_members(init, opt: Optimizer, seeds: list[int], etas: list[float]) -> TrainState:
    """Member ``m`` = (seed, η): its own init and step keys, η in its optimiser state."""
    states = []
    for seed, eta in zip(seeds, etas):
        k_init, k_train = jax.random.split(jax.random.PRNGKey(seed))
        params = init(k_init)
        os_ = opt.tx.init(params)
        os_ = os_._replace(hyperparams={**os_.hyperparams,
                                        "learning_rate": jnp.asarray(eta, jnp.float32)})
        states.append(TrainState(jnp.zeros((), jnp.int32), params, os_, k_train))
    return jax.tree.map(lambda *xs: jnp.stack(xs), *states)


def make_students(cfg: dict[str, Any]) -> dict[str, Any]:
    """Model, compiled step and measurement of the students (built once, shared by both
    teachers: the data enter as arguments, so nothing is compiled twice)."""
    model, _ = make_model(cfg, cfg["student_init_std"])
    opt = make_optimizer()
    x0 = jnp.zeros((1, 28, 28), jnp.float32)
    return {"model": model, "opt": opt, "engine": VmappedEngine(regression_loss(model), opt),
            "measure": measure_fn(model), "init": jax.jit(lambda k: model.init(k, x0))}


def train_students(cfg: dict[str, Any], students: dict[str, Any], X: np.ndarray, Y: np.ndarray,
                   train_idx: np.ndarray, held_idx: np.ndarray) -> dict[str, Any]:
    """Train the seed × η grid of students of one teacher as one vmapped step (``run_loop``)."""
    etas = [float(e) for e in cfg["etas"]]
    grid = [(s, e) for s in range(cfg["seeds"]) for e in etas]  # seeds outermost
    seeds = [s for s, _ in grid]
    Xd, Yd = jnp.asarray(X), jnp.asarray(Y)
    state = init_members(students["init"], students["opt"], seeds, [e for _, e in grid])
    probe, held = train_idx[: cfg["n_probe"]], held_idx
    data = (Xd[probe], Yd[probe], Xd[held], Yd[held], Xd[held_idx[: cfg["n_r_probe"]]])
    meas = Measure(cfg["eval_every"], students["measure"], data)
    B, n_tr = cfg["batch_size"], len(train_idx)

    def batches(t: int):
        """Member m's batch t: B training images drawn with replacement by key (seed_m, t)."""
        idx = np.stack([train_idx[np.random.default_rng((s, t)).integers(0, n_tr, B)]
                        for s in seeds])
        idx = jnp.asarray(idx, jnp.int32)
        return jnp.take(Xd, idx, axis=0), jnp.take(Yd, idx, axis=0)

    t0 = time.perf_counter()
    state, control = run_loop(students["engine"], state, 0, cfg["steps"], batches, [meas])
    jax.block_until_ready(state.params)
    wall = time.perf_counter() - t0
    probe_loss = np.stack(meas.probe_loss)  # [K, M]
    return {"grid": grid, "etas": etas, "steps": np.asarray(meas.steps),
            "probe_loss": probe_loss, "held_loss": np.stack(meas.held_loss),
            "log10_r": np.stack(meas.log10_r),  # [K, M, L, H]
            "rel": probe_loss / probe_loss[:1], "params": state.params,
            "model": students["model"], "wall_s": wall,
            "stopped": control.stop_reason or "completed"}


# ------------------------------------------------------------------------------------------
# Analysis, figures, report
# ------------------------------------------------------------------------------------------


def final_rel_grid(res: dict[str, Any], n_seeds: int) -> np.ndarray:
    """``[seeds, etas]`` final ℓ/ℓ₀ on the train probe."""
    return res["rel"][-1].reshape(n_seeds, len(res["etas"]))


def checks(cfg: dict[str, Any], teachers: dict[str, dict], results: dict[str, dict]) -> list[dict]:
    out = []
    for name in TEACHERS:
        t = teachers[name]
        ok, det = crit.teacher_r_in_band(t["log10_r_train"], t["target_log10"], cfg["r_band"])
        out.append({"claim": CLAIM_R, "criterion": f"{name} teacher: abs(median log10 R − "
                    f"{t['target_log10']:.2f}) ≤ {cfg['r_band']} decades (on the training images)",
                    "ok": ok, "ours": f"log10 R = {det['measured_log10']:.2f}"})
    best = {}
    for name in TEACHERS:
        fr = final_rel_grid(results[name], cfg["seeds"])
        i, eta = crit.best_eta(fr, results[name]["etas"])
        best[name] = (i, eta, fr[:, i])
    ok, det = crit.slower_on_sparse(best["sparse"][2], best["non-sparse"][2], cfg["slower_factor"])
    out.append({"claim": CLAIM_SLOW, "criterion": f"at each teacher's best η, gmean final ℓ/ℓ₀ "
                f"(sparse) ≥ {cfg['slower_factor']}× (non-sparse) and seeds separate",
                "ok": ok, "ours": f"best η {best['sparse'][1]:g} / {best['non-sparse'][1]:g}: "
                f"{det['gmean_sparse']:.3g} vs {det['gmean_dense']:.3g} (×{det['ratio']:.2f}), "
                f"separated: {det['seeds_separated']}"})
    ok, det = crit.learns(best["non-sparse"][2], cfg["learn_max_rel"])
    out.append({"claim": "(control) the non-sparse teacher's students do converge",
                "criterion": f"gmean final ℓ/ℓ₀ (non-sparse, best η) ≤ {cfg['learn_max_rel']}",
                "ok": ok, "ours": f"{det['gmean_final_rel']:.3g}"})
    return out


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_loss(cfg, results, path: pathlib.Path, title: str) -> None:
    plt = _plt()
    etas = results[TEACHERS[0]]["etas"]
    fig, axes = plt.subplots(1, len(etas), figsize=(4.2 * len(etas), 3.6), sharey=True)
    for j, eta in enumerate(etas):
        ax = axes[j]
        for name in TEACHERS:
            r = results[name]
            for s in range(cfg["seeds"]):
                m = s * len(etas) + j
                ax.semilogy(r["steps"], r["rel"][:, m], color=COLORS[name],
                            ls=("-", "--", ":")[s % 3], lw=1.2,
                            label=f"{name} teacher, seed {s}")
        ax.set_title(f"η = {eta:g}", fontsize=10)
        ax.set_xlabel("SGD step")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("ℓ/ℓ₀ (train probe)")
    axes[-1].legend(fontsize=7, loc="best")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_r(cfg, results, best, path: pathlib.Path, title: str) -> None:
    plt = _plt()
    L = cfg["n_layers"]
    fig, axes = plt.subplots(1, len(TEACHERS), figsize=(5.2 * len(TEACHERS), 3.6), sharey=True)
    for ax, name in zip(axes, TEACHERS):
        r, j = results[name], best[name]
        members = [s * len(r["etas"]) + j for s in range(cfg["seeds"])]
        cmap = plt.get_cmap("viridis")
        for layer in range(L):
            vals = r["log10_r"][:, members, layer, :]  # [K, seeds, H]
            mean = vals.mean(axis=(1, 2))
            lo, hi = vals.min(axis=(1, 2)), vals.max(axis=(1, 2))
            c = cmap(layer / max(L - 1, 1))
            ax.plot(r["steps"], mean, color=c, label=f"layer {layer}")
            ax.fill_between(r["steps"], lo, hi, color=c, alpha=0.15)
        ax.axhline(cfg["targets_log10"][TEACHERS.index(name)], color="k", ls="--", lw=1,
                   label="teacher's target")
        ax.set_title(f"students of the {name} teacher (η = {r['etas'][j]:g})", fontsize=10)
        ax.set_xlabel("SGD step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("log₁₀ R of the [CLS] row")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_maps(cfg, nets: list[tuple[str, Any, Any]], image: np.ndarray, path: pathlib.Path,
              title: str) -> None:
    """App. I: the [CLS] attention over the patch grid, one row per (net, layer), one panel per
    head (log₁₀ colour); ``nets`` = [(label, model, params), ...]."""
    plt = _plt()
    L, H = cfg["n_layers"], cfg["n_heads"]
    g = 28 // cfg["patch_size"]
    rows = len(nets) * L
    fig, axes = plt.subplots(rows, H + 1, figsize=(1.9 * (H + 1), 1.9 * rows + 0.8),
                             squeeze=False)
    for n, (label, model, params) in enumerate(nets):
        _, aux = model.apply(params, jnp.asarray(image[None]), return_attention=True)
        for layer in range(L):
            a = np.asarray(aux["attention"][layer][0], np.float64)  # [H, T, T]
            row_axes = axes[n * L + layer]
            row_axes[0].imshow(image, cmap="gray")
            row_axes[0].set_ylabel(f"{label}\nlayer {layer}", fontsize=7)
            for h in range(H):
                row = np.maximum(a[h, 0, 1:], 1e-30).reshape(g, g)
                im = row_axes[h + 1].imshow(np.log10(row / row.max()), cmap="magma",
                                            vmin=-MAP_DECADES, vmax=0)
                lr = float(np.log10(a[h, 0].max() / max(a[h, 0].min(), 1e-38)))
                row_axes[h + 1].set_title(f"head {h}: log₁₀R {lr:.1f}", fontsize=7)
            for ax in row_axes:
                ax.set_xticks([])
                ax.set_yticks([])
    fig.suptitle(title, fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.9 / (1.9 * rows + 0.8)))  # room for the 2-line title
    fig.colorbar(im, ax=axes[:, 1:], shrink=0.6, label="log₁₀(a / max a)")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def _device() -> str:
    d = jax.devices()[0]
    return f"{d.platform}: {getattr(d, 'device_kind', '')}"


def run(preset: str, out_dir: pathlib.Path, overrides: Mapping[str, Any] | None = None) -> dict:
    """Build both teachers, train both student grids, measure, plot, write ``report.md``."""
    t_start = time.perf_counter()
    cfg = resolve_config(preset, overrides)
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    X, tr, ho = load_images(cfg)
    calib = X[ho[-cfg["n_calib"]:]]  # calibration: the end of the held-out part
    teachers, results = {}, {}
    fns, students = teacher_fns(cfg), make_students(cfg)
    for name, target in zip(TEACHERS, cfg["targets_log10"]):
        t = build_teacher(cfg, fns, float(target), calib)
        r_train = measure_teacher_r(t, X[tr[: cfg["n_probe"]]])  # [L, B, H]
        t["log10_r_train"] = vt.median_log10_ratio(r_train)
        t["log10_r_layer_head"] = np.median(r_train, axis=1)  # [L, H]
        Y = teacher_targets(t, X, tr)
        teachers[name] = t
        results[name] = train_students(cfg, students, X, Y, tr, ho)
    best = {n: crit.best_eta(final_rel_grid(results[n], cfg["seeds"]), results[n]["etas"])[0]
            for n in TEACHERS}
    cks = checks(cfg, teachers, results)
    passed = all(c["ok"] for c in cks)
    figs = {"loss": out_dir / f"softmax_vit_mnist_{preset}_loss.png",
            "R": out_dir / f"softmax_vit_mnist_{preset}_R.png"}
    where = "real MNIST (10k test images)" if cfg["data"] == "mnist" else "generated images"
    plot_loss(cfg, results, figs["loss"],
              f"Paper 001 Fig. 2b — tiny ViT, SGD, {where}: ℓ/ℓ₀ per η\n"
              "(line style = seed; blue: non-sparse teacher, orange: sparse teacher)")
    plot_r(cfg, results, best, figs["R"],
           "Students' [CLS] attention ratio per layer over training (best η): "
           "line = mean, band = min–max over heads and seeds")
    for name in TEACHERS:
        j = best[name]  # seed 0 at the best eta is member j
        p0 = jax.tree.map(lambda x, j=j: x[j], results[name]["params"])
        key = f"maps_{name}"
        figs[key] = out_dir / f"softmax_vit_mnist_{preset}_maps_{name}.png"
        nets = [("teacher", teachers[name]["model"], teachers[name]["params"]),
                ("student", results[name]["model"], p0)]
        plot_maps(cfg, nets, X[ho[0]], figs[key],
                  f"App. I — [CLS] attention over the patches, {name} teacher\n"
                  f"(target R = 10^{cfg['targets_log10'][TEACHERS.index(name)]:.1f}) and its "
                  f"student at the end (seed 0, η = {results[name]['etas'][j]:g})")
    wall = time.perf_counter() - t_start
    report = write_report(out_dir / "report.md", preset, cfg, teachers, results, best, cks, figs,
                          wall)
    summary = {
        "preset": preset, "passed": passed, "wall_s": wall, "device": _device(),
        "checks": cks,
        "teachers": {n: {"log10_r_train": teachers[n]["log10_r_train"],
                         "scales": teachers[n]["scales"],
                         "log10_r_layer_head": teachers[n]["log10_r_layer_head"].tolist()}
                     for n in TEACHERS},
        "final_rel": {n: final_rel_grid(results[n], cfg["seeds"]).tolist() for n in TEACHERS},
        "best_eta": {n: results[n]["etas"][best[n]] for n in TEACHERS},
        "train_wall_s": {n: results[n]["wall_s"] for n in TEACHERS},
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1, default=float))
    for n in TEACHERS:
        r = results[n]
        np.savez(out_dir / f"curves_{n}.npz", steps=r["steps"], probe_loss=r["probe_loss"],
                 held_loss=r["held_loss"], log10_r=r["log10_r"], grid=np.asarray(r["grid"]))
        save_params(out_dir / f"params_{n}.npz", teachers[n]["params"], r["params"], r["grid"],
                    teachers[n]["scales"])
    return {"report": report, "passed": passed, "checks": cks, "summary": summary,
            "figures": figs}


def save_params(path: pathlib.Path, teacher_params, student_params, grid, scales) -> None:
    """Write the teacher's and every student's final parameters to one ``.npz``: keys
    ``teacher/<path>`` and ``students/<path>`` (students stacked on a leading member axis in
    ``grid`` order), plus ``grid`` ([M, 2]: seed, η) and the teacher's q/k ``scales``. Read back
    with :func:`load_params` (App. J.3's tables are computed from these)."""
    flat = {f"{prefix}/{k}": np.asarray(v)
            for prefix, tree in (("teacher", teacher_params), ("students", student_params))
            for k, v in flatten_dict(tree, sep="/").items()}
    np.savez(path, grid=np.asarray(grid, np.float64), scales=np.asarray(scales), **flat)


def load_params(path: pathlib.Path, like_params) -> tuple[Any, Any, np.ndarray]:
    """``(teacher params, stacked student params, grid)`` from :func:`save_params`'s file, in the
    tree structure of ``like_params`` (one model's params, e.g. ``model.init(...)``)."""
    with np.load(path) as z:
        data = dict(z)
    keys = list(flatten_dict(like_params, sep="/"))
    missing = [k for k in keys if "teacher/" + k not in data]
    if missing:
        raise ValueError(f"{path}: no parameters for {missing[:3]}...; the file does not match "
                         "this model configuration (same preset and --set overrides?)")
    teacher, students = (unflatten_dict({k: jnp.asarray(data[f"{prefix}/{k}"]) for k in keys},
                                        sep="/") for prefix in ("teacher", "students"))
    return teacher, students, data["grid"]


def write_report(path, preset, cfg, teachers, results, best, cks, figs, wall) -> pathlib.Path:
    passed = all(c["ok"] for c in cks)
    lines = [f"# Paper 001 Fig. 2b / App. I — tiny ViT, sparse vs non-sparse teacher ({preset})",
             "", f"`jaxspectra reproduce softmax_vit_mnist --preset {preset}` — "
             f"**{'PASSED' if passed else 'FAILED'}**; device {_device()}; wall {wall:.1f} s", "",
             f"Data: {cfg['data']} ({cfg['n_images']} images, {cfg['held_out']} held out); "
             f"ViT {cfg['n_layers']} layers × {cfg['n_heads']} heads, d={cfg['d_model']}, "
             f"MLP {cfg['d_mlp']}, patch {cfg['patch_size']}; targets = the teacher's 10 logits "
             "(standardised), squared loss; the digit labels are not used. SGD (no momentum), "
             f"batch {cfg['batch_size']}, {cfg['steps']} steps, η ∈ {list(cfg['etas'])}, "
             f"{cfg['seeds']} seeds, one vmapped step per teacher.", "",
             "| claim (paper) | criterion (fixed before the run) | ours | verdict |",
             "|---|---|---|---|"]
    for c in cks:
        lines.append(f"| {c['claim']} | {c['criterion']} | {c['ours']} | "
                     f"{'pass' if c['ok'] else 'FAIL'} |")
    lines += ["", "## Teachers", "",
              "| teacher | target log10 R | measured (train images) | q/k scale per layer | "
              "log10 R per layer (median over heads) |", "|---|---|---|---|---|"]
    for n in TEACHERS:
        t = teachers[n]
        lines.append(f"| {n} | {t['target_log10']:.2f} | {t['log10_r_train']:.2f} | "
                     f"{', '.join(f'{s:.3g}' for s in t['scales'])} | "
                     f"{', '.join(f'{v:.2f}' for v in np.median(t['log10_r_layer_head'], 1))} |")
    lines += ["", "## Students: final ℓ/ℓ₀ (train probe) and held-out ℓ, per η (mean ± std over "
              "seeds)", "", "| teacher | η | final ℓ/ℓ₀ | held-out ℓ | end log10 R (median over "
              "layer-heads, seeds) |", "|---|---|---|---|---|"]
    for n in TEACHERS:
        r = results[n]
        fr = final_rel_grid(r, cfg["seeds"])
        hl = r["held_loss"][-1].reshape(cfg["seeds"], len(r["etas"]))
        lr = r["log10_r"][-1].reshape(cfg["seeds"], len(r["etas"]), -1)
        for j, eta in enumerate(r["etas"]):
            star = " (best)" if j == best[n] else ""
            lines.append(f"| {n} | {eta:g}{star} | {fr[:, j].mean():.3g} ± {fr[:, j].std():.2g} | "
                         f"{hl[:, j].mean():.3g} | {np.median(lr[:, j]):.2f} |")
    lines += ["", "## Figures", ""] + [f"![{k}]({p.name})" for k, p in figs.items()]
    lines += ["", "Training wall time: " + ", ".join(
        f"{n} {results[n]['wall_s']:.1f} s" for n in TEACHERS)]
    path.write_text("\n".join(lines) + "\n")
    return path


__all__ = ["DESCRIPTION", "PRESETS", "run", "resolve_config"]
