"""Paper 001 §4 Fig. 3 / App. K: WikiText-2, SGD + momentum vs Adam on a sparse and a dense task.

Setting (App. K): 64-token chunks of WikiText-2 tokenised with the BERT uncased WordPiece vocabulary
(distilbert-base-uncased's); (i) ``next_token`` (NTP): the first 63 tokens → the 64th, (ii)
``bag_of_words`` (BoW): the 64 tokens → "contains 'the'"; the CLS encoder (2 blocks, 4 heads,
d = 128, post-norm); SGD with momentum 0.9 (η ∈ {0.01, 0.05, 0.1, 0.5}) and Adam with coupled L2
1e-4 as ``torch.optim.Adam`` (η ∈ {1e-4, 5e-4, 1e-3, 5e-3}); batch 32, constant η, no clipping,
≤ 2000 steps, 3 seeds. ℓ₀ is the loss of the first mini-batch at init; ℓ_t/ℓ₀ (loss of step t's
mini-batch) and the [CLS] attention ratio (max/min of the [CLS] row per layer and head, averaged
over heads, examples and layers: ``monitors.attention.attention_metrics(rows=0)``) every
``every`` steps on the current mini-batch; mean ± 1 std over seeds of the best η (lowest mean
final loss).

How it runs: per (task, optimiser) ONE vmapped sweep of the trainer
(:func:`jaxspectra.train.sweep.sweep`, seeds × η as members on a leading axis) — the trainer's
step (``make_train_step`` with ``lm_loss``, which is the cross-entropy of the CLS logits
``[B, C]`` against integer labels ``[B]``) and its ``run_loop``; the [CLS] attention ratio is
measured by one extra host hook (:class:`CLSAttention`) on the stacked state.

Differences from the paper (also in the report): App. K trains on ``wikitext-2-raw-v1``'s train
split; the shared data has only the word-level valid and test files, so we train on valid+test
(``<unk>`` → ``[UNK]``; 7,479 chunks, 2000 steps ≈ 8.6 epochs). In those chunks "the" occurs in
97 % of them, so BoW's labels are nearly constant. The ``smoke`` preset needs no data directory:
it generates a token stream (vocabulary of 48, a sparse Markov chain, token 1 standing in for
"the" at a rate that puts it in about half of the 16-token chunks) and trains a tiny encoder for
a few steps — its verdicts say little about the paper.

Criteria (:mod:`experiments._wikitext_criteria`, thresholds fixed in ``PRESETS``):
NTP: best Adam's final ℓ/ℓ₀ ≤ ``ntp_max_fraction`` (0.8) × best SGD's; BoW: SGD − Adam in final
ℓ/ℓ₀ ≤ ``bow_band`` (0.1); R: log10 R(NTP) − log10 R(BoW) ≥ ``min_R_decades`` (1, i.e. R(NTP) ≥
10 · R(BoW)) for both optimisers.
"""

from __future__ import annotations

import json
import math
import pathlib
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from . import _wikitext_criteria as crit
from ._presets import apply_overrides

DESCRIPTION = ("paper 001 Fig. 3: WikiText-2 SGD+momentum vs Adam on next-token (sparse) vs "
               "bag-of-words (dense) with the CLS encoder")

TASKS = ("next_token", "bag_of_words")
OPTIMISERS = ("sgd", "adam")

_CRITERIA = dict(ntp_max_fraction=0.8, bow_band=0.1, min_R_decades=1.0)
PRESETS: dict[str, dict[str, Any]] = {
    "smoke": dict(_CRITERIA, data="generated", length=16, n_chunks=256, vocab=48, d_model=32,
                  n_layers=1, n_heads=2, steps=50, every=10, tail=10, seeds=3, batch_size=32,
                  sgd_lrs="0.01,0.05,0.1,0.5", adam_lrs="0.0001,0.0005,0.001,0.005"),
    "full": dict(_CRITERIA, data="wikitext2", length=64, n_chunks=0, vocab=30522, d_model=128,
                 n_layers=2, n_heads=4, steps=2000, every=50, tail=50, seeds=3, batch_size=32,
                 sgd_lrs="0.01,0.05,0.1,0.5", adam_lrs="0.0001,0.0005,0.001,0.005"),
}
THE_ID = 1  # the generated stream's stand-in for "the"

CLAIM_NTP = ('§4: "SGD stagnates in the sparse-attention task, consistent with our condition '
             'number analysis, while Adam continues to converge"')
