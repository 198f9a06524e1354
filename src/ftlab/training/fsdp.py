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
* **after the fit** rank 0 gets a plain, whole model back without gathering the frozen base
  (:meth:`ShardedStrategy.consolidate`): frozen weights never change, so before wrapping rank 0
  keeps a reference to each frozen tensor (FSDP flattens them into new buffers and never writes the
  originals; other ranks keep nothing), the ranks gather only the trainable tensors
  (:func:`gather_trainable`), and rank 0 takes the FSDP wrappers off its module tree and puts the
  kept frozen tensors and the gathered trainable ones in place (:func:`rebuild_`). Evaluation, the
  merge and the export (``adapter/``, ``model/``) then run on a plain model as in any other run.
  Rank 0's CPU RAM holds the base it loaded once, through the fit (every rank held it until
  wrapping; the others drop it): no second copy, and no gather of 93 GB for a bf16 Mixtral-8x7B.
  FSDP's own full state dict is also wrong here: on one device (FSDP switches to ``NO_SHARD``)
  under a mixed-precision policy, torch's ``use_orig_params`` does not re-register a frozen
  half-precision unit's original parameters after backward (a unit without gradients gets no
  post-backward reshard), so they are missing from its gathered state and from
  ``summon_full_params`` (the bf16-base run on an H200 failed there).

Lightning refuses ``FSDPStrategy`` on a CPU accelerator, and torch's FSDP accepts CPU (gloo) only
when it is given ``device_id=cpu`` and gathers without ``offload_to_cpu``; :class:`ShardedStrategy`
does exactly that on CPU so the sharded path is testable with 2 gloo ranks, and leaves the CUDA
path (device ids, CPU offload of gathered states) as Lightning has it.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from lightning.pytorch.strategies import FSDPStrategy
from lightning.pytorch.trainer.states import TrainerFn
from torch import nn
from torch.distributed.fsdp import FullStateDictConfig, OptimStateKeyType, StateDictType
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
from torch.distributed.fsdp._common_utils import clean_tensor_name  # private; in torch since 2.0
from torch.distributed.fsdp.api import FullOptimStateDictConfig
from torch.distributed.fsdp.wrap import _or_policy, lambda_auto_wrap_policy, transformer_auto_wrap_policy

from ftlab.models.structure import decoder_layer_classes
from ftlab.training.state import read_state, snapshot_trainable, trainable_shapes


def _trainable_leaf(module: nn.Module) -> bool:
    own = list(module.parameters(recurse=False))
    return bool(own) and not list(module.children()) and all(p.requires_grad for p in own)


def wrap_policy(model: nn.Module):
    """FSDP's auto-wrap policy for ``model``: its decoder blocks, and (when a half-precision frozen
    base holds fp32 adapters) each leaf module that trains, so every flat parameter holds tensors of
    one dtype. A leaf unit holds its weight whole only inside its own forward, so adapters that read
    their weights elsewhere (DoRA's norm, masked LoRA's delta) need one dtype (:func:`fsdp_problem`)."""

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
        self._plain = plain_parts(model, keep_values=self.global_rank == 0)  # rank 0 rebuilds from these
        if self.root_device.type != "cpu":
            return super()._setup_model(model)

        # Lightning passes device_id=root_device.index (None on CPU), which torch's FSDP refuses
        # without an accelerator; device_id=cpu selects its CPU path.
        return FSDP(module=model, cpu_offload=self.cpu_offload,
                                        mixed_precision=self.mixed_precision_config,
                                        sharding_strategy=self.sharding_strategy, device_id=self.root_device,
                                        **self.kwargs)

    def _full_state(self, rank0_only: bool):
        """FSDP's full-state-dict context. On CPU without ``offload_to_cpu``: there torch's offload
        frees the storage of the tensors it returns (the "copy" to the CPU is the same tensor)."""

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

        optimizer = getattr(optimizer, "_optimizer", optimizer)  # LightningOptimizer -> torch's
        with self._full_state(rank0_only=True):
            state = FSDP.optim_state_dict(self.model, optimizer)
        if self.global_rank != 0:
            return state
        return FSDP.rekey_optim_state_dict(state, OptimStateKeyType.PARAM_ID, self.model, optim=optimizer)

    def load_checkpoint(self, checkpoint_path, weights_only: bool | None = None) -> dict[str, Any]:
        """Every rank reads the (trainable-only) state file, loads the tensors into its shards and
        the optimiser state (re-keyed by name for FSDP); the rest goes to Lightning's hooks. A
        plain-tensor load (``weights_only``), as every ftlab state is; an older format is migrated
        first (a format-1 state's frozen weights are dropped before anything is loaded)."""

        path = self.broadcast(checkpoint_path)
        checkpoint = read_state(path, self.lightning_module)
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
        """Collective: every rank calls it after the fit. The ranks gather the trainable tensors to
        rank 0 (:func:`gather_trainable`); rank 0 removes the FSDP wrappers from its LightningModule
        and rebuilds its parameters from those and the frozen tensors it kept before wrapping
        (:func:`rebuild_`), on the training device; other ranks keep their shards and leave."""
        trainable = gather_trainable(self.model, trainable_shapes(self.lightning_module), self.root_device)
        self.barrier("ftlab-consolidate")
        if self.global_rank != 0:
            return
        module = self.lightning_module
        unwrap_(module)
        rebuild_(module, self._plain, trainable)
        self._plain = None
        module.to(self.root_device)
        self.model = module


