"""The Manifold Muon benchmark's peer loader and variant list (the timing itself runs on a GPU:
docs/benchmarks.md; a --quick CPU run takes minutes, so it is not part of the suite)."""

from __future__ import annotations

import sys

import pytest

from jaxspectra.benchmarks import bench_manifold_muon as bench


def _fake_peer(tmp_path):
    (tmp_path / "msign.py").write_text("def msign(x):\n    return ('signed', x)\n")
    (tmp_path / "manifold_muon.py").write_text(
        "from msign import msign\n\n"
        "def manifold_muon(W, G, **kw):\n    return msign(W)\n\n"
        "def batched_manifold_muon(W, G, **kw):\n    return msign(W)\n"
    )
    return tmp_path


def test_load_peer_imports_from_the_given_folder_and_cleans_up(tmp_path):
    path_before = list(sys.path)
    peer = bench.load_peer(_fake_peer(tmp_path))
    assert peer.manifold_muon(1, 2) == ("signed", 1)
    assert peer.batched_manifold_muon(3, 4) == ("signed", 3)
    assert sys.path == path_before and "msign" not in sys.modules


def test_load_peer_missing_folder_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"cp -r \.\./shared/peers"):
        bench.load_peer(tmp_path / "nope")
    (tmp_path / "manifold_muon.py").write_text("")
    with pytest.raises(FileNotFoundError, match="msign.py"):
        bench.load_peer(tmp_path)


def test_variants_cover_paper004_default_and_issue25_options():
    for manifold in ("stiefel", "dgram"):
        labels = [label for label, _ in bench._variants(manifold, 0.02)]
        assert labels[0] == "paper004 (faithful)"
        for needed in ("robust stop", "gram sign", "gram warm", "one loop", "default (accurate"):
            assert any(needed in label for label in labels), needed
    assert "--peer-dir" in bench.main.__doc__


def test_peer_rows_with_a_numpy_stand_in_for_torch(tmp_path, monkeypatch):
    """The authors' timing path end to end, torch replaced by a NumPy shim (the peer returns W:
    a step of zero length keeps W on the manifold, so the manifold error is round-off)."""
    import types

    import jax
    import numpy as np

    from jaxspectra.optim import manifold_muon as mm

    class T:
        def __init__(self, a):
            self.a = np.asarray(a)
            self.shape = self.a.shape

        def detach(self):
            return self

        def cpu(self):
            return self

        def numpy(self):
            return self.a

    shim = types.ModuleType("torch")
    shim.tensor = lambda x, device=None: T(x)
    shim.stack = lambda xs: T(np.stack([x.a for x in xs]))
    shim.cuda = types.SimpleNamespace(is_available=lambda: False, synchronize=lambda: None)
    monkeypatch.setitem(sys.modules, "torch", shim)
    peer = bench.load_peer(_fake_peer(tmp_path))
    peer.manifold_muon = lambda W, G, **kw: W
    peer.batched_manifold_muon = lambda W, G, **kw: W
    params = mm.project_to_manifold(bench.gpt2_muon_params(1, 8, jax.random.key(0)), "stiefel",
                                    sign_method="svd")
    rows = bench._peer_rows(peer, params, params, "stiefel", 0.02, quick=True)
    assert [r["variant"].split(",")[1].strip() for r in rows] == ["per matrix",
                                                                  "batched per bank"]
    assert all(r["ms"] > 0 and r["manifold err"] < 1e-5 for r in rows)