CLAIM_BOW = '§4: "In the uniform-attention task, Adam no longer outperforms SGD"'
CLAIM_R = ('§4: "next-token prediction, which induces sparse attention distributions, and (ii) a '
           'bag-of-words classification task ... which yields more uniform attention"')


# ---- config ---------------------------------------------------------------------------------


def resolve(preset: str, overrides: dict[str, Any] | None) -> dict[str, Any]:
    """The preset with ``overrides`` (strings from ``--set``) converted to each key's type."""
    c = apply_overrides(PRESETS, preset, overrides)
    if c["data"] not in ("generated", "wikitext2"):
        raise ValueError(f"data must be 'generated' or 'wikitext2', got {c['data']!r}")
    if not 1 <= c["tail"] <= c["steps"]:
        raise ValueError(f"tail ({c['tail']}) must be in [1, steps={c['steps']}]")
    if c["every"] < 1 or c["seeds"] < 1:
        raise ValueError("every and seeds must be >= 1")
    for key in ("sgd_lrs", "adam_lrs"):
        lrs(c, key)
    return c


def lrs(c: dict[str, Any], key: str) -> list[float]:
    try:
        out = [float(x) for x in str(c[key]).split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"{key} must be comma-separated numbers, e.g. 0.01,0.1; got "
                         f"{c[key]!r}") from None
    if not out or any(not v > 0 for v in out):
        raise ValueError(f"{key} needs positive learning rates, got {c[key]!r}")
    return out


# ---- data -----------------------------------------------------------------------------------


def generated_stream(n_tokens: int, vocab: int, length: int, seed: int = 0) -> np.ndarray:
    """A token stream for the smoke preset: a sparse Markov chain (each token has one favoured
    successor, taken with probability 0.7, else a Zipf draw) over ids ``2..vocab-1``; token
    :data:`THE_ID` replaces a token at rate q = 1 − 2^(−1/length) (≈ half the chunks contain it).
    Next-token is predictable from the last token alone (sparse attention); BoW from any position.
    """
    if vocab < 8:
        raise ValueError(f"vocab must be >= 8, got {vocab}")
    rng = np.random.default_rng(seed)
    ids = np.arange(2, vocab)
    succ = rng.permutation(ids)
    zipf = 1.0 / np.arange(1, ids.size + 1)
    zipf /= zipf.sum()
    draws = rng.choice(ids, size=n_tokens, p=zipf)
    follow = rng.random(n_tokens) < 0.7
    out = np.empty(n_tokens, np.int32)
    out[0] = draws[0]
    for i in range(1, n_tokens):
        out[i] = succ[out[i - 1] - 2] if follow[i] else draws[i]
    q = 1.0 - 2.0 ** (-1.0 / length)
    the = rng.random(n_tokens) < q
    return np.where(the, THE_ID, out).astype(np.int32)


class Batches:
    """``batch(seed, step, batch_size, seq_len)`` (the trainer's dataset protocol) over a
    :class:`~jaxspectra.data.datasets.ClassificationDataset` (whose batches take no seq_len)."""

    def __init__(self, ds: Any):
        self.ds = ds
        self.num_classes = ds.num_classes

    def batch(self, seed: int, step: int, batch_size: int, seq_len: int | None = None):
        x, y = self.ds.batch(seed, step, batch_size)
        if seq_len is not None and x.shape[1] != seq_len:
            raise ValueError(f"examples have {x.shape[1]} tokens, the config says {seq_len}")
        return x, y


def dataset(c: dict[str, Any], task: str) -> Batches:
    """The task's examples: generated (smoke) or WikiText-2 valid+test via $JAXSPECTRA_DATA_DIR."""
    from jaxspectra.data.datasets import ClassificationDataset
    from jaxspectra.data.tasks import (
        chunk_tokens,
        contains_token_examples,
        next_token_examples,
        wikitext2_cls_dataset,
    )

    if c["data"] == "wikitext2":
        return Batches(wikitext2_cls_dataset(task, split="valid+test", length=c["length"]))
    chunks = chunk_tokens(generated_stream(c["n_chunks"] * c["length"], c["vocab"], c["length"]),
                          c["length"])
    if task == "next_token":
        x, y = next_token_examples(chunks)
        return Batches(ClassificationDataset(x, y, num_classes=c["vocab"]))
    x, y = contains_token_examples(chunks, THE_ID)
    return Batches(ClassificationDataset(x, y, num_classes=2))


