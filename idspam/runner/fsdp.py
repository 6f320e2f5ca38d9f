"""trainer=fsdp: the frozen backbone sharded across processes (torch FSDP2 `fully_shard`, one unit per
transformer layer), the trained parts (method, head, LoRA matrices) replicated on every process with their
gradients averaged before each optimizer step. Built on Lightning's `ModelParallelStrategy`.

Why this shape (and not Lightning's `FSDPStrategy`, torch FSDP1): a frozen backbone needs no gradient, no
optimizer state and no checkpoint, so only its weights are worth sharding; the trained part is tiny
(ID-SPAM's generator is well under 1% of an 8B backbone), so replicating it costs nothing and keeps its
checkpoint a plain, trained-only state dict that no process has to gather (rank 0 writes it as on one device,
`AtomicCheckpointIO`). FSDP2 also runs on a CPU under gloo, so what is claimed here is tested on a CPU
(tests/test_fsdp.py); FSDP1 refuses a CPU device.

What differs from one process, and why it is exact anyway:
- Each process trains on its share of the global order: the one-process shuffle of the epoch, every
  `world`-th example from the process's rank (`ResumableRandomSampler(rank, world)`), padded by repeating the
  order's start so every process runs the same number of steps (a process with one step less would wait in
  a collective until the process group's timeout). Global batch = data.batch_size x devices.
- Every process validates on the whole validation set (identical model, identical data), so each computes
  the one-process metrics without syncing them; the FSDP all-gathers need every process to run the same
  forward passes, which this guarantees (generation included).
- The random generators continue as on one process (Lightning's re-seeding at process-group setup is undone).
  Every process draws the same stream, so with dropout the processes' shares of a global batch get the same
  masks (as under Lightning's DDP); the one-process equality holds without dropout.
"""

from __future__ import annotations

import logging
import random
import warnings
from typing import Any

import numpy as np
import torch
from lightning.pytorch.strategies import ModelParallelStrategy
from lightning.pytorch.strategies.strategy import Strategy

log = logging.getLogger("idspam")


