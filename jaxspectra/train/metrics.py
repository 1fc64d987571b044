"""Metrics sinks (JSONL, TensorBoard if installed, ``arrays/step_<t>.npz``) and the MFU model.

The loop never blocks the device on the host: a step's metrics are device arrays whose
device→host copy starts right after dispatch (``copy_to_host_async``) and are read one step
later, once the next step is queued (:class:`LaggedFetcher`).

FLOPs per token (for MFU), nanoGPT/PaLM style: ``6·N_matmul + 12·L·T·d`` where ``N_matmul``
counts the weights used in matrix products (every ≥2-D leaf except embedding tables; a tied head
is counted once more as it is used as a matmul) and the second term is the attention scores and
weighted sum (forward + backward) with causal masking not discounted.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxspectra.groups import module_name, path_group, path_to_str


def _to_host_scalar(v: Any) -> Any:
    a = np.asarray(v)
    if a.ndim == 0:
        x = a.item()
        if isinstance(x, float) and not math.isfinite(x):
            return str(x)  # JSON has no nan/inf
        return x
    return None


class MetricsWriter:
    """Append-only JSONL (one object per line, ``step`` first) + TensorBoard + npz arrays."""

    def __init__(self, run_dir: str | Path, tensorboard: bool = True, enabled: bool = True):
        self.enabled = enabled  # False on every process but the first (multi-host)
        self.dir = Path(run_dir)
        if not enabled:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        self._f = open(self.dir / "metrics.jsonl", "a", buffering=1)  # noqa: SIM115
        self._tb = None
        if tensorboard:
            try:
                from tensorboardX import SummaryWriter  # optional

                self._tb = SummaryWriter(str(self.dir / "tb"))
            except ImportError:
                self._tb = None

    def write(self, step: int, metrics: dict[str, Any]) -> None:
        if not self.enabled:
            return
        scalars, arrays = {}, {}
        for k, v in metrics.items():
            if isinstance(v, str | bool | int | float) and not isinstance(v, np.generic):
                if isinstance(v, float) and not math.isfinite(v):
                    scalars[k] = str(v)
                else:
                    scalars[k] = v
                continue
            s = _to_host_scalar(v)
            if s is None:
                arrays[k.replace("/", "__")] = np.asarray(v)
            else:
                scalars[k] = s
        if scalars:
            self._f.write(json.dumps({"step": int(step), **scalars}) + "\n")
            if self._tb is not None:
                for k, v in scalars.items():
                    if isinstance(v, int | float):
                        self._tb.add_scalar(k, v, step)
        if arrays:
            d = self.dir / "arrays"
            d.mkdir(exist_ok=True)
            path = d / f"step_{int(step)}.npz"
            old = dict(np.load(path)) if path.exists() else {}
            tmp = d / f".step_{int(step)}.tmp.npz"
            np.savez(tmp, **{**old, **arrays})
            tmp.replace(path)

    def close(self) -> None:
        if not self.enabled:
            return
        self._f.close()
        if self._tb is not None:
            self._tb.close()


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """All records of a ``metrics.jsonl``."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


class LaggedFetcher:
    """Hold the latest step's device metrics; hand back the previous step's as host values."""

    def __init__(self):
        self._pending: tuple[int, Any] | None = None

    def push(self, step: int, metrics: Any) -> tuple[int, dict] | None:
        """Queue ``metrics`` of ``step`` (starts its host copy); return the previous one, fetched."""
        for leaf in jax.tree.leaves(metrics):
            if hasattr(leaf, "copy_to_host_async"):
                leaf.copy_to_host_async()
        prev, self._pending = self._pending, (step, metrics)
        return None if prev is None else (prev[0], jax.device_get(prev[1]))

    def flush(self) -> tuple[int, dict] | None:
        prev, self._pending = self._pending, None
        return None if prev is None else (prev[0], jax.device_get(prev[1]))


def param_counts(params: Any) -> dict[str, int]:
    """Total and per-group parameter counts (:mod:`jaxspectra.groups`)."""
    out: dict[str, int] = {"total": 0}
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        n = int(np.prod(leaf.shape, dtype=np.int64))
        g = path_group(path, len(leaf.shape))
        out["total"] += n
        out[g] = out.get(g, 0) + n
    return out


def matmul_params(params: Any) -> int:
    """Weights used in matrix products: ≥2-D leaves except embedding tables (+ a tied head)."""
    n = 0
    has_head = False
    embed_size = 0
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        if len(leaf.shape) < 2:
            continue
        size = int(np.prod(leaf.shape, dtype=np.int64))
        g = path_group(path, len(leaf.shape))
        if g == "head":
            has_head = True
        if g == "embedding":
            if module_name(path) == "embed":
                embed_size = size
            continue
        if "embed" in path_to_str(path).split("/")[-2:]:
            continue
        n += size
    if not has_head:
        n += embed_size  # tied head: the embedding table is the output projection
    return n


def dense_flops_per_token(n_matmul: int, n_layers: int | None, d_model: int | None,
                          seq_len: int) -> float:
    """Training FLOPs per token: ``6·N + 12·L·T·d`` (attention term 0 when L/d are unknown)."""
    attn = 12 * n_layers * seq_len * d_model if n_layers and d_model else 0
    return float(6 * n_matmul + attn)