# ---- one sweep ------------------------------------------------------------------------------


def model(c: dict[str, Any], n_outputs: int) -> tuple[Any, Any]:
    from jaxspectra.models import get_model

    return get_model("cls-encoder", vocab_size=c["vocab"], max_seq_len=c["length"],
                     n_outputs=n_outputs, d_model=c["d_model"], n_layers=c["n_layers"],
                     n_heads=c["n_heads"], d_mlp=4 * c["d_model"])


def sweep_config(c: dict[str, Any], task: str, opt: str, run_dir: pathlib.Path) -> Any:
    """The trainer config of one (task, optimiser) sweep: seeds × η members, constant η, no
    clipping, no eval (the paper's curves are training losses)."""
    from jaxspectra.train.config import from_dict

    seq_len = c["length"] - 1 if task == "next_token" else c["length"]
    grid = lrs(c, f"{opt}_lrs")
    optim = ({"name": "sgd", "options": {"momentum": 0.9}} if opt == "sgd" else
             {"name": "adam_l2", "weight_decay": 1e-4})
    return from_dict({
        "run": {"dir": str(run_dir), "seed": 0, "num_devices": 1},
        "model": {"name": "cls-encoder"},
        "data": {"batch_size": c["batch_size"], "seq_len": seq_len, "eval_batches": 0},
        "optim": {**optim, "learning_rate": grid[0], "schedule": "constant", "clip_norm": 0.0,
                  "lr_multipliers": False},
        "train": {"steps": c["steps"], "log_every": c["every"], "progress": False},
        "checkpoint": {"every": 0, "keep": 0},
        "sweep": {"seeds": list(range(c["seeds"])), "axes": {"optim.learning_rate": grid}},
    })


def _cls_log10_r(module: Any) -> Any:
    from jaxspectra.monitors.attention import attention_metrics, sown_attention_logits

    def one(params, tokens):
        logits = sown_attention_logits(module, params, tokens)
        return attention_metrics(logits, causal=False, rows=0)["attention/log10_R"]

    return jax.jit(jax.vmap(one))


def _make_hook(every: int, module: Any, data: Batches, seeds: list[int], batch_size: int,
               seq_len: int):
    from jaxspectra.train.hooks import Hook

    class CLSAttention(Hook):
        """Host hook: log10 of the [CLS] attention ratio of every member on the mini-batch of
        the step about to run (App. K: "on the current mini-batch"), at step 0 and every
        ``every`` updates; values in ``self.curve = [(step, [members])]``."""

        at_end = True

        def __init__(self):
            self.every, self.curve, self.fn = every, [], _cls_log10_r(module)

        def _measure(self, info) -> None:
            t = min(info.step, info.end - 1)  # at the end: the last step's batch
            x = np.stack([data.batch(s, t, batch_size, seq_len)[0] for s in seeds])
            vals = np.asarray(self.fn(info.state.params, jnp.asarray(x)), np.float64)
            if not self.curve or self.curve[-1][0] != info.step:
                self.curve.append((int(info.step), vals.tolist()))

        def start(self, info) -> None:
            self._measure(info)

        def __call__(self, info) -> None:
            self._measure(info)

    return CLSAttention()


def run_sweep(c: dict[str, Any], task: str, opt: str, data: Batches,
              run_dir: pathlib.Path) -> dict[str, Any]:
    """One vmapped sweep (seeds × η); returns the per-member curves and finals."""
    from jaxspectra.train.sweep import members_of, sweep

    n_out = data.num_classes
    cfg = sweep_config(c, task, opt, run_dir)
    mod = model(c, n_out)
    members = members_of(cfg)
    seeds = [m["seed"] for m in members]
    hook = _make_hook(c["every"], mod[0], data, seeds, c["batch_size"], cfg.data.seq_len)
    t0 = time.perf_counter()
    res = sweep(cfg, model=mod, dataset=data, hooks=[hook])
    wall = time.perf_counter() - t0
    losses = np.asarray(res.losses, np.float64)  # [steps, members]; row t = ℓ on batch t
    final = crit.final_loss(losses, c["tail"])
    lr = [m["optim.learning_rate"] for m in members]
    return {"task": task, "opt": opt, "members": members, "seeds": seeds, "lrs": lr,
            "losses": losses, "final": final.tolist(), "l0": losses[0].tolist(),
            "R_steps": [s for s, _ in hook.curve],
            "log10_R": np.asarray([v for _, v in hook.curve]), "wall_s": wall}


