"""Paper 004 (module-wise Manifold Muon): Table 1 / Figs. 1–2, the mechanism, the retraction
artefact and a scale control, on a scaled-down GPT-2 (issue 23 items 1–5).

Parts (``--set parts=table1,artefact,scale``; each run is saved under ``<out>/runs/<name>/`` and
the report is rebuilt from every run present, so the parts can run as separate commands):

``--set parts=none`` runs nothing and rebuilds the report from the runs saved in ``--out`` (e.g.
after copying the ``runs/`` of two GPU commands into one directory).

* ``table1`` — the five assignments of Table 1 (:func:`jaxspectra.optim.module_wise.paper004`,
  the authors' choices: sorted DGram retraction, Polar-Express bf16 sign, K = 20, α = 0.1, early
  stop 1e-6, sum-form Nesterov 0.95, AdamW 6e-4 → 6e-5 cosine, Muon LR 0.02 in proportion, clip
  1.0, weights on their manifold at init) × seeds: validation curves (Fig. 1), final validation
  loss ± half-range, the stability verdict (:mod:`jaxspectra.train.instability`), σ_max per group
  over training (Fig. 2), App. C's σ_j = ‖w_j‖ under DGram, the attention saturation measures
  (logit scale, gap, entropy, ‖J_softmax‖_F: the ``attention`` monitor) and the gradient norms
  per group (``grad_norms`` monitor), the DGram dual ascent's final violation per group (from the
  optimiser state), the sorted retraction's exact column-rank swaps (``ManifoldMuonState.swaps``
  / ``swaps_total``, counted on the pre-retraction point at every step) and a cheap upper bound
  on them from the weights at the probe steps.
* ``artefact`` — the DGram-attention assignments (All-DGram, Hetero-Inv) with the library's
  default DGram retraction Q·diag(QᵀX) (the identity on the manifold) instead of the sorted one.
* ``scale`` — Hetero-Inv (DGram attention) with a scale control: ``scale_control="msign"``
  (paper 003's MSign on the attention weights every ``msign_period`` steps: W ← ‖W‖_F·sign(W)/
  ‖sign(W)‖_F, which keeps a DGram matrix on its manifold and caps σ_max at the RMS column
  norm), or ``"wd"`` (``manifold_muon``'s decoupled weight decay λ = 0.1 on the attention
  weights only, X = W − η(A + λW) before the retraction: it shrinks the DGram column scales by
  (1 − ηλ) per step; the Stiefel MLP is not decayed).

Every criterion and threshold is in :mod:`experiments._manifold_criteria` (fixed before the
runs, each with a negative control in the tests). The runs go through the trainer
(:func:`jaxspectra.train.loop.train`) with one extra host hook (:class:`ManifoldProbe`); sweeps
take no hooks or monitors yet, so seeds run one after another (a persistent compilation cache
makes the 2nd and 3rd seed of a configuration skip compilation). A run whose ``result.json``
exists with the same settings is reused (``--set rerun=1`` redoes it; the smoke always reruns),
so a command stopped by a time limit completes when repeated.

Scale: ``smoke`` 2 layers × 32, T = 32, B = 8, 12 steps, 1 seed, the embedded default corpus
(no data directory), Hetero-Inv only (DGram attention, Stiefel MLP: both manifolds) in its three
variants — faithful, default retraction, MSign scale control — to stay within 90 s on a CPU
(``--set assignments=unconstrained_muon,all_stiefel,all_dgram,hetero,hetero_inv`` runs all five). ``full`` 4 layers × 256 (4 heads of 64), d_mlp 1024, T = 128, B = 32,
400 steps (warm-up 20), 3 seeds, the ``docs`` corpus (byte tokens) from
``$JAXSPECTRA_DATA_DIR/docs-corpus/``. The paper: 12 × 768, T = 1024, B = 64, 50 000 steps,
OpenWebText with GPT-2 BPE.
"""

from __future__ import annotations

import json
import math
import pathlib
import shutil
import time
from typing import Any

import jax
import numpy as np

from jaxspectra.train.hooks import Hook

from . import _manifold_criteria as C
from ._presets import apply_overrides

