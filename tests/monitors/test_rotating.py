"""Rotating-slice spectral monitor: accuracy vs float64 SVD, the cheapest passing precision,
rotation coverage, ΔΣ pairing (with mispaired negative controls) and the trainer hook."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxspectra.monitors import rotating as R
from jaxspectra.monitors.spectral import delta_sigma, distribution
from jaxspectra.train.hooks import LoopControl, StepInfo
from jaxspectra.train.monitor_hooks import RotatingSpectralHook

SIGMA_HAT_TOL = 1e-5  # ‖Σ̂ − Σ̂_float64 SVD‖_F, fixed before the runs (the ΔΣ criterion's scale)


def _decaying(rng, m, n, ratio):
    """σ_i decaying geometrically from 1 to ``ratio`` (trained-weight-like), times 0.05."""
    k = min(m, n)
    u, _ = np.linalg.qr(rng.normal(size=(m, k)))
    v, _ = np.linalg.qr(rng.normal(size=(n, k)))
    return 0.05 * (u * ratio ** (np.arange(k) / (k - 1))) @ v.T


def _pair(shape, ratio, scale, seed=0):
    """Float32 weights W, W' one small step apart (relative step ``scale``)."""
    rng = np.random.default_rng(seed)
    w0 = _decaying(rng, *shape, ratio)
    d = rng.normal(size=shape)
    w1 = w0 + scale * d / np.linalg.norm(d) * np.linalg.norm(w0)
    return w0.astype(np.float32), w1.astype(np.float32)


def _errors(w0, w1, precision):
    """(|ΔΣ − ref|, ‖Σ̂ − Σ̂_ref‖_F) of the Gram route against a float64 SVD of the same
    stored values."""
    a = np.asarray(R.gram_spectrum(jnp.asarray(w0), precision), np.float64)
    b = np.asarray(R.gram_spectrum(jnp.asarray(w1), precision), np.float64)
    ref = R.reference_delta_sigma(np.asarray(w0, np.float64), np.asarray(w1, np.float64))
    s = np.linalg.svd(np.asarray(w0, np.float64), compute_uv=False)
    return abs(float(delta_sigma(a, b)) - ref), float(np.linalg.norm(distribution(a) - s / s.sum()))


@pytest.mark.parametrize("shape,ratio", [((256, 64), 1e-2), ((64, 200), 1e-2),
                                          ((192, 192), 1e-3)])
def test_float32_gram_meets_the_accuracy_criterion(shape, ratio):
    """Float32 (HIGHEST) Gram eigenvalues: ΔΣ within 1e-5 and Σ̂ within 1e-5 of a float64 SVD
    (measured ≤ 3.1e-6 / 4.3e-6, the worst on 192² with σ spanning 1e-3)."""
    for scale in (3e-4, 3e-3):
        w0, w1 = _pair(shape, ratio, scale)
        d_err, s_err = _errors(w0, w1, "auto")  # float32 weights → HIGHEST
        assert d_err <= R.DELTA_SIGMA_TOL and s_err <= SIGMA_HAT_TOL, (scale, d_err, s_err)


def test_bf16_gram_passes_on_bf16_weights_and_fails_on_float32_ones():
    """The cheapest precision that passes: bf16 inputs are exact for bf16-*stored* weights (the
    products fit float32) — and fail the criterion on float32 weights (negative control: the
    criterion can fail; measured ΔΣ error 1.2e-5, Σ̂ error 2.5e-5 on 256×64)."""
    w0, w1 = _pair((256, 64), 1e-2, 3e-3)
    b0 = np.asarray(jnp.asarray(w0, jnp.bfloat16).astype(jnp.float32))
    b1 = np.asarray(jnp.asarray(w1, jnp.bfloat16).astype(jnp.float32))
    bf = jnp.asarray(b0, jnp.bfloat16), jnp.asarray(b1, jnp.bfloat16)
    a = np.asarray(R.gram_spectrum(bf[0]), np.float64)  # auto → bf16 route
    b = np.asarray(R.gram_spectrum(bf[1]), np.float64)
    assert abs(float(delta_sigma(a, b)) - R.reference_delta_sigma(b0, b1)) <= R.DELTA_SIGMA_TOL
    d_err, s_err = _errors(w0, w1, "bf16")
    assert d_err > R.DELTA_SIGMA_TOL and s_err > SIGMA_HAT_TOL, (d_err, s_err)
    with pytest.raises(ValueError, match="precision"):
        R.gram_spectrum(jnp.asarray(w0), "fp8")
    with pytest.raises(ValueError, match="solver"):
        R.gram_spectrum(jnp.asarray(w0), solver="qdwh")