def summarise(r: dict[str, Any], every: int) -> dict[str, Any]:
    """Best η (lowest mean final loss) and its seeds' ℓ_t/ℓ₀ and log10 R every ``every`` steps."""
    best, means = crit.best_lr(r["final"], r["lrs"])
    sel = np.asarray(r["lrs"]) == best
    losses = r["losses"][:, sel]
    ratio = losses / losses[0]
    steps = np.arange(0, losses.shape[0], every)
    fin = np.asarray(r["final"])[sel] / losses[0]
    R = r["log10_R"][:, sel]
    return {"best_lr": best, "mean_final_by_lr": means, "steps": steps.tolist(),
            "ratio": ratio[steps], "final_ratio": float(np.mean(fin)),
            "final_ratio_std": float(np.std(fin)), "R_steps": r["R_steps"], "log10_R": R,
            "final_log10_R": float(np.mean(R[-1])), "final_log10_R_std": float(np.std(R[-1]))}


# ---- verdicts, figure, report ---------------------------------------------------------------


def checks(c: dict[str, Any], summ: dict[tuple[str, str], dict[str, Any]]) -> list[dict]:
    """The three criteria on the best-η seed means."""
    out = []
    s, a = summ[("next_token", "sgd")], summ[("next_token", "adam")]
    ok, d = crit.sgd_stagnates_adam_converges(s["final_ratio"], a["final_ratio"],
                                              c["ntp_max_fraction"])
    out.append({"claim": CLAIM_NTP, "criterion": f"NTP: best Adam's final ℓ/ℓ₀ ≤ "
                f"{c['ntp_max_fraction']:g} × best SGD's", "ok": ok,
                "ours": f"SGD {d['sgd']:.3f}, Adam {d['adam']:.3f} (Adam/SGD = "
                        f"{d['fraction']:.2f})"})
    s, a = summ[("bag_of_words", "sgd")], summ[("bag_of_words", "adam")]
    ok, d = crit.no_adam_advantage(s["final_ratio"], a["final_ratio"], c["bow_band"])
    out.append({"claim": CLAIM_BOW, "criterion": f"BoW: SGD − Adam in final ℓ/ℓ₀ ≤ "
                f"{c['bow_band']:g}", "ok": ok,
                "ours": f"SGD {d['sgd']:.3f}, Adam {d['adam']:.3f} (SGD − Adam = "
                        f"{d['sgd_minus_adam']:+.3f})"})
    r = {t: {o: summ[(t, o)]["final_log10_R"] for o in OPTIMISERS} for t in TASKS}
    ok, d = crit.sparser_on_ntp(r, c["min_R_decades"])
    out.append({"claim": CLAIM_R, "criterion": f"final log10 R(NTP) − log10 R(BoW) ≥ "
                f"{c['min_R_decades']:g} for both optimisers", "ok": ok,
                "ours": ", ".join(f"{o}: {r['next_token'][o]:.2f} − {r['bag_of_words'][o]:.2f} = "
                                  f"{g:+.2f}" for o, g in d["gap_decades"].items())})
    return out