DESCRIPTION = ("paper 004 Table 1 / Figs. 1-2: five module-wise Manifold-Muon assignments, "
               "the DGram-attention instability, its mechanism, the retraction artefact, a "
               "scale control")

ASSIGNMENTS = ("unconstrained_muon", "all_stiefel", "all_dgram", "hetero", "hetero_inv")
DGRAM_ATTENTION = ("all_dgram", "hetero_inv")
STIEFEL_ATTENTION = ("all_stiefel", "hetero")
PAPER_ORDER = ("hetero", "all_stiefel", "unconstrained_muon")  # best first (Table 1)
PAPER_LOSS = {"unconstrained_muon": "3.3855", "all_stiefel": "3.3679", "hetero": "3.3544",
              "all_dgram": "Unst.", "hetero_inv": "Unst."}
PARTS = ("table1", "artefact", "scale")
#: λ of ``scale_control="wd"`` (decoupled, attention only): the AdamW / unconstrained-Muon decay
#: of paper 004's runs, so the control adds no new hyper-parameter.
WD_ATTENTION = 0.1

PRESETS: dict[str, dict[str, Any]] = {
    "smoke": dict(n_layers=2, d_model=32, n_heads=2, d_mlp=128, seq_len=32, batch_size=8,
                  steps=12, warmup=3, eval_every=4, eval_batches=2, every=1, probe_every=1,
                  probe_batch=2,
                  seeds="0", source="default", parts="table1,artefact,scale",
                  assignments="hetero_inv", lr=6e-4, muon_peak=0.02,
                  scale_control="msign", msign_period=4, dtype="float32", rerun=1),
    "full": dict(n_layers=4, d_model=256, n_heads=4, d_mlp=1024, seq_len=128, batch_size=32,
                 steps=400, warmup=20, eval_every=20, eval_batches=8, every=1, probe_every=20,
                 probe_batch=4,
                 seeds="0,1,2", source="docs", parts="table1,artefact,scale",
                 assignments=",".join(ASSIGNMENTS), lr=6e-4, muon_peak=0.02,
                 scale_control="msign", msign_period=10, dtype="bfloat16", rerun=0),
}


def _resolve(preset: str, overrides: dict[str, Any] | None) -> dict[str, Any]:
    try:
        cfg = apply_overrides(PRESETS, preset, overrides)
    except ValueError as err:
        raise SystemExit(f"manifold_repro: {err}") from None
    bad = [p for p in _csv(cfg["parts"]) if p not in (*PARTS, "none")]
    if bad:
        raise SystemExit(f"manifold_repro: unknown part(s) {bad}; known: {list(PARTS)} "
                         "(e.g. --set parts=table1,artefact)")
    bad = [a for a in _csv(cfg["assignments"]) if a not in ASSIGNMENTS]
    if bad:
        raise SystemExit(f"manifold_repro: unknown assignment(s) {bad}; known: {list(ASSIGNMENTS)}")
    if cfg["scale_control"] not in ("msign", "wd"):
        raise SystemExit("manifold_repro: scale_control must be 'msign' or 'wd'")
    if cfg["warmup"] >= cfg["steps"]:
        raise SystemExit(f"manifold_repro: warmup ({cfg['warmup']}) must be < steps "
                         f"({cfg['steps']}); e.g. --set warmup={max(1, cfg['steps'] // 20)}")
    return cfg


def _csv(s: str) -> list[str]:
    return [x.strip() for x in str(s).split(",") if x.strip()]


def muon_lr(c: dict[str, Any]):
    """The Muon-family learning rate η_t of the runs (paper 004: 0.02 · lr_adamw(t) / 6e-4)."""
    from jaxspectra.optim.module_wise import paper004_schedules

    return paper004_schedules(c["steps"], warmup_steps=c["warmup"], adamw_peak=c["lr"],
                              adamw_floor=0.1 * c["lr"], muon_peak=c["muon_peak"])[1]


# ---- the probe hook -----------------------------------------------------------------------