def test_svd_solver_agrees_with_eigh():
    w0, _ = _pair((96, 40), 1e-2, 3e-3)
    e = np.asarray(R.gram_spectrum(jnp.asarray(w0)))
    s = np.asarray(R.gram_spectrum(jnp.asarray(w0), solver="svd"))
    np.testing.assert_allclose(s, e, rtol=1e-4, atol=1e-7)


def _params(seed=0, u=0.0):
    """A toy tree: fused qkv (split), o, fc, a stacked expert leaf (3), embed, a norm scale;
    ``u`` moves every matrix along its own fixed direction (W_u = W_0 + u·0.01·D)."""
    rng = np.random.default_rng(seed)
    shapes = {("block_0", "attn", "qkv"): (12, 36), ("block_0", "attn", "o"): (12, 12),
              ("block_0", "mlp", "fc"): (12, 24), ("block_1", "moe", "up"): (3, 12, 8),
              ("block_1", "attn", "o"): (12, 12)}
    p: dict = {"embed": {"embedding": None}, "block_0": {"ln_1": {"scale": np.ones(12)}}}
    for path, shape in shapes.items():
        w0 = rng.normal(size=shape)
        d = rng.normal(size=shape)
        node = p
        for key in path:
            node = node.setdefault(key, {})
        node["kernel"] = (w0 + u * 0.01 * d).astype(np.float32)
    e0, ed = rng.normal(size=(40, 12)), rng.normal(size=(40, 12))
    p["embed"]["embedding"] = (e0 + u * 0.01 * ed).astype(np.float32)
    return {"params": p}


def test_rotation_covers_every_matrix_within_ceil_n_over_k_due_steps():
    plan = R.plan_slices(_params(), k=3)
    n = len(plan.units)
    assert n == 3 + 1 + 1 + 3 + 1 + 1  # q k v, o, fc, up e0..e2, o, embed
    assert plan.n_slices == math.ceil(n / 3)
    assert sorted(i for sl in plan.slices for i in sl) == list(range(n))  # a partition
    assert all(1 <= len(sl) <= 3 for sl in plan.slices)
    every = 4
    due = [u for u in range(0, 200) if u % every == 0]
    for start in range(0, len(due) - plan.n_slices):  # any window of S due steps sees all
        seen = {i for u in due[start:start + plan.n_slices]
                for i in plan.slices[R.slice_of(plan, every, u)]}
        assert seen == set(range(n))
    assert R.check_rotation(plan, every, 200) == (True, [])
    # negative controls: a matrix in no slice, a matrix in two, and a slice of 2k
    for bad in (plan.slices[:-1] + (plan.slices[-1][1:],),
                plan.slices[:-1] + (plan.slices[-1] + plan.slices[0][:1],),
                (plan.slices[0] + plan.slices[1],) + plan.slices[2:]):
        ok, problems = R.check_rotation(plan._replace(slices=bad), every, 200)
        assert not ok and problems, bad
    for i in range(n):  # a known cadence: every · S updates
        steps = R.measured_steps(plan, every, i, 200)
        assert np.all(np.diff(steps) == every * plan.n_slices) and steps[0] < every * plan.n_slices
    with pytest.raises(ValueError, match="k"):
        R.plan_slices(_params(), k=0)
    with pytest.raises(ValueError, match="nothing to monitor"):
        R.plan_slices({"ln": {"scale": np.ones(3)}}, k=2)


class _State:
    def __init__(self, params):
        self.params = params


def _drive(hook, params_at, end, skip_update_after=None):
    """Run ``hook`` as run_loop does (start, then after each update), collecting its records.
    ``skip_update_after=u``: the hook is handed W_{u+2} where W_{u+1} belongs (a mispairing)."""
    recs: dict[int, dict] = {}

    class Sink:
        def on_record(self, rec):
            assert rec.step not in recs
            recs[rec.step] = rec.values

    control = LoopControl([Sink()])
    hook.start(StepInfo(0, _State(params_at(0)), end, control))
    for t in range(end):
        u = t + 1
        shown = u + 1 if skip_update_after is not None and u == skip_update_after + 1 else u
        if hook.due(u, end):
            hook(StepInfo(u, _State(params_at(shown)), end, control))
    hook.close(StepInfo(end, _State(params_at(end)), end, control))
    return recs


