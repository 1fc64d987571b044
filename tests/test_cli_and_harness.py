import json

import jax.numpy as jnp
import pytest

from jaxspectra import cli
from jaxspectra.benchmarks import harness
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
    from jaxspectra.benchmarks import run as bench_run

    bench_run.discover()
    expected = {"hessian_hp", "sign_methods", "sign_amortised", "msign_cost", "manifold_muon",
                "train_step", "monitors"}
    assert expected <= set(harness.REGISTRY)
    for name, (description, fn) in harness.REGISTRY.items():
        assert description and callable(fn) and fn.__name__ != "_add", name


def test_bench_unknown_name_is_an_error(capsys):
    from jaxspectra.benchmarks import run as bench_run

    assert bench_run.main(["no_such_benchmark"], out="/dev/null") == 2
    assert "unknown benchmark" in capsys.readouterr().err


GPU_DEVICE = "NVIDIA H100 80GB HBM3 (gpu, 1 device(s)), jax 0.11.2"
CPU_DEVICE = "CPU x86_64 (cpu, 1 device(s)), jax 0.10.2"


@pytest.fixture
def toy_bench(monkeypatch):
    """A registered benchmark that computes nothing, run on a 'device' the test chooses."""
    from jaxspectra.benchmarks import run as bench_run

    bench_run.discover()
    rows = [{"shape": "8", "candidate_ms": 1.0, "baseline_ms": 2.0}]
    monkeypatch.setitem(harness.REGISTRY, "toy",
                        ("toy description", lambda quick: harness.BenchResult(rows=rows)))
    monkeypatch.setattr(harness, "device_name", lambda: CPU_DEVICE)
    return bench_run


def _docs_with_gpu_section(path):
    res = harness.BenchResult(rows=[{"shape": "8", "candidate_ms": 0.1, "baseline_ms": 0.2}])
    harness.write_section(path, "toy", harness.render("toy", "toy description", res, GPU_DEVICE))
    return path.read_text()


def test_bench_writes_its_own_directory_not_the_docs(toy_bench, tmp_path, monkeypatch):
    """The default run leaves docs/benchmarks.md alone (a `bench --quick` once overwrote the
    GPU tables) and writes runs/benchmarks/<name>.md/.json, device and --quick named."""
    monkeypatch.chdir(tmp_path)
    docs = tmp_path / "docs" / "benchmarks.md"
    docs.parent.mkdir()
    before = _docs_with_gpu_section(docs)
    assert toy_bench.main(["toy"], quick=True) == 0
    assert docs.read_text() == before
    md = (tmp_path / "runs" / "benchmarks" / "toy.md").read_text()
    assert CPU_DEVICE in md and harness.QUICK_MARK in md
    rec = json.loads((tmp_path / "runs" / "benchmarks" / "toy.json").read_text())
    assert rec["device"] == CPU_DEVICE and rec["quick"] is True and rec["rows"]
    assert cli.main(["bench", "toy", "--out", str(tmp_path / "elsewhere")]) == 0
    assert (tmp_path / "elsewhere" / "toy.md").exists() and docs.read_text() == before
    # through the command line: --update-docs (docs/benchmarks.md by default) still refuses
    assert cli.main(["bench", "--update-docs", "toy"]) == 1 and docs.read_text() == before
    other = tmp_path / "other.md"
    assert cli.main(["bench", "toy", "--update-docs", "--docs-file", str(other)]) == 0
    assert harness.find_section(other, "toy") is not None


def test_bench_cpu_run_never_replaces_a_gpu_section(toy_bench, tmp_path, capsys):
    docs = tmp_path / "benchmarks.md"
    before = _docs_with_gpu_section(docs)
    rc = toy_bench.main(["toy"], out=tmp_path / "o", update_docs=docs)
    assert rc == 1 and docs.read_text() == before
    err = capsys.readouterr().err
    assert "not replacing section 'toy'" in err and "H100" in err and "CPU run" in err
    assert (tmp_path / "o" / "toy.md").exists()  # the numbers are still kept


def test_bench_update_docs_writes_new_and_same_platform_sections(toy_bench, tmp_path,
                                                                 monkeypatch):
    docs = tmp_path / "benchmarks.md"
    assert toy_bench.main(["toy"], out=tmp_path / "o", update_docs=docs) == 0  # new section
    assert harness.section_device(harness.find_section(docs, "toy")) == (CPU_DEVICE, "cpu", False)
    assert toy_bench.main(["toy"], out=tmp_path / "o", update_docs=docs) == 0  # cpu over cpu
    assert docs.read_text().count("<!-- bench:toy -->") == 1
    # a GPU run replaces a CPU section; a --quick GPU run does not replace a full GPU one
    monkeypatch.setattr(harness, "device_name", lambda: GPU_DEVICE)
    assert toy_bench.main(["toy"], out=tmp_path / "o", update_docs=docs) == 0
    assert harness.section_device(harness.find_section(docs, "toy"))[1] == "gpu"
    before = docs.read_text()
    assert toy_bench.main(["toy"], out=tmp_path / "o", quick=True, update_docs=docs) == 1
    assert docs.read_text() == before


def test_refuse_replacement_rules():
    """The rule itself, including its negative controls: it does refuse what it must."""
    res = harness.BenchResult(rows=[{"a": 1.0}])
    gpu = harness.render("x", "d", res, GPU_DEVICE)
    cpu = harness.render("x", "d", res, CPU_DEVICE)
    gpu_quick = harness.render("x", "d", res, GPU_DEVICE, quick=True)
    tpu = harness.render("x", "d", res, "TPU v5 lite (tpu, 4 device(s)), jax 0.10.2")
    assert harness.refuse_replacement(gpu, cpu) is not None
    assert harness.refuse_replacement(tpu, cpu) is not None
    assert harness.refuse_replacement(gpu, gpu_quick) is not None
    assert harness.refuse_replacement(None, cpu) is None
    assert harness.refuse_replacement(cpu, gpu) is None
    assert harness.refuse_replacement(gpu_quick, gpu) is None
    assert harness.refuse_replacement("<!-- bench:x -->no device<!-- /bench:x -->", cpu) is None


def test_bench_out_as_a_markdown_file_is_a_clear_error(toy_bench, tmp_path, capsys):
    assert toy_bench.main(["toy"], out=tmp_path / "docs.md") == 2
    assert "--update-docs" in capsys.readouterr().err


def test_version(capsys):
    import jaxspectra

    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"jaxspectra {jaxspectra.__version__}"


@pytest.mark.parametrize("command", ["train", "sweep"])
def test_train_and_sweep_honour_data_dir(command, tmp_path, capsys, monkeypatch):
    """--data-dir reaches the loaders as $JAXSPECTRA_DATA_DIR (its path shows in the error for a
    directory without the dataset) and a missing one is one line; the variable is restored."""
    from pathlib import Path

    from jaxspectra.data._paths import DATA_DIR_ENV

    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    smoke = str(Path(__file__).resolve().parents[1] / "configs" / "smoke.toml")
    rc = cli.main([command, "--config", smoke, "--data-dir", str(tmp_path / "missing")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--data-dir" in err[0] and "missing" in err[0]
    empty = tmp_path / "empty_data"
    empty.mkdir()
    rc = cli.main([command, "--config", smoke, "--data-dir", str(empty), "--set",
                   "data.source=tinyshakespeare", "--set", f"run.dir={tmp_path / 'run'!s}"])
    err = capsys.readouterr().err
    assert rc == 2 and "empty_data" in err and "Traceback" not in err
    import os

    assert DATA_DIR_ENV not in os.environ
