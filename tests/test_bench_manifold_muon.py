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
