"""Post-hoc Stability-of-Singular-Distribution (SoSD) analysis (paper 002 §3, Figs. 1–3).

Input: the singular values saved by the spectral monitors (``arrays/step_<t>.npz`` keys
``…__sv`` and ``…/delta_sigma`` in ``metrics.jsonl``; :func:`load_run`) or checkpoints' weights,
and the loss curve. Output (:func:`analyse`):

* cos⟨W_t, W_T⟩ (flattened weights, when given) and cos⟨Σ_t, Σ_T⟩ (singular-value vectors) per
  matrix (Fig. 2), with the baseline cos⟨Σ_0, Σ_T⟩ always reported beside them: a random init
  against an unrelated decaying spectrum already gives 0.6–0.85, so cos⟨Σ_t, Σ_T⟩ near 1 means
  little on its own;
* the SD variation ΔΣ_t = ‖Σ̂_{t+1} − Σ̂_t‖_F (one step; the monitors record it at each log point;
  the rotating monitor records each matrix on its own steps, and means over matrices are then
  taken per rotation cycle, :func:`aligned_mean`);
* the SoSD onset (:func:`sosd_onset`): the first log step t after which ΔΣ stays under
  floor = ``floor_mult`` × median(ΔΣ over the last ``tail_frac`` of training) for a window of
  ``window_frac`` × (total steps) and at least 3 log points. Defaults: ``floor_mult = 3``,
  ``tail_frac = 0.2``, ``window_frac = 0.05``; :func:`onset_sensitivity` scans both knobs (plot:
  :func:`plot_onset_sensitivity`);
* the loss's fast→slow transition (:func:`loss_transition`): the breakpoint τ of the best
  continuous two-segment linear fit L(t) ≈ c + b·t + d·max(t − τ, 0) (least squares over all
  logged τ), and the lag onset − τ.

Plots in the paper's layout: :func:`plot_cosine` (Fig. 2: solid W, dashed Σ, a colour per
projection, red dashed onset, plus the dotted cos⟨Σ_0, Σ_T⟩ baselines) and
:func:`plot_sd_variation` (Fig. 3: loss on top, ΔΣ per projection below on a log axis, red
dashed onset). Per-projection curves average the matrices of that module over blocks.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

DEFAULT_FLOOR_MULT = 3.0
DEFAULT_TAIL_FRAC = 0.2
DEFAULT_WINDOW_FRAC = 0.05
DEFAULT_MIN_POINTS = 3

Series = Mapping[str, Mapping[int, np.ndarray]]  # name -> step -> array


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """cos⟨a, b⟩ of the flattened arrays (float64); NaN when either is zero."""
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    den = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / den) if den > 0 else float("nan")


def cos_to_final(series: Mapping[int, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Steps and cos⟨X_t, X_T⟩ (T = the last step) of one matrix's series."""
    steps = np.array(sorted(series))
    last = series[int(steps[-1])]
    return steps, np.array([cosine(series[int(s)], last) for s in steps])


def sosd_onset(steps: Sequence[int], delta: Sequence[float], total_steps: int | None = None,
               floor_mult: float = DEFAULT_FLOOR_MULT, tail_frac: float = DEFAULT_TAIL_FRAC,
               window_frac: float = DEFAULT_WINDOW_FRAC,
               min_points: int = DEFAULT_MIN_POINTS) -> tuple[int | None, float]:
    """``(onset, floor)``: the first logged step t whose ΔΣ and that of every logged step in
    [t, t + window] are below ``floor`` (the window must end by the last logged step and hold
    at least ``min_points`` log points — a window shorter than the log spacing would otherwise
    accept any single low point); None when it never happens. ``total_steps`` (default: the last logged step) scales the tail and the
    window."""
    s = np.asarray(steps, np.float64)
    d = np.asarray(delta, np.float64)
    if s.shape != d.shape or s.ndim != 1 or len(s) < 2:
        raise ValueError(f"steps and delta must be 1-D of equal length ≥ 2, got {s.shape} "
                         f"and {d.shape}")
    order = np.argsort(s)
    s, d = s[order], d[order]
    total = float(total_steps if total_steps is not None else s[-1])
    tail = d[s >= s[-1] - tail_frac * total]
    floor = floor_mult * float(np.median(tail))
    window = window_frac * total
    below = d < floor
    for i in range(len(s)):
        if not below[i]:
            continue
        if s[i] + window > s[-1] or i + min_points > len(s):  # observed in full
            break
        inside = (s >= s[i]) & (s <= s[i] + window)
        inside[i:i + min_points] = True  # at least min_points log points
        if np.all(below[inside]):
            return int(s[i]), floor
    return None, floor