class FrozenFSDPStrategy(ModelParallelStrategy):
    """FSDP2 over the frozen backbone's layers (`shard`, called from the module's `configure_model`), the trained
    parameters replicated with their gradients all-reduced; checkpoints are the module's own trained-only state
    dict and the optimizer's plain state, written by rank 0 through the checkpoint IO."""

    shards_batches = True  # TaskDataModule: each process takes its share of the one-process order
    evaluates_everywhere = True  # every process validates on the whole set (metrics unsynced, exact)

    def __init__(self, reshard_after_forward: bool = True, process_group_backend: str | None = None, **kwargs):
        kwargs.setdefault("save_distributed_checkpoint", False)
        super().__init__(process_group_backend=process_group_backend, **kwargs)
        self.reshard_after_forward = reshard_after_forward
        # validation metrics and losses are computed whole on every process: nothing to sync
        warnings.filterwarnings("ignore", message=r".*sync_dist=True.*when logging on epoch level.*")

    # ------------------------------------------------------------------ processes and the mesh

    def _setup_distributed(self) -> None:
        states = torch.get_rng_state(), np.random.get_state(), random.getstate()
        super()._setup_distributed()  # re-seeds every generator with the global seed
        torch.set_rng_state(states[0])
        np.random.set_state(states[1])
        random.setstate(states[2])
        # pure data parallelism: one mesh dimension over every process (ModelParallelStrategy's "auto" would make
        # the processes of one node a tensor-parallel group)
        self._data_parallel_size, self._tensor_parallel_size = self.num_nodes * self.num_processes, 1

    # ------------------------------------------------------------------ sharding

    def shard(self, module) -> None:
        """fully_shard every frozen transformer layer of the module's engine over the data-parallel mesh; every
        trained parameter is left out (`ignored_params`: replicated). With last-layer pruning the last layer
        stays whole (its keys and values are read through its sub-modules, outside the layer's own call)."""
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        model = module.model
        if getattr(model, "_fsdp_sharded", False):
            return
        mesh = self.device_mesh["data_parallel"]
        trained = {p for p in model.parameters() if p.requires_grad}
        precision = str(getattr(self.precision_plugin, "precision", ""))
        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16) if precision.startswith("bf16") else \
            MixedPrecisionPolicy()
        layers = list(model.engine.layers)
        if model.prune_last_layer and hasattr(model.head, "positions"):
            layers = layers[:-1]
        for layer in layers:
            fully_shard(layer, mesh=mesh, reshard_after_forward=self.reshard_after_forward, mp_policy=policy,
                        ignored_params=trained)
        model._fsdp_sharded = True
        frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
        in_layers = sum(p.numel() for layer in layers for p in layer.parameters() if not p.requires_grad)
        if self.global_rank == 0:
            log.info("FSDP: %d of %d layers sharded over %d processes (%s of %s frozen parameters, %s per process; "
                     "%s trained parameters replicated)%s", len(layers), len(model.engine.layers), mesh.size(),
                     f"{in_layers:,}", f"{frozen:,}", f"{-(-in_layers // mesh.size()) + frozen - in_layers:,}",
                     f"{sum(p.numel() for p in trained):,}",
                     ", bf16 all-gathers" if precision.startswith("bf16") else "")
        for metric in module.metrics.modules():  # every process saw every validation example: no sync
            if hasattr(metric, "sync_on_compute"):
                metric.sync_on_compute, metric._to_sync = False, False

    # ------------------------------------------------------------------ gradients

    def optimizer_step(self, optimizer, closure, model=None, **kwargs) -> Any:
        def reduced():
            out = closure()
            self.average_gradients()
            return out

        return Strategy.optimizer_step(self, optimizer, reduced, model, **kwargs)

    def average_gradients(self) -> None:
        """The trained parameters' gradients averaged over the processes (one all-reduce of one flat buffer);
        a parameter no process gave a gradient keeps None (as on one process: AdamW skips it)."""
        params = [p for p in self.lightning_module.parameters() if p.requires_grad]
        if not params or self.world_size == 1:
            return
        flags = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=self.root_device)
        flat = torch.cat([flags] + [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float()
                                    for p in params])
        torch.distributed.all_reduce(flat)
        offset = len(params)
        for p, flag in zip(params, flat[:len(params)].tolist(), strict=True):
            n = p.numel()
            if flag > 0:
                grad = (flat[offset:offset + n] / self.world_size).view_as(p).to(p.dtype)
                if p.grad is None:
                    p.grad = grad
                else:
                    p.grad.copy_(grad)
            offset += n

    # ------------------------------------------------------------------ checkpoints: trained tensors only

    def lightning_module_state_dict(self) -> dict[str, Any]:
        return self.lightning_module.state_dict()  # TuningModule: the trained tensors, replicated, no gather

    def optimizer_state(self, optimizer) -> dict[str, Any]:
        return getattr(optimizer, "_optimizer", optimizer).state_dict()  # replicated parameters: plain state

    def save_checkpoint(self, checkpoint: dict[str, Any], filepath, storage_options=None) -> None:
        Strategy.save_checkpoint(self, checkpoint, filepath, storage_options)  # rank 0, through AtomicCheckpointIO

    def load_checkpoint(self, checkpoint_path, weights_only: bool | None = None) -> dict[str, Any]:
        return self.checkpoint_io.load_checkpoint(checkpoint_path, weights_only=weights_only)

    def load_model_state_dict(self, checkpoint, strict: bool = True) -> None:
        Strategy.load_model_state_dict(self, checkpoint, strict)

    def load_optimizer_state_dict(self, checkpoint) -> None:
        Strategy.load_optimizer_state_dict(self, checkpoint)

    @property
    def lightning_restore_optimizer(self) -> bool:
        return True