def probe(params: Any, opt_state: Any, assignment: str, eta: float) -> dict[str, float]:
    """Host-side measurements of one state (module docstring of :mod:`_manifold_criteria`).

    Keys: ``mm/<group>/max_sigma``, ``mm/<group>/max_colnorm``, ``mm/<group>/sigma_colnorm_rel``
    (max over the group's matrices; DGram groups only), ``mm/<group>/swap_eligible`` (sum over
    the group's matrices; DGram only: an *upper bound* on the next step's swaps, from the
    weights), and from the optimiser state (:func:`state_metrics`) ``mm/<group>/violation_max`` /
    ``_mean`` and the *exact* ``mm/<group>/swaps`` / ``swaps_total``.
    """
    from jaxspectra.optim.module_wise import ASSIGNMENTS as A
    from jaxspectra.optim.module_wise import module_labels

    manifolds = dict(zip(("attention", "mlp"), A[assignment]))
    out: dict[str, float] = {}
    labels = jax.tree.leaves(module_labels(params))
    leaves = jax.tree_util.tree_leaves(params)
    for lab, x in zip(labels, leaves):
        if lab not in manifolds or np.ndim(x) < 2:
            continue
        arr = np.asarray(x, np.float64)
        for w in arr.reshape((-1, *arr.shape[-2:])):
            t = C.tall(w)
            sig = np.linalg.svd(t, compute_uv=False)  # one SVD per matrix and probe
            cn = np.linalg.norm(t, axis=0)
            _max(out, f"mm/{lab}/max_sigma", float(sig[0]))
            _max(out, f"mm/{lab}/max_colnorm", float(np.max(cn)))
            if manifolds[lab] == "dgram":
                _max(out, f"mm/{lab}/sigma_colnorm_rel", C.sigma_colnorm_rel(sig, cn))
                key = f"mm/{lab}/swap_eligible"
                out[key] = out.get(key, 0.0) + C.swap_eligible_pairs(w, eta)
    out.update(state_metrics(opt_state))
    return out


def _max(d: dict[str, float], k: str, v: float) -> None:
    d[k] = max(d.get(k, -math.inf), v)


def state_metrics(opt_state: Any) -> dict[str, float]:
    """Metrics of every ``ManifoldMuonState`` in ``opt_state`` (the group read from the
    partition label in its path):

    * ``mm/<group>/violation_max|mean`` — the dual ascent's RMS(P(WᵀA + AᵀW)) at the last step;
    * ``mm/<group>/swaps`` — the exact number of columns whose scale the sorted DGram retraction
      re-assigned at the last step (:func:`jaxspectra.optim.manifold_muon.rank_changes` of
      X = W − η·A), summed over the group's matrices; ``mm/<group>/swaps_total`` — the same
      summed over every step since the optimiser's ``init`` (0 for Stiefel and for the default
      DGram retraction).
    """
    from jaxspectra.optim.manifold_muon import ManifoldMuonState

    is_mm = lambda x: isinstance(x, ManifoldMuonState)  # noqa: E731
    out: dict[str, float] = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(opt_state, is_leaf=is_mm)[0]:
        if not is_mm(leaf):
            continue
        ps = jax.tree_util.keystr(path)
        grp = "attention" if "attention" in ps else "mlp" if "mlp" in ps else "other"
        v = [np.asarray(x, np.float64).ravel() for x in jax.tree.leaves(leaf.violation)]
        if v:
            v = np.concatenate(v)
            out[f"mm/{grp}/violation_max"] = float(np.max(v))
            out[f"mm/{grp}/violation_mean"] = float(np.mean(v))
        for name in ("swaps", "swaps_total"):
            n = [np.asarray(x, np.int64).sum() for x in jax.tree.leaves(getattr(leaf, name))]
            if n:
                out[f"mm/{grp}/{name}"] = float(sum(n))
    return out