def plot(out: pathlib.Path, summ: dict[tuple[str, str], dict[str, Any]], title: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), constrained_layout=True)
    colours = {"sgd": "tab:blue", "adam": "tab:orange"}
    for row, task in enumerate(TASKS):
        for opt in OPTIMISERS:
            s = summ[(task, opt)]
            lab = f"{'SGD+mom 0.9' if opt == 'sgd' else 'Adam (L2 1e-4)'}, η={s['best_lr']:g}"
            for ax, x, y in ((axes[row, 0], s["steps"], s["ratio"]),
                             (axes[row, 1], s["R_steps"], s["log10_R"])):
                y = np.asarray(y, np.float64)
                m, sd = np.nanmean(y, axis=1), np.nanstd(y, axis=1)
                ax.plot(x, m, color=colours[opt], label=f"{lab} (mean of {y.shape[1]} seeds)")
                ax.fill_between(x, m - sd, m + sd, color=colours[opt], alpha=0.25)
        name = "next-token (63 → 64th)" if task == "next_token" else "bag-of-words ('the')"
        axes[row, 0].set(title=f"{name}: ℓ_t/ℓ₀ (± 1 std)", xlabel="step", ylabel="ℓ_t / ℓ₀")
        axes[row, 1].set(title=f"{name}: [CLS] attention ratio (± 1 std)", xlabel="step",
                         ylabel="log10 R (mean over heads, examples, layers)")
        for ax in axes[row]:
            ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=11)
    path = out / "softmax_wikitext_fig3.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def report(out: pathlib.Path, preset: str, c: dict[str, Any], summ, chks, fig: str,
           walls: dict[str, float]) -> pathlib.Path:
    data = ("WikiText-2 valid+test (the shared data has no train split; App. K trains on the train "
            "split), BERT uncased WordPiece" if c["data"] == "wikitext2" else
            f"a GENERATED token stream (vocab {c['vocab']}, sparse Markov chain, token "
            f"{THE_ID} as 'the'), chunks of {c['length']}: no WikiText-2, a tiny model and "
            f"{c['steps']} steps — the verdicts at this scale say little about the paper")
    lines = [f"# Paper 001 Fig. 3 (App. K) — WikiText-2 SGD vs Adam, preset `{preset}`", "",
             f"Data: {data}.", "",
             f"Model: CLS encoder, d={c['d_model']}, {c['n_layers']} layers, {c['n_heads']} heads;"
             f" batch {c['batch_size']}, {c['steps']} steps, {c['seeds']} seeds; final loss = mean"
             f" of the last {c['tail']} steps' mini-batch losses; best η by mean final loss.", "",
             "| claim (paper) | criterion (fixed before the run) | ours | verdict |",
             "|---|---|---|---|"]
    for ch in chks:
        lines.append(f"| {ch['claim']} | {ch['criterion']} | {ch['ours']} | "
                     f"{'PASS' if ch['ok'] else 'FAIL'} |")
    lines += ["", "| task | optimiser | best η | mean final loss per η | final ℓ/ℓ₀ | final "
              "log10 R |", "|---|---|---|---|---|---|"]
    for (task, opt), s in summ.items():
        per = ", ".join(f"{k:g}: {v:.3g}" for k, v in s["mean_final_by_lr"].items())
        lines.append(f"| {task} | {opt} | {s['best_lr']:g} | {per} | {s['final_ratio']:.3f} ± "
                     f"{s['final_ratio_std']:.3f} | {s['final_log10_R']:.2f} ± "
                     f"{s['final_log10_R_std']:.2f} |")
    lines += ["", f"![Fig. 3]({fig})", "",
              "Wall time per sweep (s): " + ", ".join(f"{k} {v:.1f}" for k, v in walls.items()),
              ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


def run(preset: str, out_dir: pathlib.Path, overrides: dict[str, Any] | None = None) -> dict:
    """Four vmapped sweeps (task × optimiser), the criteria, the figure and ``report.md``."""
    c = resolve(preset, overrides)
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    summ, walls, curves = {}, {}, {}
    for task in TASKS:
        data = dataset(c, task)
        for opt in OPTIMISERS:
            r = run_sweep(c, task, opt, data, out / "runs" / f"{task}_{opt}")
            summ[(task, opt)] = summarise(r, c["every"])
            walls[f"{task}/{opt}"] = r["wall_s"]
            curves[f"{task}/{opt}"] = {
                "lrs": r["lrs"], "seeds": r["seeds"], "final": r["final"],
                "loss_every": r["losses"][::c["every"]].tolist(), "R_steps": r["R_steps"],
                "log10_R": r["log10_R"].tolist()}
    chks = checks(c, summ)
    fig = plot(out, summ, f"Paper 001 Fig. 3 — WikiText-2 tasks, SGD vs Adam (preset {preset}, "
               f"{'generated data' if c['data'] == 'generated' else 'valid+test'})")
    (out / "curves.json").write_text(json.dumps(
        {"config": c, "curves": curves}, allow_nan=True, default=float))
    wall = time.perf_counter() - t0
    walls["total"] = wall
    path = report(out, preset, c, summ, chks, fig, walls)
    passed = all(ch["ok"] for ch in chks)
    return {"report": path, "passed": passed, "checks": chks, "wall_s": wall, "config": c,
            "summary": {f"{t}/{o}": {k: v for k, v in s.items()
                                     if k in ("best_lr", "final_ratio", "final_log10_R")}
                        for (t, o), s in summ.items()},
            "finite": all(math.isfinite(s["final_ratio"]) for s in summ.values())}