def _jparams(u):
    return jax.tree.map(jnp.asarray, _params(0, u))


def test_hook_pairs_each_matrix_with_itself_one_update_later():
    every, k, end = 3, 4, 19
    hook = RotatingSpectralHook(every=every, k=k)
    recs = _drive(hook, _jparams, end)
    plan = hook.plan
    assert sorted(recs) == [u for u in range(end + 1) if u % every == 0]
    for u, rec in recs.items():
        names = {plan.units[i].name for i in plan.slices[R.slice_of(plan, every, u)]}
        got = {key.rsplit("/", 1)[0] for key in rec if key.startswith("spectral/")}
        assert got == names, u  # exactly the slice of u, nothing stale
        assert rec["spectral_rot/slice"] == R.slice_of(plan, every, u)
        for nm in names:
            sv = R.units_matrix(_params(0, u), plan, nm)
            s = np.linalg.svd(sv.astype(np.float64), compute_uv=False)
            np.testing.assert_allclose(rec[f"{nm}/sigma_max"], s[0], rtol=1e-5)
            np.testing.assert_allclose(np.asarray(rec[f"{nm}/sv"]), s, rtol=1e-4, atol=1e-5)
    assert all(any(key.endswith("/delta_sigma") for key in r) for r in recs.values())
    matrix_at = lambda u, nm: R.units_matrix(_params(0, u), plan, nm)
    done = {u: r for u, r in recs.items() if u < end}
    ok, worst, bad = R.check_delta_sigma(done, matrix_at)
    assert ok and worst <= R.DELTA_SIGMA_TOL, bad
    assert hook.measured == len(recs)


def test_mispaired_delta_sigma_is_caught():
    """Negative controls of the pairing verdict: (a) one update skipped (W_u paired with
    W_{u+2}); (b) each matrix's W_u paired with another matrix's W_{u+1}; (c) no ΔΣ at all."""
    every, k, end = 3, 4, 10
    plan = R.plan_slices(_params(), k)
    matrix_at = lambda u, nm: R.units_matrix(_params(0, u), plan, nm)
    recs = _drive(RotatingSpectralHook(every=every, k=k), _jparams, end, skip_update_after=3)
    ok, worst, bad = R.check_delta_sigma({3: recs[3]}, matrix_at)
    assert not ok and worst > R.DELTA_SIGMA_TOL and bad
    ok_rest, _, _ = R.check_delta_sigma({u: r for u, r in recs.items() if u != 3 and u < end},
                                        matrix_at)
    assert ok_rest  # only the mispaired measurement fails
    fn = R.slice_spectra_fn(plan, 0)
    sv_u = jax.device_get(fn(_jparams(0)))
    sv_n = jax.device_get(fn(_jparams(1)))
    by_shape: dict = {}
    for nm, v in sv_n.items():
        by_shape.setdefault(np.shape(v), []).append(nm)
    shifted = {}
    for names in by_shape.values():  # each matrix given a same-shape neighbour's W_{u+1}
        shifted.update({a: sv_n[b] for a, b in zip(names, names[1:] + names[:1])})
    assert any(len(v) > 1 for v in by_shape.values())
    ok, _, bad = R.check_delta_sigma({0: R.record(sv_u, shifted, 0, plan.n_slices)}, matrix_at)
    assert not ok and bad
    ok, _, _ = R.check_delta_sigma({0: R.record(sv_u, sv_n, 0, plan.n_slices)}, matrix_at)
    assert ok
    assert R.check_delta_sigma({0: R.record(sv_u, None, 0, plan.n_slices)}, matrix_at)[0] is False
    with pytest.raises(ValueError, match="pairing"):
        R.record(sv_u, {}, 0, plan.n_slices)
    with pytest.raises(ValueError, match="pairing"):
        R.record(sv_u, {nm: v[:-1] for nm, v in sv_n.items()}, 0, plan.n_slices)