def onset_sensitivity(steps: Sequence[int], delta: Sequence[float],
                      floor_mults: Sequence[float] = (1.5, 2, 3, 5, 8),
                      window_fracs: Sequence[float] = (0.01, 0.02, 0.05, 0.1, 0.2),
                      total_steps: int | None = None,
                      tail_frac: float = DEFAULT_TAIL_FRAC) -> np.ndarray:
    """Onset (NaN for none) on the grid ``floor_mults × window_fracs``."""
    out = np.full((len(floor_mults), len(window_fracs)), np.nan)
    for i, m in enumerate(floor_mults):
        for j, w in enumerate(window_fracs):
            on, _ = sosd_onset(steps, delta, total_steps, m, tail_frac, w)
            out[i, j] = np.nan if on is None else on
    return out


def loss_transition(steps: Sequence[int], loss: Sequence[float]) -> int:
    """Breakpoint τ of the best continuous two-segment linear fit of the loss (module doc)."""
    t = np.asarray(steps, np.float64)
    y = np.asarray(loss, np.float64)
    if t.shape != y.shape or len(t) < 4:
        raise ValueError("loss_transition needs ≥ 4 (step, loss) points of equal length")
    ok = np.isfinite(y)
    t, y = t[ok], y[ok]
    best, best_tau = np.inf, int(t[0])
    for tau in t[1:-1]:
        x = np.stack([np.ones_like(t), t, np.maximum(t - tau, 0.0)], axis=1)
        coef, *_ = np.linalg.lstsq(x, y, rcond=None)
        r = float(np.sum((x @ coef - y) ** 2))
        if r < best:
            best, best_tau = r, int(tau)
    return best_tau