class ManifoldProbe(Hook):
    """Host hook: :func:`probe` every ``every`` updates (and before the first), and the run's
    records collected into ``curves[key] = [(step, value)]`` — train and eval records always,
    monitor records (attention, gradient norms) on the same ``every`` steps only.

    The device monitors run on *every* step (``every = 1`` in the config): then the jitted step
    has a single variant (with its in-step hooks), so the expensive Manifold-Muon step is
    compiled once per configuration instead of twice (due / not due); the probe's host SVDs
    keep their own cadence."""

    at_end = True

    def __init__(self, every: int, assignment: str, eta):
        self.every, self.assignment, self.eta = every, assignment, eta
        self.curves: dict[str, list[tuple[int, float]]] = {}

    def _add(self, step: int, values: dict[str, Any]) -> None:
        for k, v in values.items():
            try:
                self.curves.setdefault(k, []).append((int(step), float(np.asarray(v))))
            except (TypeError, ValueError):
                continue

    def _probe(self, info) -> None:
        st = info.state
        self._add(info.step, probe(st.params, st.opt_state, self.assignment,
                                   float(self.eta(info.step))))

    def start(self, info) -> None:
        self._probe(info)

    def on_record(self, record) -> None:
        if record.kind in ("train", "eval") or record.step % self.every == 0:
            self._add(record.step, record.values)

    def __call__(self, info) -> None:
        self._probe(info)


# ---- one run --------------------------------------------------------------------------------


def run_config(c: dict[str, Any], assignment: str, seed: int, run_dir: pathlib.Path,
               variant: str = "faithful", data_dir: str = "") -> Any:
    """The trainer config of one run (``variant``: faithful | defaultret | msign | wd)."""
    from jaxspectra.train.config import from_dict

    options: dict[str, Any] = {"muon_peak": c["muon_peak"]}
    msign: dict[str, Any] = {}
    if variant == "defaultret":
        options["retraction"] = "default"
    elif variant == "msign":
        msign = {"period": c["msign_period"], "targets": "attention"}
    elif variant == "wd":  # decoupled decay before the retraction, attention weights only
        options["weight_decay"] = WD_ATTENTION
        options["weight_decay_groups"] = "attention"
    dtype = c["dtype"] if jax.default_backend() != "cpu" else "float32"
    return from_dict({
        "run": {"dir": str(run_dir), "seed": seed, "num_devices": 1,
                "compile_cache_dir": "~/.cache/jaxspectra/xla"},
        "model": {"name": "gpt2-small", "dtype": dtype, "options": {
            "n_layers": c["n_layers"], "d_model": c["d_model"], "n_heads": c["n_heads"],
            "d_mlp": c["d_mlp"], "vocab_size": 256, "max_seq_len": c["seq_len"]}},
        "data": {"source": c["source"], "data_dir": data_dir, "tokenizer": "byte",
                 "batch_size": c["batch_size"], "seq_len": c["seq_len"],
                 "eval_batches": c["eval_batches"]},
        "optim": {"name": assignment, "learning_rate": c["lr"], "schedule": "cosine",
                  "warmup_steps": c["warmup"], "clip_norm": 1.0, "options": options,
                  "schedule_options": {"floor": 0.1}, "msign": msign},
        "train": {"steps": c["steps"], "eval_every": c["eval_every"], "progress": False,
                  "log_every": 1},
        "checkpoint": {"every": 0, "keep": 0},
        "monitors": {"attention": {"every": c["every"], "probe_batch": c["probe_batch"]},
                     "grad_norms": {"every": c["every"]}},
    })


def one_run(c: dict[str, Any], assignment: str, seed: int, variant: str,
            runs_dir: pathlib.Path) -> dict[str, Any]:
    """Train one run through the trainer; save and return its curves, verdict and timing."""
    from jaxspectra.train.loop import train

    name = f"{assignment}-{variant}-s{seed}"
    run_dir = runs_dir / name
    saved = run_dir / "result.json"
    if not c["rerun"] and saved.exists():
        old = json.loads(saved.read_text())
        if old.get("config") == _run_keys(c):
            print(f"manifold_repro: {name} already done in {run_dir} (rerun=1 to redo)",
                  flush=True)
            return old
    if run_dir.exists():
        shutil.rmtree(run_dir)  # a fresh run (the trainer would resume otherwise)
    cfg = run_config(c, assignment, seed, run_dir, variant)
    hook = ManifoldProbe(c["probe_every"], assignment, muon_lr(c))
    t0 = time.perf_counter()
    res = train(cfg, hooks=[hook])
    wall = time.perf_counter() - t0
    s = res.summary
    out = {"name": name, "assignment": assignment, "seed": seed, "variant": variant,
           "wall_s": round(wall, 2), "tokens_per_s": s.get("tokens_per_s"),
           "step_s": (c["batch_size"] * c["seq_len"] / s["tokens_per_s"]
                      if s.get("tokens_per_s") else None),
           "steps_done": s.get("steps_done"), "stopped": s.get("stopped"),
           "final_eval_loss": s.get("final_eval_loss"), "verdict": s["verdict"],
           "config": _run_keys(c), "curves": hook.curves}
    saved.write_text(json.dumps(out))
    return out


