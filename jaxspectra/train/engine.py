"""The compiled pieces of a run: :class:`Engine` (one model, or ``members`` stacked for a sweep).

* ``step(due_hooks)`` — the train step jit-compiled with shardings and the state donated; compiled
  once without in-step hooks and once per set of hooks due together (levanter's "with and without
  hooks"), so a step with no hook due runs the plain program.
* ``init_state(seed)``, ``batch(dataset, seeds, t)``, ``evaluate(params)``.

With ``members = M`` the same step is ``vmap``-ped over a leading member axis of the state, the
batch and the metrics (members share the mesh; the member axis is never partitioned): a sweep is
the same loop over this engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxspectra.optim.registry import prepare_params
from jaxspectra.train import sharding as shd
from jaxspectra.train.setup import Setup
from jaxspectra.train.state import (
    Optimizer,
    TrainState,
    init_model_params,
    lr_multiplier_tree,
    optimizer_from_section,
)
from jaxspectra.train.step import lm_loss, make_eval_step, make_train_step

EVAL_SEED_OFFSET = 10_007  # eval batches: data seed + this offset, batch index i


def put_batch(batch: Any, sharding: Any) -> Any:
    """Host arrays (the global batch) → sharded device arrays (multi-process aware)."""
    def one(x):
        x = np.asarray(x)
        if x.dtype.kind in "iu":
            x = x.astype(np.int32)
        if jax.process_count() == 1:
            return jax.device_put(x, sharding)
        p, np_ = jax.process_index(), jax.process_count()
        rows = x.shape[0] // np_
        return jax.make_array_from_process_local_data(sharding, x[p * rows:(p + 1) * rows],
                                                      x.shape)
    return jax.tree.map(one, batch)


class Engine:
    """Compiled step / eval / init of one run (``members=None``) or a vmapped sweep."""

    def __init__(self, s: Setup, *, members: int | None = None,
                 swept_hparams: dict[str, Any] | None = None):
        cfg = s.cfg
        self.s, self.members, self.swept = s, members, dict(swept_hparams or {})
        # only the GPT family's config has loss_chunk (models.config.GPTConfig)
        self.loss_fn = partial(lm_loss, s.module.apply,
                               loss_chunk=getattr(s.model_config, "loss_chunk", 0))
        mults = lr_multiplier_tree(s.model_config, s.abstract_params)
        self.opt: Optimizer = optimizer_from_section(
            cfg.optim, cfg.train.steps, s.abstract_params, mults,
            spectral_every=cfg.monitors.spectral_every, swept=swept_hparams)
        lead = 0 if members is None else 1
        abstract = jax.eval_shape(self._init_one, jax.random.PRNGKey(0))
        if members is not None:
            abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct((members, *x.shape), x.dtype),
                                    abstract)
        mode = "replicated" if members is not None else cfg.train.sharding
        self.state_sh = shd.state_shardings(abstract, s.mesh, mode, cfg.train.fsdp_min_size)
        self.abstract_state = jax.tree.map(
            lambda x, sh: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh), abstract,
            self.state_sh)
        self.rep = shd.replicated(s.mesh)
        self.batch_sh = shd.batch_sharding(s.mesh, leading=lead)
        self._steps: dict[tuple[str, ...], Any] = {}
        ev = make_eval_step(self.loss_fn)
        self._eval = jax.jit(ev if members is None else jax.vmap(ev),
                             in_shardings=(self.state_sh.params, self.batch_sh),
                             out_shardings=self.rep)
        self._init = (jax.jit(self._init_one, out_shardings=self.state_sh) if members is None
                      else jax.jit(self._init_one))

    def _init_one(self, key: jax.Array) -> TrainState:
        s = self.s
        k_init, k_train = jax.random.split(key)
        params = init_model_params(s.module, k_init, s.cfg.data.seq_len)
        params = prepare_params(s.cfg.optim.name, params, **s.cfg.optim.options)
        return TrainState(jnp.zeros((), jnp.int32), params, self.opt.tx.init(params), k_train)

    def init_state(self, seed: int) -> TrainState:
        """A fresh single-run state (for members: stack states with :meth:`stack`)."""
        return self._init(jax.random.PRNGKey(seed))

    def stack(self, states: Sequence[TrainState]) -> TrainState:
        """Member states stacked on axis 0, placed on the engine's shardings."""
        stacked = jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *states)
        return jax.device_put(stacked, self.state_sh)

    def step(self, hooks: Sequence[Any] = ()) -> Any:
        """The compiled ``(state, batch, hook_states) -> (state, metrics, hook_metrics,
        hook_states)`` with ``hooks`` compiled in."""
        key = tuple(h.name for h in hooks)
        if key not in self._steps:
            fn = make_train_step(self.loss_fn, self.opt, self.s.cfg.train.grad_accum, hooks)
            if self.members is not None:
                fn = jax.vmap(fn, in_axes=(0, 0, 0))
            self._steps[key] = jax.jit(
                fn, in_shardings=(self.state_sh, self.batch_sh, self.rep),
                out_shardings=(self.state_sh, self.rep, self.rep, self.rep), donate_argnums=0)
        return self._steps[key]

    def batch(self, dataset: Any, seeds: int | Sequence[int], step: int) -> Any:
        """Batch ``step`` of ``dataset`` (per member: one seed each), on the devices."""
        d = self.s.cfg.data
        if self.members is None:
            return put_batch(dataset.batch(seeds, step, d.batch_size, d.seq_len), self.batch_sh)
        xs = [dataset.batch(sd, step, d.batch_size, d.seq_len) for sd in seeds]
        return put_batch((np.stack([x for x, _ in xs]), np.stack([y for _, y in xs])),
                         self.batch_sh)

    def evaluate(self, params: Any, seeds: int | Sequence[int]) -> Any:
        """Mean loss over ``data.eval_batches`` eval batches (a float, or one per member)."""
        s = self.s
        n = max(s.cfg.data.eval_batches, 1)
        ds = s.eval_dataset if s.cfg.data.eval_batches > 0 else s.dataset
        ev_seeds = (seeds + EVAL_SEED_OFFSET if self.members is None
                    else [sd + EVAL_SEED_OFFSET for sd in seeds])
        tot = 0.0
        for i in range(n):
            tot = tot + np.asarray(self._eval(params, self.batch(ds, ev_seeds, i)), np.float64)
        out = tot / n
        return float(out) if self.members is None else out

    def init_hook_states(self, hooks: Sequence[Any], state: TrainState) -> dict[str, Any]:
        """Each in-step hook's initial state (per member for a sweep), replicated."""
        params = state.params
        if self.members is not None:
            return {h.name: jax.device_put(jax.vmap(h.init)(params), self.rep) for h in hooks}
        return {h.name: jax.device_put(h.init(params), self.rep) for h in hooks}
