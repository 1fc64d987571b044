import jax.numpy as jnp
import pytest

from jaxspectra import groups


@pytest.mark.parametrize(
    "path,ndim,expected",
    [
        ("params/block_0/attn/q/kernel", 2, "attention"),
        ("params/block_11/attn/qkv/kernel", 2, "attention"),
        ("params/block_1/attn/o/kernel", 2, "attention"),
        ("params/block_2/mlp/fc/kernel", 2, "mlp"),
        ("params/block_2/mlp/proj/kernel", 2, "mlp"),
        ("params/block_2/mlp/gate/kernel", 2, "mlp"),
        ("params/block_2/moe/down/kernel", 3, "mlp"),
        ("params/embed/embedding", 2, "embedding"),
        ("params/pos_embed/embedding", 2, "embedding"),
        ("params/head/kernel", 2, "head"),
        ("params/ln_f/scale", 1, "norm"),
        ("params/block_0/norm_attn/scale", 1, "norm"),
        ("params/block_0/attn/q/bias", 1, "other_1d"),
        ("params/block_0/moe/router/kernel", 2, "other"),
    ],
)
def test_path_group(path, ndim, expected):
    assert groups.path_group(path, ndim) == expected


def test_tree_groups_and_mask():
    params = {"params": {"block_0": {"attn": {"q": {"kernel": jnp.ones((4, 4))}}},
                         "ln_f": {"scale": jnp.ones(4)}}}
    g = groups.tree_groups(params)
    assert g["params"]["block_0"]["attn"]["q"]["kernel"] == "attention"
    m = groups.group_mask(params, ["attention"])
    assert m["params"]["block_0"]["attn"]["q"]["kernel"] is True
    assert m["params"]["ln_f"]["scale"] is False
    with pytest.raises(ValueError, match="unknown parameter group"):
        groups.group_mask(params, "attn")


def test_qkv_split_roundtrip():
    w = jnp.arange(4 * 12.0).reshape(4, 12)
    q, k, v = groups.split_qkv(w)
    assert q.shape == (4, 4)
    assert (groups.merge_qkv(q, k, v) == w).all()
    with pytest.raises(ValueError, match="divisible by 3"):
        groups.split_qkv(jnp.ones((4, 5)))


def test_layer_index():
    assert groups.layer_index("params/block_7/mlp/fc/kernel") == 7
    assert groups.layer_index("params/embed/embedding") is None