def _run_keys(c: dict[str, Any]) -> dict[str, Any]:
    """The preset fields a run's result depends on (a saved run is reused only if they match)."""
    return {k: v for k, v in c.items() if k not in ("seeds", "parts", "assignments", "rerun")}


def load_runs(runs_dir: pathlib.Path) -> list[dict[str, Any]]:
    """Every saved run under ``runs_dir`` (so parts run as separate commands share a report)."""
    return [json.loads(p.read_text()) for p in sorted(runs_dir.glob("*/result.json"))]


# ---- analysis -------------------------------------------------------------------------------


def curve(run: dict[str, Any], key: str) -> tuple[list[int], list[float]]:
    pts = run["curves"].get(key, [])
    return [p[0] for p in pts], [p[1] for p in pts]


def max_gap_curve(run: dict[str, Any]) -> tuple[list[int], list[float]]:
    """The saturation measure: max over layer-heads of the mean top-1 − top-2 logit gap."""
    keys = [k for k in run["curves"] if k.startswith("attention/layer_") and
            k.endswith("/logit_gap")]
    by_step: dict[int, float] = {}
    for k in keys:
        for s, v in run["curves"][k]:
            by_step[s] = max(by_step.get(s, -math.inf), v if math.isfinite(v) else math.inf)
    steps = sorted(by_step)
    return steps, [by_step[s] for s in steps]


