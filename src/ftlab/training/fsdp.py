"""``hardware=fsdp``: Lightning's :class:`FSDPStrategy` (torch FSDP1) sharding one unit per decoder block.

Why these choices:

* **FSDP1 with ``use_orig_params=True``** (Lightning's default for it): LoRA-family adapters leave
  most of a block frozen, and only ``use_orig_params`` lets frozen and trainable tensors share a
  flat parameter; the optimiser keeps seeing the original parameters the adapter hands it.
* **wrap units** are the decoder-block classes read from the loaded model
  (:func:`ftlab.models.structure.decoder_layer_classes`); when the frozen base is half precision
  (``model.dtype``) every leaf module that trains (LoRA ``A``/``B``) is a unit of its own too:
  FSDP1 flattens a unit's tensors into one buffer of one dtype, and a bf16 base with fp32
  adapters would otherwise mix dtypes in a block.
* **checkpoints gather only what trains** (:func:`gather_trainable`): each rank sends its pieces of
  the trainable tensors (with ``use_orig_params`` a parameter's local shard is a contiguous run of
  its flattened values, in rank order) and rank 0 joins them into whole tensors on its CPU. FSDP's
  own full state dict would gather every frozen base weight first (93 GB per save for a bf16
  Mixtral-8x7B, to keep ~0.1 GB of LoRA), and so would torch's ``get_model_state_dict(...,
  ignore_frozen_params=True)``, which drops the frozen keys only after gathering them. The file is
  the same single trainable-only ``state.ckpt``, record and checks as every other run, and it loads
  on any world size. The optimiser holds only trainable tensors, so FSDP's optimiser-state gather
  moves only their moments to rank 0's CPU (it assembles them unit by unit in a device buffer the
  size of the unit's flat parameter); the state is keyed as a plain optimiser keys it (position in
  its groups), so FSDP, DDP and one-device runs read each other's states; every load is a
  ``weights_only`` load.
* **after the fit** the ranks gather the full model state to rank 0, which takes the FSDP wrappers
  off its module tree and loads it there (:meth:`ShardedStrategy.consolidate`): evaluation, the
  merge and the export (``adapter/``, ``model/``) then run on a plain model as in any other run.
  This is the one time the whole model (frozen base included) sits on rank 0's CPU: its RAM must
  hold the full model once, at the end (evaluation and the merged export need every weight).

Lightning refuses ``FSDPStrategy`` on a CPU accelerator, and torch's FSDP accepts CPU (gloo) only
when it is given ``device_id=cpu`` and gathers without ``offload_to_cpu``; :class:`ShardedStrategy`
does exactly that on CPU so the sharded path is testable with 2 gloo ranks, and leaves the CUDA
path (device ids, CPU offload of gathered states) as Lightning has it.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
from lightning.pytorch.strategies import FSDPStrategy
from lightning.pytorch.trainer.states import TrainerFn
from torch import nn

from ftlab.models.structure import decoder_layer_classes
from ftlab.training.state import safe_load, snapshot_trainable, trainable_shapes


def _trainable_leaf(module: nn.Module) -> bool:
    own = list(module.parameters(recurse=False))
    return bool(own) and not list(module.children()) and all(p.requires_grad for p in own)


def wrap_policy(model: nn.Module):
    """FSDP's auto-wrap policy for ``model``: its decoder blocks, and (when a half-precision frozen
    base holds fp32 adapters) each leaf module that trains, so every flat parameter holds tensors of
    one dtype. A leaf unit holds its weight whole only inside its own forward, so adapters that read
    their weights elsewhere (DoRA's norm, masked LoRA's delta) need one dtype (:func:`fsdp_problem`)."""
    from torch.distributed.fsdp.wrap import _or_policy, lambda_auto_wrap_policy, transformer_auto_wrap_policy

    blocks = functools.partial(transformer_auto_wrap_policy, transformer_layer_cls=decoder_layer_classes(model))
    if len({p.dtype for p in model.parameters()}) == 1:
        return blocks
    leaves = functools.partial(lambda_auto_wrap_policy, lambda_fn=_trainable_leaf)
    return functools.partial(_or_policy, policies=[blocks, leaves])


class ShardedStrategy(FSDPStrategy):
    """Lightning's FSDP strategy with two additions: the CPU (gloo) path, and the step after the
    fit that gives rank 0 a plain, whole model (:meth:`consolidate`)."""

    def _setup_model(self, model: nn.Module) -> nn.Module:
        snapshot_trainable(model)  # names/shapes of what trains, before FSDP makes them flat shards
        self._plain_buffers = {n: b.detach().clone() for n, b in _non_persistent_buffers(model)}
        if self.root_device.type != "cpu":
            return super()._setup_model(model)
        from torch.distributed.fsdp import FullyShardedDataParallel

        # Lightning passes device_id=root_device.index (None on CPU), which torch's FSDP refuses
        # without an accelerator; device_id=cpu selects its CPU path.
        return FullyShardedDataParallel(module=model, cpu_offload=self.cpu_offload,
                                        mixed_precision=self.mixed_precision_config,
                                        sharding_strategy=self.sharding_strategy, device_id=self.root_device,
                                        **self.kwargs)

    def _full_state(self, rank0_only: bool):
        """FSDP's full-state-dict context. On CPU without ``offload_to_cpu``: there torch's offload
        frees the storage of the tensors it returns (the "copy" to the CPU is the same tensor)."""
        from torch.distributed.fsdp import FullStateDictConfig, StateDictType
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
        from torch.distributed.fsdp.api import FullOptimStateDictConfig

        offload = self.root_device.type != "cpu"
        return FSDP.state_dict_type(self.model, StateDictType.FULL_STATE_DICT,
                                    FullStateDictConfig(offload_to_cpu=offload, rank0_only=rank0_only),
                                    FullOptimStateDictConfig(offload_to_cpu=offload, rank0_only=rank0_only))

    def lightning_module_state_dict(self) -> dict[str, Any]:
        """Collective: the whole trainable tensors on rank 0's CPU (``{}`` on other ranks); frozen
        weights are neither gathered nor copied (:func:`gather_trainable`)."""
        return gather_trainable(self.model, trainable_shapes(self.lightning_module), self.root_device)

    def optimizer_state(self, optimizer) -> dict[str, Any]:
        """The full optimiser state keyed as a plain optimiser keys it (position in its parameter
        groups), so a state written by FSDP, DDP or one device loads into any of them; Lightning's
        own FSDP keys it by position among *all* the model's parameters."""
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
        from torch.distributed.fsdp import OptimStateKeyType

        optimizer = getattr(optimizer, "_optimizer", optimizer)  # LightningOptimizer -> torch's
        with self._full_state(rank0_only=True):
            state = FSDP.optim_state_dict(self.model, optimizer)
        if self.global_rank != 0:
            return state
        return FSDP.rekey_optim_state_dict(state, OptimStateKeyType.PARAM_ID, self.model, optim=optimizer)

    def load_checkpoint(self, checkpoint_path, weights_only: bool | None = None) -> dict[str, Any]:
        """Every rank reads the (trainable-only) state file, loads the tensors into its shards and
        the optimiser state (re-keyed by name for FSDP); the rest goes to Lightning's hooks. A
        plain-tensor load (``weights_only``), as every ftlab state is."""
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
        from torch.distributed.fsdp import OptimStateKeyType

        path = self.broadcast(checkpoint_path)
        checkpoint = safe_load(path)
        with self._full_state(rank0_only=False):
            self.model.load_state_dict(checkpoint.pop("state_dict"), strict=False)
            if self.lightning_module.trainer.state.fn == TrainerFn.FITTING:
                for optimizer, state in zip(self.optimizers, checkpoint.get("optimizer_states", [])):
                    optimizer = getattr(optimizer, "_optimizer", optimizer)
                    if state["state"] and isinstance(next(iter(state["state"])), int):
                        state = FSDP.rekey_optim_state_dict(state, OptimStateKeyType.PARAM_NAME, self.model,
                                                            optim=optimizer)
                    optimizer.load_state_dict(FSDP.optim_state_dict_to_load(model=self.model, optim=optimizer,
                                                                             optim_state_dict=state))
        return checkpoint

    def consolidate(self) -> None:
        """Collective: every rank calls it after the fit. Gathers the full state (CPU, rank 0 only),
        then rank 0 removes the FSDP wrappers from its LightningModule and loads that state into
        it (on the training device); other ranks keep their shards and leave."""
        with self._full_state(rank0_only=True):
            state = self.model.state_dict()
        self.barrier("ftlab-consolidate")
        if self.global_rank != 0:
            return
        module = self.lightning_module
        unwrap_(module)
        assign_state_(module, state)
        for name, value in self._plain_buffers.items():  # mixed precision cast these; restore the originals
            owner, _, leaf = name.rpartition(".")
            module.get_submodule(owner).register_buffer(leaf, value, persistent=False)
        module.to(self.root_device)
        self.model = module


