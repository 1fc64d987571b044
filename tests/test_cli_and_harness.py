import jax.numpy as jnp
import pytest

from benchmarks import harness
from jaxspectra import cli
from jaxspectra.precision import float64


def test_float64_is_scoped():
    @float64
    def f():
        return jnp.ones(2)

    assert f().dtype == jnp.float64
    assert jnp.ones(2).dtype == (jnp.float64 if jnp.array(1.0).dtype == jnp.float64 else jnp.float32)


def test_parse_overrides():
    assert cli.parse_overrides(["a.b=3", "c = x"]) == {"a.b": "3", "c": "x"}
    with pytest.raises(SystemExit, match="key=value"):
        cli.parse_overrides(["oops"])


def test_unknown_experiment_is_a_clear_error():
    with pytest.raises(SystemExit, match="unknown experiment"):
        cli.main(["reproduce", "no_such_experiment"])


def test_harness_time_and_write(tmp_path):
    t = harness.time_fn(lambda x: x * 2, jnp.ones(8), warmup=1, repeats=3)
    assert t > 0
    res = harness.BenchResult(rows=[{"shape": "8", "candidate_ms": 1.0, "baseline_ms": 2.0}])
    out = tmp_path / "b.md"
    harness.write_section(out, "x", harness.render("x", "desc", res, "cpu"))
    harness.write_section(out, "y", harness.render("y", "desc", res, "cpu"))
    harness.write_section(out, "x", harness.render("x", "new desc", res, "cpu"))
    text = out.read_text()
    assert text.count("<!-- bench:x -->") == 1 and "new desc" in text and "bench:y" in text


def test_bad_override_is_a_clean_error():
    with pytest.raises(SystemExit, match="softmax_fig1"):
        cli.main(["reproduce", "softmax_fig1", "--set", "no_such_field=1"])


def test_every_benchmark_module_registers():
    """Each benchmarks/bench_*.py registers its benchmarks under the names the docs cite."""
    from benchmarks import run as bench_run

    bench_run.discover()
    expected = {"hessian_hp", "sign_methods", "sign_amortised", "msign_cost", "manifold_muon",
                "train_step", "monitors"}
    assert expected <= set(harness.REGISTRY)
    for name, (description, fn) in harness.REGISTRY.items():
        assert description and callable(fn) and fn.__name__ != "_add", name


def test_bench_unknown_name_is_an_error(capsys):
    from benchmarks import run as bench_run

    assert bench_run.main(["no_such_benchmark"], out="/dev/null") == 2
    assert "unknown benchmark" in capsys.readouterr().err


def test_version(capsys):
    import jaxspectra

    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"jaxspectra {jaxspectra.__version__}"
