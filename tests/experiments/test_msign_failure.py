"""experiments/msign_failure.py and its criteria (_msign_criteria): the failure detector with
positive and negative controls (a spike, no spike, a NaN), the 3/3 rule, the precursor criteria
on series built to violate them, the P rescaling, the BPE data path, the stable-rank monitor
against NumPy float64 SVDs, and the smoke preset end to end (slow)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from experiments import _msign_criteria as C
from experiments import msign_failure as E


def _noisy(n: int = 400, seed: int = 0, level: float = 1.0) -> np.ndarray:
    """A decreasing grad-norm series with ±30 % multiplicative noise: never 10× its median."""
    rng = np.random.default_rng(seed)
    return level * np.linspace(2.0, 0.5, n) * np.exp(rng.uniform(-0.3, 0.3, n))


# ---- failure detector ----------------------------------------------------------------------------


def test_no_spike_never_fails():
    g = _noisy()
    assert C.first_failure(g, np.ones_like(g)) is None


def test_spike_is_found_at_its_step():
    g = _noisy()
    g[300] = 11 * np.median(g[250:300])
    assert C.first_failure(g, np.ones_like(g)) == 300


def test_spike_below_the_factor_is_not_a_failure():
    g = _noisy()
    g[300] = 9 * np.median(g[250:300])
    assert C.first_failure(g) is None


def test_nan_loss_or_inf_grad_fails():
    g = _noisy()
    loss = np.ones_like(g)
    loss[123] = np.nan
    assert C.first_failure(g, loss) == 123
    g2 = _noisy()
    g2[7] = np.inf  # before min_history: a non-finite value still counts
    assert C.first_failure(g2) == 7


def test_early_spike_before_history_is_ignored():
    g = _noisy()
    g[5] = 100.0  # only 5 previous steps (< FAIL_MIN_HISTORY)
    assert C.first_failure(g) is None


def test_detector_rejects_bad_input():
    with pytest.raises(ValueError, match="lengths differ"):
        C.first_failure([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="min_history"):
        C.first_failure([1.0], window=5, min_history=10)
    with pytest.raises(ValueError, match=r"\[steps, members\]"):
        C.failures(np.ones(3), np.ones(3))


def _reference_first_failure(g, loss, factor=C.FAIL_FACTOR, window=C.FAIL_WINDOW,
                             min_history=C.FAIL_MIN_HISTORY):
    """The module doc's rule, step by step (the vectorised detector must agree)."""
    for t in range(len(g)):
        if not (np.isfinite(g[t]) and np.isfinite(loss[t])):
            return t
        hist = g[max(0, t - window):t]
        if len(hist) >= min_history and g[t] > factor * np.median(hist):
            return t
    return None


def test_vectorised_detector_equals_the_stepwise_rule():
    rng = np.random.default_rng(5)
    for trial in range(200):
        n = int(rng.integers(1, 300))
        g = np.exp(rng.normal(0, 0.8, n))
        loss = np.ones(n)
        if trial % 3 == 0:
            g[rng.integers(n)] *= 30
        if trial % 5 == 0:
            loss[rng.integers(n)] = np.nan
        if trial % 7 == 0:
            g[rng.integers(n)] = np.inf
        assert C.first_failure(g, loss) == _reference_first_failure(g, loss), trial


def test_failures_per_member():
    g = np.stack([_noisy(seed=1), _noisy(seed=2)], axis=1)
    g[200, 1] = 50.0
    assert C.failures(g, np.ones_like(g)) == [None, 200]


# ---- 3/3 rule, rescue ----------------------------------------------------------------------------


def test_three_of_three_rule():
    assert C.config_fails([10, 20, 30], 100).passed
    assert not C.config_fails([10, None, 30], 100).passed      # one seed survives
    assert not C.config_fails([10, 20, 150], 100).passed       # one fails after the horizon
    assert not C.config_fails([None, None, None], 100).passed


def test_rescue_needs_every_seed():
    assert C.config_survives([None, None, None], 100).passed
    assert C.config_survives([None, 200, None], 100).passed   # after the horizon
    assert not C.config_survives([None, 50, None], 100).passed
    assert not C.config_survives([], 100).passed


# ---- precursors ----------------------------------------------------------------------------------


STEPS = np.arange(0, 1001, 100)


def test_srank_fell_positive_and_negative_controls():
    falling = np.where(STEPS < 400, 10.0, 10.0 - (STEPS - 400) / 100 * 1.5)
    assert C.srank_fell(STEPS, falling, 900, warmup=100).passed
    assert not C.srank_fell(STEPS, np.full(STEPS.shape, 10.0), 900, warmup=100).passed  # flat
    assert not C.srank_fell(STEPS, 5 + STEPS / 100, 900, warmup=100).passed  # rising
    # the fall happens only after the failure: nothing preceded it
    late = np.where(STEPS <= 900, 10.0, 2.0)
    assert not C.srank_fell(STEPS, late, 900, warmup=100).passed