def aligned_mean(curves: Mapping[str, tuple[np.ndarray, np.ndarray]]
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The mean over matrices of per-matrix curves ``name -> (steps, values)``.

    At the steps every curve shares when there are at least two (a monitor that measures all
    matrices together); otherwise — the rotating monitor
    (:mod:`jaxspectra.monitors.rotating`) measures each matrix on its own steps, every P =
    ``every · S`` updates — per rotation cycle: P is the largest median spacing of the curves,
    cycle c covers steps [c·P, (c+1)·P) and is labelled c·P, and only cycles in which every
    matrix was measured are kept (each point still averages all matrices, one value each).
    """
    names = list(curves)
    if not names:
        return np.array([], np.int64), np.array([], np.float64)
    common = sorted(set.intersection(*(set(np.asarray(curves[n][0]).tolist()) for n in names)))
    if len(common) >= 2 or len(names) == 1:
        at = [dict(zip(np.asarray(curves[n][0]).tolist(), curves[n][1])) for n in names]
        return (np.array(common, np.int64),
                np.array([np.mean([a[s] for a in at]) for s in common], np.float64))
    spacing = [np.median(np.diff(np.asarray(curves[n][0]))) for n in names
               if len(curves[n][0]) >= 2]
    if not spacing:
        return np.array([], np.int64), np.array([], np.float64)
    period = float(max(spacing))
    cycles: dict[int, dict[str, float]] = {}
    for n in names:
        for st, v in zip(np.asarray(curves[n][0]), curves[n][1]):
            cycles.setdefault(int(st // period), {}).setdefault(n, float(v))
    full = sorted(c for c, got in cycles.items() if len(got) == len(names))
    return (np.array([int(c * period) for c in full], np.int64),
            np.array([np.mean(list(cycles[c].values())) for c in full], np.float64))


@dataclass
class SoSDResult:
    """What :func:`analyse` returns (curves keyed by matrix name)."""

    cos_sigma: dict[str, tuple[np.ndarray, np.ndarray]]
    cos_w: dict[str, tuple[np.ndarray, np.ndarray]]
    baseline: dict[str, float]  # cos⟨Σ_0, Σ_T⟩
    delta: dict[str, tuple[np.ndarray, np.ndarray]]
    onset: dict[str, int | None]
    floor: dict[str, float]
    onset_all: int | None  # onset of the mean ΔΣ over matrices
    loss: tuple[np.ndarray, np.ndarray] | None
    transition: int | None
    lag: int | None  # onset_all − transition
    params: dict[str, float] = field(default_factory=dict)


def analyse(spectra: Series, delta: Mapping[str, Mapping[int, float]] | None = None,
            weights: Series | None = None, loss: tuple[Sequence[int], Sequence[float]] | None
            = None, total_steps: int | None = None, floor_mult: float = DEFAULT_FLOOR_MULT,
            tail_frac: float = DEFAULT_TAIL_FRAC,
            window_frac: float = DEFAULT_WINDOW_FRAC) -> SoSDResult:
    """The SoSD analysis (module docstring). ``spectra[name][step]`` are singular values;
    ``delta[name][step]`` the one-step ΔΣ recorded by a monitor (when missing, no ΔΣ, no onset —
    a difference of log points further apart than one step is *not* ΔΣ)."""
    cos_sigma, baseline, cos_w, dl, onset, floors = {}, {}, {}, {}, {}, {}
    for name, ser in spectra.items():
        st, c = cos_to_final(ser)
        cos_sigma[name] = (st, c)
        baseline[name] = float(c[0])
    for name, ser in (weights or {}).items():
        cos_w[name] = cos_to_final(ser)
    kw = dict(total_steps=total_steps, floor_mult=floor_mult, tail_frac=tail_frac,
              window_frac=window_frac)
    for name, ser in (delta or {}).items():
        st = np.array(sorted(ser))
        d = np.array([ser[int(s)] for s in st], np.float64)
        dl[name] = (st, d)
        if len(st) >= 2:
            onset[name], floors[name] = sosd_onset(st, d, **kw)
    onset_all = None
    if dl:
        common, mean = aligned_mean(dl)
        if len(common) >= 2:
            onset_all, _ = sosd_onset(common, mean, **kw)
    transition = lag = None
    loss_arr = None
    if loss is not None:
        loss_arr = (np.asarray(loss[0]), np.asarray(loss[1], np.float64))
        transition = loss_transition(*loss_arr)
        if onset_all is not None:
            lag = onset_all - transition
    return SoSDResult(cos_sigma, cos_w, baseline, dl, onset, floors, onset_all, loss_arr,
                      transition, lag, {"floor_mult": floor_mult, "tail_frac": tail_frac,
                                        "window_frac": window_frac})


def load_run(run_dir: str | Path) -> tuple[dict, dict, tuple[list[int], list[float]]]:
    """``(spectra, delta, loss)`` from a run directory written by the trainer's metrics writer
    (``arrays/step_<t>.npz`` keys ``spectral__…__sv``; ``metrics.jsonl`` records with
    ``…/delta_sigma`` and ``loss``)."""
    run = Path(run_dir)
    if not (run / "metrics.jsonl").exists():
        raise FileNotFoundError(f"{run / 'metrics.jsonl'} not found: pass a run directory")
    spectra: dict[str, dict[int, np.ndarray]] = {}
    for f in sorted((run / "arrays").glob("step_*.npz")):
        step = int(re.fullmatch(r"step_(\d+)\.npz", f.name).group(1))
        with np.load(f) as z:
            for k in z.files:
                if k.endswith("__sv"):
                    spectra.setdefault(k[:-4].replace("__", "/"), {})[step] = z[k]
    delta: dict[str, dict[int, float]] = {}
    steps, losses = [], []
    with open(run / "metrics.jsonl") as fh:
        for line in fh:
            if not line.strip():
                continue
            r = json.loads(line)
            for k, v in r.items():
                if k.endswith("/delta_sigma"):
                    delta.setdefault(k[: -len("/delta_sigma")], {})[r["step"]] = float(v)
            if "loss" in r:
                steps.append(r["step"])
                losses.append(float(r["loss"]))
    return spectra, delta, (steps, losses)


def _projection(name: str) -> str:
    """The module name (``q``, ``fc``, ``embed``…); stacked experts keep ``<module>/e<i>``."""
    parts = name.split("/")
    while len(parts) > 1 and re.fullmatch(r"e\d+", parts[-1]):
        parts = parts[:-1]
    return parts[-1] + name[len("/".join(parts)):]


def _by_projection(curves: Mapping[str, tuple[np.ndarray, np.ndarray]]):
    groups: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for name, c in curves.items():
        groups.setdefault(_projection(name), []).append(c)
    return {proj: aligned_mean(dict(enumerate(cs))) for proj, cs in groups.items()}


def plot_cosine(res: SoSDResult, path: str | Path, title: str = "") -> None:
    """Paper 002 Fig. 2 layout: cos⟨W_t, W_T⟩ solid, cos⟨Σ_t, Σ_T⟩ dashed, cos⟨Σ_0, Σ_T⟩
    baseline dotted, one colour per projection, red dashed onset."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    cs, cw = _by_projection(res.cos_sigma), _by_projection(res.cos_w)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, proj in enumerate(sorted(set(cs) | set(cw))):
        col = colours[i % len(colours)]
        if proj in cw:
            ax.plot(*cw[proj], "-", color=col, label=f"{proj}: W")
        if proj in cs:
            ax.plot(*cs[proj], "--", color=col, label=f"{proj}: Σ")
            ax.axhline(cs[proj][1][0], color=col, ls=":", lw=0.8)
    if res.onset_all is not None:
        ax.axvline(res.onset_all, color="red", ls="--", lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("cosine similarity to the final state")
    ax.set_title(title or "cos⟨W_t, W_T⟩ (solid), cos⟨Σ_t, Σ_T⟩ (dashed), cos⟨Σ_0, Σ_T⟩ (dotted)",
                 fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_sd_variation(res: SoSDResult, path: str | Path, title: str = "") -> None:
    """Paper 002 Fig. 3 layout: loss (top), ΔΣ per projection on a log axis (bottom), the
    onset (red dashed) and the loss transition (grey dotted)."""
    import matplotlib.pyplot as plt

    fig, (top, bot) = plt.subplots(2, 1, figsize=(6, 5), sharex=True)
    if res.loss is not None:
        top.plot(*res.loss, color="k", lw=1)
    top.set_ylabel("loss")
    for proj, (s, d) in sorted(_by_projection(res.delta).items()):
        bot.plot(s, d, label=proj, lw=1)
    bot.set_yscale("log")
    bot.set_ylabel("ΔΣ_t = ‖Σ̂_{t+1} − Σ̂_t‖_F")
    bot.set_xlabel("step")
    for ax in (top, bot):
        if res.onset_all is not None:
            ax.axvline(res.onset_all, color="red", ls="--", lw=1)
        if res.transition is not None:
            ax.axvline(res.transition, color="grey", ls=":", lw=1)
    if res.delta:
        bot.legend(fontsize=7, ncol=3)
    top.set_title(title or f"onset {res.onset_all}, loss transition {res.transition}, "
                  f"lag {res.lag}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_onset_sensitivity(steps: Sequence[int], delta: Sequence[float], path: str | Path,
                           floor_mults: Sequence[float] = (1.5, 2, 3, 5, 8),
                           window_fracs: Sequence[float] = (0.01, 0.02, 0.05, 0.1, 0.2),
                           total_steps: int | None = None) -> np.ndarray:
    """Onset as a function of the floor multiplier (x) for each window fraction (one line
    each); returns the grid of :func:`onset_sensitivity`."""
    import matplotlib.pyplot as plt

    grid = onset_sensitivity(steps, delta, floor_mults, window_fracs, total_steps)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for j, w in enumerate(window_fracs):
        ax.plot(floor_mults, grid[:, j], "o-", label=f"window {w:.0%}")
    ax.axvline(DEFAULT_FLOOR_MULT, color="grey", ls=":", lw=1)
    ax.set_xlabel("floor = mult × median ΔΣ of the last 20%")
    ax.set_ylabel("SoSD onset (step)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return grid
