"""How the model is spread over torchrun's processes, and gathered whole again for checkpoints.

DDP (the default): every process holds the whole model, optimizer state included; the gradients are
averaged over the processes in the last backward pass of each step.
FSDP2 (fsdp=true): `torch.distributed.fsdp.fully_shard` on each block, then on the whole model: each
process keeps 1/N of every parameter, gradient and optimizer state, and each block's parameters are
gathered just for its forward and backward. For models whose optimizer state does not fit one GPU.

Either way a checkpoint holds the whole, unsharded state in the plain format (`model.state_dict()`,
`optimizer.state_dict()` numbering the parameters 0, 1, ...), so a checkpoint written under FSDP loads
in one process, under DDP, or under FSDP with the same number of processes.
"""

from contextlib import contextmanager, nullcontext

import torch
import torch.nn as nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel as DDP

WHOLE = StateDictOptions(full_state_dict=True, cpu_offload=True)  # gathered, on the CPU


def shard(model: nn.Module, compile_blocks: bool = False, param_dtype: torch.dtype | None = None) -> nn.Module:
    """FSDP2: each block is one unit of parameters gathered together, then the rest (embedding, head, norm).

    compile_blocks: each block compiled before it is sharded, in place (torchtitan's order): FSDP's hooks,
    which the compiler does not trace, stay between the compiled blocks instead of breaking one graph of
    the whole model. param_dtype: the dtype parameters are gathered and computed in (bf16 on a GPU: half
    the all-gather's bytes); gradients are still averaged in fp32."""
    policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32) if param_dtype else None
    kw = {"mp_policy": policy} if policy else {}
    for block in model.blocks:
        if compile_blocks:
            block.compile()
        fully_shard(block, **kw)
    fully_shard(model, **kw)
    return model


def uncompiled(model: nn.Module) -> nn.Module:
    """model without torch.compile: its compiled wrapper's module, and every block compiled in place made eager."""
    model = getattr(model, "_orig_mod", model)
    for module in model.modules():
        if getattr(module, "_compiled_call_impl", None) is not None:
            module._compiled_call_impl = None
    return model


def is_sharded(model: nn.Module) -> bool:
    return isinstance(model, FSDPModule)


@contextmanager
def gradient_sync(model: nn.Module, sync: bool):
    """Backward passes inside average the gradients over the processes only when sync is true, so the
    micro-batches of one step communicate once. `model` is what the loop calls (DDP, compiled, FSDP)."""
    inner = getattr(model, "_orig_mod", model)  # under torch.compile
    if isinstance(inner, DDP):
        with nullcontext() if sync else inner.no_sync():
            yield
        return
    if isinstance(inner, FSDPModule):
        inner.set_requires_gradient_sync(sync)
    yield


def whole(t: torch.Tensor) -> torch.Tensor:
    """A sharded (DTensor) value gathered whole; a plain tensor as it is."""
    return t.full_tensor() if isinstance(t, DTensor) else t


def model_state(model: nn.Module) -> dict:
    """The model's whole state_dict. Under FSDP every process must call it (it gathers the shards)."""
    return get_model_state_dict(model, options=WHOLE) if is_sharded(model) else model.state_dict()


def load_model_state(model: nn.Module, state: dict) -> None:
    if is_sharded(model):
        set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True))
    else:
        model.load_state_dict(state)


def parameter_names(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """The name of each parameter in the optimizer's order: the plain format's parameter numbers."""
    names = {p: n for n, p in model.named_parameters()}
    return [names[p] for group in optimizer.param_groups for p in group["params"]]


def optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """The optimizer's whole state in the plain format. Under FSDP every process must call it."""
    if hasattr(optimizer, "optimizers"):  # runtime.optimizers.Optimizers: each one's state
        return {"optimizers": [optimizer_state(model, o) for o in optimizer.optimizers]}
    if not is_sharded(model):
        return optimizer.state_dict()
    by_name = get_optimizer_state_dict(model, optimizer, options=WHOLE)  # keyed by parameter name
    number = {name: i for i, name in enumerate(parameter_names(model, optimizer))}
    return {"state": {number[name]: s for name, s in by_name.get("state", {}).items()},
            "param_groups": [{**g, "params": [number[name] for name in g["params"]]}
                             for g in by_name.get("param_groups", [])]}


def load_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    if hasattr(optimizer, "optimizers"):
        if len(state.get("optimizers", [])) != len(optimizer.optimizers):
            raise ValueError("the checkpoint's optimizer state is not this optimizer's (another optim.name?)")
        for o, s in zip(optimizer.optimizers, state["optimizers"], strict=True):
            load_optimizer_state(model, o, s)
        return
    if not is_sharded(model):
        optimizer.load_state_dict(state)
        return
    names = parameter_names(model, optimizer)
    by_name = {"state": {names[i]: s for i, s in state["state"].items()},
               "param_groups": [{**g, "params": [names[i] for i in g["params"]]} for g in state["param_groups"]]}
    set_optimizer_state_dict(model, optimizer, by_name, options=StateDictOptions(full_state_dict=True))