def test_srank_fell_from_init_only_does_not_count():
    """A drop during warm-up (from the random init) is before the reference sample."""
    init_drop = np.where(STEPS == 0, 30.0, 10.0)
    assert not C.srank_fell(STEPS, init_drop, 900, warmup=100).passed


def test_align_rose_positive_and_negative_controls():
    rising = np.clip(0.1 + (STEPS - 300) / 1000, 0.1, 1.0)
    assert C.align_rose(STEPS, rising, 1000, warmup=100).passed
    assert not C.align_rose(STEPS, np.full(STEPS.shape, 0.3), 1000, warmup=100).passed
    assert not C.align_rose(STEPS, 0.8 - STEPS / 2000, 1000, warmup=100).passed  # falling


def test_precursors_undetermined_is_fail():
    vals = np.linspace(10, 1, STEPS.size)
    ck = C.srank_fell(STEPS, vals, 150, warmup=100)   # one sample between warm-up and failure
    assert not ck.passed and "undetermined" in ck.detail
    assert not C.align_rose(STEPS, vals, None, warmup=100).passed  # no failure at all
    with pytest.raises(ValueError, match="one length"):
        C.srank_fell(STEPS, vals[:-1], 500, warmup=0)


# ---- adaptive, period grid -----------------------------------------------------------------------


def test_fewer_restorations():
    assert C.fewer_restorations([None] * 3, 100, [50, 60, 70], 300).passed
    assert not C.fewer_restorations([None] * 3, 100, [400, 400, 400], 300).passed
    assert not C.fewer_restorations([None, 40, None], 100, [10, 10, 10], 300).passed


def test_rescaled_periods():
    assert C.rescaled_periods(30_000) == [(p, p) for p in C.PAPER_PERIODS]
    assert C.rescaled_periods(600) == [(10, 1), (100, 2), (1000, 20), (10_000, 200),
                                       (100_000, 2000)]
    assert C.rescaled_periods(30) == [(10, 1), (10_000, 10), (100_000, 100)]  # duplicates once
    with pytest.raises(ValueError):
        C.rescaled_periods(0)


def test_thm42_log10_closed_form_and_monitor():
    """The errata's counterexample (M = 2, a = 1/√2, L = 3: bound 4) and the monitor's float32
    thm42_bound where it does not underflow; L = 24, a = 0.01 stays finite in log space."""
    import jax.numpy as jnp

    from jaxspectra.monitors.jacobian import thm42_bound

    a = 1 / np.sqrt(2)
    assert np.isclose(C.thm42_log10([2.0, 2.0, 2.0], [a, a]), np.log10(4.0))
    rng = np.random.default_rng(0)
    n, al = rng.uniform(1, 3, (5, 4)), rng.uniform(0.3, 1, (5, 3))
    want = [float(thm42_bound(jnp.asarray(x), jnp.asarray(y))) for x, y in zip(n, al)]
    np.testing.assert_allclose(10 ** C.thm42_log10(n, al), want, rtol=1e-5)
    deep = C.thm42_log10(np.ones(24), np.full(23, 0.01))
    assert np.isclose(deep, 24 * -2 + 2)
    with pytest.raises(ValueError, match="L-1"):
        C.thm42_log10(np.ones(3), np.ones(3))


# ---- configuration, data -------------------------------------------------------------------------


def test_resolve_errors_name_the_fix():
    with pytest.raises(ValueError, match="search,rescue,ablation"):
        E.resolve("smoke", {"parts": "search,typo"})
    with pytest.raises(ValueError, match="targets,period,adaptive"):
        E.resolve("smoke", {"ablations": "nope"})
    with pytest.raises(ValueError, match="known keys"):
        E.resolve("smoke", {"nope": "1"})
    with pytest.raises(ValueError, match="attention,mlp"):
        E.resolve("smoke", {"ablation_targets": "all_2d"})
    c = E.resolve("full", {"parts": "rescue", "fail_mult": "8"})
    assert c["parts"] == "rescue" and c["fail_mult"] == 8.0


def test_failing_config_needs_search_or_override(tmp_path):
    c = E.resolve("smoke", {})
    with pytest.raises(ValueError, match="--set fail_mult"):
        E.failing_config(c, tmp_path)
    c = E.resolve("smoke", {"fail_mult": "4", "fail_step": "77"})
    assert E.failing_config(c, tmp_path) == (4.0, 77)
    (tmp_path / "search").mkdir()
    (tmp_path / "search" / "result.json").write_text(
        json.dumps({"result": {"fail_mult": 2.0, "fail_step": 55}}))
    assert E.failing_config(E.resolve("smoke", {}), tmp_path) == (2.0, 55)


def test_full_preset_trains_the_stated_model():
    """The full preset is nanogpt-5m's shapes with a vocabulary-8192 BPE: 24·27,744 + 2·8192·48
    + 48 parameters (block, embedding + untied head, final norm)."""
    import jax
    import jax.numpy as jnp

    from jaxspectra.models import get_model

    c = E.resolve("full", {})
    model, cfg = get_model("nanogpt-5m", **E.model_options(c))
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 8), jnp.int32))
    n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))
    assert n == 24 * 27_744 + 2 * 8192 * 48 + 48
    assert cfg.mup and cfg.n_layers == 24 and cfg.d_model == 48