def gather_trainable(root: nn.Module, shapes: dict[str, list[int]], device: torch.device) -> dict[str, torch.Tensor]:
    """Collective over ``root``'s process group: ``{name: whole tensor}`` of the trainable
    parameters named in ``shapes`` on rank 0's CPU, ``{}`` elsewhere. With ``use_orig_params``
    each rank's view of a parameter is its slice of the parameter's flattened values (possibly
    empty; the whole tensor when unsharded) and the slices follow rank order, so concatenating them
    restores the tensor. Only these slices travel (one gather per dtype, via ``device``, which
    NCCL needs); frozen weights are never touched."""

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


@dataclass
class PlainParts:
    """What rank 0 rebuilds a plain model from after the fit: every parameter as the tuple of its
    names (tied names share one parameter) with its frozen tensor (``None`` for a trainable one,
    which is gathered), and every buffer with its value and whether the state dict holds it."""

    params: list[tuple[tuple[str, ...], torch.Tensor | None]]
    buffers: dict[str, tuple[torch.Tensor, bool]]


def plain_parts(model: nn.Module, keep_values: bool) -> PlainParts:
    """The layout of ``model`` before FSDP wraps it, and with ``keep_values`` its frozen tensors and
    buffers. A frozen tensor is kept by reference, not copied (a 47B base must not exist twice):
    FSDP copies the parameters into its flat buffers and points the modules at views of those, and
    it never writes the original storage, so the kept tensor still holds the pre-wrap values after
    the fit. A tensor not on the CPU is moved there (the device would otherwise hold it whole).
    Buffers are copied: they are small, and a mixed-precision policy casts them."""
    names: dict[int, list[str]] = {}
    tensors: dict[int, nn.Parameter] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(p), []).append(name)
        tensors[id(p)] = p
    params = [(tuple(n), tensors[k].detach().to("cpu") if keep_values and not tensors[k].requires_grad else None)
              for k, n in names.items()]
    saved = set(model.state_dict())
    buffers = {n: (b.detach().to("cpu", copy=True) if keep_values else torch.empty(0), n in saved)
               for n, b in model.named_buffers(remove_duplicate=False)}
    return PlainParts(params, buffers)


def rebuild_(module: nn.Module, parts: PlainParts, trainable: dict[str, torch.Tensor]) -> None:
    """Give an unwrapped module (:func:`unwrap_`) whole parameters and buffers in place of FSDP's
    views (flat-shard views, or plain tensors it left after backward): each parameter from
    ``parts`` (frozen) or ``trainable`` (gathered, keyed by its first name), tied names sharing one
    new parameter, and the buffers ``parts`` kept. Every trainable name must be gathered."""
    expected = {ns[0] for ns, value in parts.params if value is None}
    if set(trainable) != expected:
        raise RuntimeError(f"the gathered trainable tensors do not fit the model: missing "
                           f"{sorted(expected - set(trainable))[:3]}, unknown {sorted(set(trainable) - expected)[:3]}")
    for names, value in parts.params:
        param = nn.Parameter(trainable[names[0]] if value is None else value, requires_grad=value is None)
        for name in names:
            _replace(module, name, lambda owner, leaf, p=param: owner.register_parameter(leaf, p))
    for name, (value, persistent) in parts.buffers.items():
        _replace(module, name, lambda owner, leaf, v=value, keep=persistent: owner.register_buffer(leaf, v, keep))


def _replace(module: nn.Module, name: str, register) -> None:
    owner_name, _, leaf = name.rpartition(".")
    owner = module.get_submodule(owner_name)
    if hasattr(owner, leaf):  # a parameter, a buffer, or the plain tensor attribute FSDP's views leave
        delattr(owner, leaf)
    register(owner, leaf)


def unwrap_(module: nn.Module) -> None:
    """Replace every FSDP wrapper below ``module`` by the module it wraps, in place."""

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