def analyse(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Every criterion of :mod:`_manifold_criteria` on the runs present."""
    faithful = [r for r in runs if r["variant"] == "faithful"]
    by_a = {a: [r for r in faithful if r["assignment"] == a] for a in ASSIGNMENTS}
    unstable = {a: [r["verdict"]["unstable"] for r in rs] for a, rs in by_a.items() if rs}
    final = {a: [r["final_eval_loss"] if r["final_eval_loss"] is not None else math.nan
                 for r in rs] for a, rs in by_a.items() if rs}
    attn_sigma = {a: [curve(r, "mm/attention/max_sigma")[1] for r in rs]
                  for a, rs in by_a.items() if rs}
    rel = [v for r in runs for k in ("mm/attention/sigma_colnorm_rel", "mm/mlp/sigma_colnorm_rel")
           for v in curve(r, k)[1]]
    mech_runs = []
    for r in runs:
        st, g = max_gap_curve(r)
        mech_runs.append({"name": r["name"], "unstable": r["verdict"]["unstable"],
                          "verdict_step": C.verdict_step(r["verdict"]),
                          "stiefel_attention": r["assignment"] in STIEFEL_ATTENTION,
                          "sat_step": C.first_crossing(st, g, C.GAP_SATURATED)})
    growth, ratio, u_h = [], [], []
    for r in by_a["hetero"]:
        s = curve(r, "mm/mlp/max_sigma")[1]
        growth.append(s[-1] / s[0] if len(s) > 1 else math.nan)
        gn = curve(r, "grad_norm/mlp")[1]
        ratio.append(min(gn[1:]) / gn[1] if len(gn) > 2 and gn[1] > 0 else math.nan)
        u_h.append(r["verdict"]["unstable"])
    art = {}
    for a in DGRAM_ATTENTION:
        f = unstable.get(a, [])
        d = [r["verdict"]["unstable"] for r in runs
             if r["assignment"] == a and r["variant"] == "defaultret"]
        art[a] = C.artefact(f, d) if (f and d) else {"status": "untestable"}
    scale = [r["verdict"]["unstable"] for r in runs if r["variant"] in ("msign", "wd")]
    dgram = [r for r in faithful if r["assignment"] in ("all_dgram", "hetero", "hetero_inv")]
    swaps = {r["name"]: sum(sum(curve(r, f"mm/{g}/swap_eligible")[1]) for g in ("attention", "mlp"))
             for r in dgram}
    exact = {}
    for r in dgram:
        last = [curve(r, f"mm/{g}/swaps_total")[1] for g in ("attention", "mlp")]
        exact[r["name"]] = sum(v[-1] for v in last if v) if any(last) else None
    return {
        "instability_pattern": C.instability_pattern(unstable, DGRAM_ATTENTION,
                                                     STIEFEL_ATTENTION),
        "ordering": C.ordering(final, PAPER_ORDER),
        "sigma_growth": C.sigma_growth(attn_sigma, DGRAM_ATTENTION, STIEFEL_ATTENTION),
        "colnorm": C.colnorm_claim(rel),
        "mechanism": C.mechanism(mech_runs),
        "mlp_tolerance": C.mlp_tolerance(growth, u_h, ratio),
        "artefact": art,
        "scale": C.stabilised(scale, unstable.get("hetero_inv", [])),
        "final": {a: (float(np.mean(v)), float(np.ptp(v) / 2), len(v)) for a, v in final.items()},
        "unstable": {a: f"{sum(v)}/{len(v)}" for a, v in unstable.items()},
        "swap_eligible_total": swaps,
        "swaps_exact_total": exact,
        "mech_runs": mech_runs,
    }


# ---- figures ----------------------------------------------------------------------------------

_LS = ("-", "--", ":", "-.")


def _legend(fig, axes) -> None:
    """One legend for every curve of every panel, outside the axes (so it hides none)."""
    seen: dict[str, Any] = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(lab, h)
    if seen:
        fig.legend(list(seen.values()), list(seen), fontsize=6, loc="center left",
                   bbox_to_anchor=(1.0, 0.5), ncol=1 + len(seen) // 30)


def _plot(runs, out_dir: pathlib.Path) -> dict[str, pathlib.Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = dict(zip(ASSIGNMENTS, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    variants = sorted({r["variant"] for r in runs})
    seeds = sorted({r["seed"] for r in runs})
    figs = {}

    def panel(ax, key_fn, title, ylog=False):
        for r in runs:
            st, v = key_fn(r)
            if not st:
                continue
            ls = _LS[seeds.index(r["seed"]) % len(_LS)]
            mk = {"faithful": None, "defaultret": "o", "msign": "s", "wd": "^"}[r["variant"]]
            ax.plot(st, v, ls=ls, marker=mk, ms=2, lw=1, color=colors[r["assignment"]],
                    label=f"{r['assignment']} {r['variant']} s{r['seed']}")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step")
        if ylog:
            ax.set_yscale("log")

    # Fig. 1: one panel per variant so no curve hides another's legend entry
    fig, axes = plt.subplots(1, len(variants), figsize=(5.5 * len(variants), 4), squeeze=False)
    for ax, var in zip(axes[0], variants):
        panel(ax, lambda r, v=var: curve(r, "eval/loss") if r["variant"] == v else ([], []),
              f"validation loss ({var})")
        ax.legend(fontsize=6, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.15))
    fig.tight_layout()
    figs["fig1"] = out_dir / "manifold_repro_fig1_val_loss.png"
    fig.savefig(figs["fig1"], dpi=110, bbox_inches="tight")
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, g in zip(axes, ("attention", "mlp")):
        panel(ax, lambda r, g=g: curve(r, f"mm/{g}/max_sigma"), f"max σ over {g} matrices",
              ylog=True)
    fig.tight_layout()
    _legend(fig, axes.ravel())
    figs["fig2"] = out_dir / "manifold_repro_fig2_sigma_max.png"
    fig.savefig(figs["fig2"], dpi=110, bbox_inches="tight")
    plt.close(fig)

    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    panel(axes[0, 0], max_gap_curve, f"max layer-head logit gap (saturated ≥ {C.GAP_SATURATED})")
    axes[0, 0].axhline(C.GAP_SATURATED, color="k", lw=0.6)
    panel(axes[0, 1], lambda r: curve(r, "attention/entropy"), "attention entropy (nats)")
    panel(axes[1, 0], lambda r: curve(r, "attention/jac_fro"), "mean ‖J_softmax‖_F", ylog=True)
    panel(axes[1, 1], lambda r: curve(r, "grad_norm/attention"), "‖∇ attention‖", ylog=True)
    fig.tight_layout()
    _legend(fig, axes.ravel())
    figs["mechanism"] = out_dir / "manifold_repro_mechanism.png"
    fig.savefig(figs["mechanism"], dpi=110, bbox_inches="tight")
    plt.close(fig)
    return figs


# ---- report ---------------------------------------------------------------------------------


def _report(c, runs, res, figs, wall, preset) -> str:
    fin, uns = res["final"], res["unstable"]
    table = ["| assignment | paper (50k steps) | ours: final val loss (mean ± half-range, n) | "
             "unstable (seeds) |", "|---|---|---|---|"]
    for a in ASSIGNMENTS:
        if a in fin:
            m, h, n = fin[a]
            table.append(f"| {a} | {PAPER_LOSS[a]} | {m:.4f} ± {h:.4f} (n={n}) | {uns[a]} |")
    claims = [
        ("§3.2: “every configuration that places DGram on attention becomes unstable … whereas "
         "configurations with Stiefel attention remain stable”", res["instability_pattern"]),
        ("Table 1: Hetero 3.3544 < All-Stiefel 3.3679 < Unconstrained 3.3855",
         res["ordering"]),
        ("§4.1: “DGram attention … explosive growth in [σ_max] … Stiefel attention keep[s] the "
         "attention spectrum bounded”", res["sigma_growth"]),
        ("App. C: under DGram σ_j equals the column norm ‖w_j‖", res["colnorm"]),
        ("§4.2 (future work): “singular value growth → logit inflation → softmax saturation” — "
         f"ours: max layer-head logit gap ≥ {C.GAP_SATURATED} before the verdict in every "
         "unstable run, never in a Stiefel-attention run", res["mechanism"]),
        ("§4.3: “DGram-induced singular value growth can be tolerated in MLP/FFN weights” — "
         f"ours: Hetero MLP σ_max grows ≥ {C.SIGMA_GROWTH}×, runs stable, MLP gradient norm ≥ "
         "0.1× its step-1 level", res["mlp_tolerance"]),
        *[(f"artefact? {a} with the default (manifold-fixing) retraction", v)
          for a, v in res["artefact"].items()],
        (f"§5 open question: DGram attention stabilised by a scale control "
         f"({control_label(c)})", res["scale"]),
    ]
    lines = [f"# Paper 004 reproduction ({preset})", "",
             f"Scaled-down GPT-2 ({c['n_layers']} layers × {c['d_model']}, {c['n_heads']} heads, "
             f"d_mlp {c['d_mlp']}, T = {c['seq_len']}, B = {c['batch_size']}, {c['steps']} steps, "
             f"warm-up {c['warmup']}, byte tokens of `{c['source']}`), {len(runs)} runs, "
             f"{wall:.0f} s, device {jax.devices()[0].device_kind}.", "",
             *table, "",
             "| claim (paper, section) | ours | verdict |", "|---|---|---|"]
    for claim, v in claims:
        detail = {k: val for k, val in v.items() if k != "status"}
        lines.append(f"| {claim} | `{json.dumps(detail, default=str)[:300]}` | "
                     f"**{v['status']}** |")
    lines += ["", "Column-rank swaps of the sorted DGram retraction per run — *exact*: columns "
              "whose descending-norm rank in X = W − ηA differs from their index, summed over "
              "every step and matrix (`ManifoldMuonState.swaps_total`); *upper bound*: adjacent "
              "column-norm pairs within 2η, summed over the probe steps only and matrices:", "",
              *(f"* {k}: exact {_fmt_count(res['swaps_exact_total'].get(k))}, upper bound "
                f"{v:.0f}" for k, v in res["swap_eligible_total"].items()), "",
              "Per run (verdict step = first triggered criterion; saturation step = first "
              f"probe with max logit gap ≥ {C.GAP_SATURATED}):", "",
              "| run | unstable | verdict step | saturation step | final val | final σ_max "
              "attn / MLP | dual-ascent violation attn / MLP (last, max over matrices) | wall s "
              "| step s |",
              "|---|---|---|---|---|---|---|---|---|"]
    mech = {m["name"]: m for m in res["mech_runs"]}

    def last(r, k):
        v = curve(r, k)[1]
        return f"{v[-1]:.3g}" if v else "–"

    for r in runs:
        m = mech[r["name"]]
        fv = r["final_eval_loss"]
        lines.append(
            f"| {r['name']} | {m['unstable']} | {m['verdict_step']} | {m['sat_step']} | "
            f"{fv if fv is None else round(fv, 4)} | {last(r, 'mm/attention/max_sigma')} / "
            f"{last(r, 'mm/mlp/max_sigma')} | {last(r, 'mm/attention/violation_max')} / "
            f"{last(r, 'mm/mlp/violation_max')} | {r['wall_s']} | "
            f"{r['step_s'] if r['step_s'] is None else round(r['step_s'], 4)} |")
    lines += ["", *(f"![{k}]({p.name})" for k, p in figs.items())]
    return "\n".join(lines) + "\n"


def control_label(c: dict[str, Any]) -> str:
    """The scale control of the ``scale`` part, in words (for the report)."""
    if c["scale_control"] == "wd":
        return (f"decoupled weight decay {WD_ATTENTION} before the retraction, "
                "attention only")
    return f"msign, every {c['msign_period']} steps on attention"


def _fmt_count(v: float | None) -> str:
    return "– (run saved before the count existed)" if v is None else f"{v:.0f}"


def run(preset: str, out_dir: pathlib.Path, overrides: dict[str, Any] | None = None) -> dict:
    """Run the chosen parts, then rebuild the report from every run saved in ``out_dir``."""
    c = _resolve(preset, overrides)
    out_dir = pathlib.Path(out_dir)
    runs_dir = out_dir / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in _csv(c["seeds"])]
    parts = _csv(c["parts"])
    chosen = _csv(c["assignments"])
    plan = []
    if "table1" in parts:
        plan += [(a, s, "faithful") for a in chosen for s in seeds]
    if "artefact" in parts:
        plan += [(a, s, "defaultret") for a in DGRAM_ATTENTION if a in chosen for s in seeds]
    if "scale" in parts:
        plan += [("hetero_inv", s, c["scale_control"]) for s in seeds]
    t0 = time.perf_counter()
    for a, s, v in plan:
        one_run(c, a, s, v, runs_dir)
    wall = time.perf_counter() - t0
    runs = load_runs(runs_dir)
    if not runs:
        raise SystemExit(f"manifold_repro: no saved runs in {runs_dir}; run some parts first "
                         "(e.g. --set parts=table1)")
    res = analyse(runs)
    figs = _plot(runs, out_dir)
    report = out_dir / "report.md"
    report.write_text(_report(c, runs, res, figs, wall, preset))
    summary = {k: v for k, v in res.items() if k != "mech_runs"}
    summary.update(preset=preset, config=c, wall_s=round(wall, 1), n_runs=len(runs))
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    # "passed" = the pipeline produced every criterion's verdict; the verdicts themselves
    # (supported or not) are the findings, reported whichever way they fall
    passed = all(len(r["curves"].get("eval/loss", [])) > 0 for r in runs) and bool(runs)
    return {"report": str(report), "passed": passed, "summary": summary,
            "figures": [str(p) for p in figs.values()]}


if __name__ == "__main__":  # pragma: no cover
    import sys

    p = sys.argv[1] if len(sys.argv) > 1 else "smoke"
    print(json.dumps(run(p, pathlib.Path("runs/manifold_repro") / p)["summary"], indent=1,
                     default=str))