def gather_trainable(root: nn.Module, shapes: dict[str, list[int]], device: torch.device) -> dict[str, torch.Tensor]:
    """Collective over ``root``'s process group: ``{name: whole tensor}`` of the trainable
    parameters named in ``shapes`` on rank 0's CPU, ``{}`` elsewhere. With ``use_orig_params``
    each rank's view of a parameter is its slice of the parameter's flattened values (possibly
    empty; the whole tensor when unsharded) and the slices follow rank order, so concatenating them
    restores the tensor. Only these slices travel (one gather per dtype, via ``device``, which
    NCCL needs); frozen weights are never touched."""
    import torch.distributed as dist
    from torch.distributed.fsdp._common_utils import clean_tensor_name

    group = getattr(root, "process_group", None)
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    local = {clean_tensor_name(n): p for n, p in root.named_parameters() if p.requires_grad}
    if set(local) != set(shapes):
        raise RuntimeError(f"sharded trainable parameters do not match the record: "
                           f"{sorted(set(local) ^ set(shapes))[:3]}")
    out: dict[str, torch.Tensor] = {}
    for dtype in sorted({p.dtype for p in local.values()}, key=str):
        names = [n for n in shapes if local[n].dtype == dtype]
        pieces = [local[n].detach().reshape(-1).to(device) for n in names]
        counts = torch.tensor([p.numel() for p in pieces], dtype=torch.int64, device=device)
        all_counts = [torch.empty_like(counts) for _ in range(world)]
        dist.all_gather(all_counts, counts, group=group)
        width = max(int(c.sum()) for c in all_counts)
        flat = torch.zeros(width, dtype=dtype, device=device)
        flat[: int(counts.sum())] = torch.cat(pieces)
        received = [torch.empty_like(flat) for _ in range(world)] if rank == 0 else None
        dist.gather(flat, received, dst=dist.get_global_rank(group, 0) if group is not None else 0, group=group)
        if rank != 0:
            continue
        per_rank = [buf[: int(c.sum())].split(c.tolist()) for buf, c in zip(received, all_counts)]
        for i, name in enumerate(names):
            whole = torch.cat([parts[i] for parts in per_rank])
            if whole.numel() != math.prod(shapes[name]):
                raise RuntimeError(f"the shards of {name!r} hold {whole.numel()} values, its shape is {shapes[name]}")
            out[name] = whole.view(shapes[name]).to("cpu", copy=True)
    return {n: out[n] for n in shapes if n in out}