def test_bigram_tokens_deterministic_and_in_range():
    a, b = E.bigram_tokens(64, 5000, 3), E.bigram_tokens(64, 5000, 3)
    assert np.array_equal(a, b) and a.min() >= 0 and a.max() < 64
    # a bigram chain: each token has at most `fanout` successors
    succ = {t: set(a[1:][a[:-1] == t]) for t in range(64)}
    assert max(len(s) for s in succ.values()) <= 4


def test_bpe_data_path_and_cache(tmp_path, monkeypatch):
    """The full preset's data: a BPE trained on <data>/docs-corpus, cached under the run dir."""
    pytest.importorskip("tokenizers")
    docs = tmp_path / "data" / "docs-corpus"
    docs.mkdir(parents=True)
    rng = np.random.default_rng(0)
    words = ["kernel", "memory", "driver", "the", "of", "device", "page", "lock", "irq", "bus"]
    (docs / "a.txt").write_text("\n".join(" ".join(rng.choice(words, 12)) for _ in range(800)))
    monkeypatch.setenv("JAXSPECTRA_DATA_DIR", str(tmp_path / "data"))
    c = E.resolve("full", {"vocab": "300"})
    tr, va, meta = E.datasets(c, tmp_path / "out")
    assert tr.vocab_size == 300 and meta["train_tokens"] > meta["val_tokens"] > 0
    assert int(tr.shards[0].max()) < 300
    assert (tmp_path / "out" / "tokenizer" / "bpe300_tokenizer.json").exists()
    tr2, _, _ = E.datasets(c, tmp_path / "out")  # from the cache
    assert np.array_equal(tr.shards[0], tr2.shards[0])


@pytest.mark.slow
def test_stable_rank_monitor_matches_numpy_svd():
    """Per-layer and early-layer stable-rank geometric means against float64 NumPy SVDs, for
    two stacked members; the alignment and Thm 4.2 outputs are finite and in range."""
    import jax
    import jax.numpy as jnp

    from jaxspectra import groups
    from jaxspectra.models import get_model

    model, cfg = get_model("nanogpt-5m", vocab_size=32, n_layers=3, d_model=8, n_heads=2,
                           d_mlp=16, max_seq_len=8)
    ps = [model.init(jax.random.key(i), jnp.zeros((1, 8), jnp.int32)) for i in range(2)]
    stacked = jax.tree.map(lambda *x: jnp.stack(x), *ps)
    probe = jnp.arange(16, dtype=jnp.int32).reshape(2, 8) % 32
    out = jax.device_get(E._monitor_fn(model, 3, probe, 4)(stacked))
    for m, p in enumerate(ps):
        logs: dict[int, list[float]] = {}
        for path, x in jax.tree_util.tree_flatten_with_path(p)[0]:
            li = groups.layer_index(path)
            if li is None or x.ndim != 2:
                continue
            s = np.linalg.svd(np.asarray(x, np.float64), compute_uv=False)
            if s[0] > 0:  # W_Q is zero-initialised under μP: no stable rank
                logs.setdefault(li, []).append(np.log(np.sum(s**2) / s[0] ** 2))
        want = [np.exp(np.mean(logs[i])) for i in range(3)]
        np.testing.assert_allclose(out["srank_layer"][m], want, rtol=1e-4)
        np.testing.assert_allclose(out["srank_early"][m], want[0], rtol=1e-4)
    assert np.all((out["aligns"] >= 0) & (out["aligns"] <= 1 + 1e-5))
    assert np.all(np.isfinite(out["total_norm"])) and out["aligns"].shape == (2, 2)


# ---- end to end ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_smoke_end_to_end(tmp_path):
    """Every part runs on generated tokens (no data directory), writes its result.json, and a
    second call skips the finished part."""
    res = E.run("smoke", tmp_path)
    s = res["summary"]
    assert set(s["parts"]) == {"search", "rescue", "ablation"}
    for p in ("search", "rescue", "ablation"):
        assert (tmp_path / p / "result.json").exists()
    text = (tmp_path / "report.md").read_text()
    assert "Verdict" in text and "§6.4" in text
    assert isinstance(res["passed"], bool)
    search = s["parts"]["search"]
    assert [r["mult"] for r in search["rows"]] == [1.0, 32.0]
    runs = json.loads((tmp_path / "runs" / "search" / "result.json").read_text())
    assert runs["steps_run"] > 0 and len(runs["first_failure"]) == 6
    with np.load(tmp_path / "runs" / "search" / "arrays.npz") as z:
        assert z["grad_norm"].shape == (120, 6) and z["mean_align"].shape[1] == 6
    again = E.run("smoke", tmp_path, {"parts": "search", "rerun": "false"})
    assert again["summary"]["parts"]["search"]["rows"] == search["rows"]