def test_hook_every_one_and_bad_options():
    recs = _drive(RotatingSpectralHook(every=1, k=5), _jparams, 6)
    assert sorted(recs) == list(range(7))
    plan = R.plan_slices(_params(), 5)
    matrix_at = lambda u, nm: R.units_matrix(_params(0, u), plan, nm)
    assert R.check_delta_sigma({u: r for u, r in recs.items() if u < 6}, matrix_at)[0]
    with pytest.raises(ValueError, match="every and k"):
        RotatingSpectralHook(every=0)
    with pytest.raises(ValueError, match="precision"):
        RotatingSpectralHook(precision="fp16")


@pytest.mark.slow
def test_trainer_run_records_exact_one_step_delta_sigma(tmp_path):
    """``train(hooks=[RotatingSpectralHook])`` on a one-block model: records land in
    metrics.jsonl / arrays under the measurement steps, SoSD's loader reads them, and every
    ΔΣ matches a float64 SVD of the params the trainer actually held at u and u + 1."""
    from jaxspectra.models import get_model
    from jaxspectra.monitors import sosd
    from jaxspectra.train.config import from_dict
    from jaxspectra.train.hooks import Hook
    from jaxspectra.train.loop import train
    from jaxspectra.train.metrics import read_jsonl

    held: dict[int, dict] = {}

    class Spy(Hook):
        every = 1

        def start(self, info):
            held[info.step] = jax.tree.map(np.asarray, info.state.params)

        def __call__(self, info):
            held[info.step] = jax.tree.map(np.asarray, info.state.params)

    cfg = from_dict({
        "run": {"dir": str(tmp_path / "run"), "seed": 0, "num_devices": 1},
        "model": {"name": "gpt-tiny"},
        "data": {"source": "synthetic", "batch_size": 4, "seq_len": 8, "eval_batches": 0},
        "optim": {"name": "adamw", "learning_rate": 1e-2},
        "train": {"steps": 7, "progress": False, "log_every": 1},
        "checkpoint": {"every": 0, "keep": 0},
    })
    model = get_model("gpt-tiny", n_layers=1, vocab_size=17, max_seq_len=8)
    rot = RotatingSpectralHook(every=2, k=3)
    train(cfg, model=model, hooks=[rot, Spy()])
    by_step: dict[int, dict] = {}
    for r in read_jsonl(tmp_path / "run" / "metrics.jsonl"):
        if any(k.startswith("spectral/") for k in r):
            by_step.setdefault(r["step"], {}).update(r)
    assert sorted(by_step) == [0, 2, 4, 6]
    matrix_at = lambda u, nm: R.units_matrix(held[u], rot.plan, nm)
    ok, worst, bad = R.check_delta_sigma(by_step, matrix_at)
    assert ok, bad
    spectra, delta, _ = sosd.load_run(tmp_path / "run")
    assert set(delta) == {u.name for u in rot.plan.units}
    assert set(spectra) == set(delta)


@pytest.mark.slow
def test_config_where_rotating_runs_the_hook_in_the_trainer(tmp_path):
    """``[monitors.spectral] where = "rotating"`` builds the RotatingSpectralHook in ``train``:
    every matrix gets a one-step ΔΣ record; an unknown ``where`` names the three choices."""
    from jaxspectra.models import get_model
    from jaxspectra.monitors import registry
    from jaxspectra.train.config import from_dict
    from jaxspectra.train.loop import train
    from jaxspectra.train.metrics import read_jsonl

    d = {"run": {"dir": str(tmp_path / "run"), "seed": 0, "num_devices": 1},
         "model": {"name": "gpt-tiny"},
         "data": {"source": "synthetic", "batch_size": 4, "seq_len": 8, "eval_batches": 0},
         "optim": {"name": "adamw", "learning_rate": 1e-2},
         "train": {"steps": 5, "progress": False, "log_every": 1},
         "checkpoint": {"every": 0, "keep": 0},
         "monitors": {"spectral": {"every": 2, "where": "rotating", "k": 3}}}
    model = get_model("gpt-tiny", n_layers=1, vocab_size=17, max_seq_len=8)
    train(from_dict(d), model=model)
    recs = [r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl")
            if any(k.startswith("spectral/") and "delta_sigma" in k for k in r)]
    assert sorted({r["step"] for r in recs}) == [0, 2, 4]
    with pytest.raises(ValueError, match="'host', 'device' or 'rotating'"):
        registry.build_monitors({"spectral": {"every": 2, "where": "nowhere"}})