def _non_persistent_buffers(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    saved = set(model.state_dict())
    return [(n, b) for n, b in model.named_buffers() if n not in saved]


def assign_state_(module: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Put ``state``'s whole tensors in place of the (flat-shard) parameters and buffers of an
    unwrapped module: ``load_state_dict`` would compare them with the shard shapes. Every key
    must exist; tied parameters stay tied (one new parameter per old one)."""
    names = {n for n, _ in module.named_parameters(remove_duplicate=False)}
    names |= {n for n, _ in module.named_buffers(remove_duplicate=False)}
    missing = sorted(names & set(module.state_dict()) - set(state))  # non-persistent buffers stay
    if missing or set(state) - names:
        raise RuntimeError(f"gathered FSDP state does not fit the unwrapped model: missing {missing[:3]}, "
                           f"unknown {sorted(set(state) - names)[:3]}")
    replaced: dict[int, nn.Parameter] = {}
    for name, value in state.items():
        owner_name, _, leaf = name.rpartition(".")
        owner = module.get_submodule(owner_name)
        old = owner._parameters.get(leaf)
        if old is None:
            owner._buffers[leaf] = value
            continue
        if id(old) not in replaced:
            replaced[id(old)] = nn.Parameter(value, requires_grad=old.requires_grad)
        owner._parameters[leaf] = replaced[id(old)]


def unwrap_(module: nn.Module) -> None:
    """Replace every FSDP wrapper below ``module`` by the module it wraps, in place."""
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    for name, child in list(module.named_children()):
        if isinstance(child, FSDP):
            child = child.module
            setattr(module, name, child)
        unwrap_(child)


def fsdp_strategy(cfg: Any, model: nn.Module | None = None) -> ShardedStrategy:
    """The strategy of a ``hardware.strategy=fsdp`` run (``model``: the module to be sharded, from
    which the wrap units are read; ``None`` for the preflight's trial Trainer)."""
    return ShardedStrategy(auto_wrap_policy=wrap_policy(model) if model is not None else None,
                           sharding_strategy="FULL_SHARD", state_dict_type="full", use_orig_params=True)
