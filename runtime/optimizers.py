"""Several torch optimizers stepped as one (e.g. Muon for the hidden matrices, AdamW for the rest), and
Muon with its orthogonalisation in the dtype that is fast on the machine.

`Optimizers` offers what the training loop, GradScaler and the checkpoint code use of a
torch.optim.Optimizer: param_groups (all of them, in order), step, zero_grad, state and state_dict,
whose "optimizers" list holds each one's own state_dict.
"""

import math

import torch


class Optimizers:
    def __init__(self, *optimizers: torch.optim.Optimizer):
        self.optimizers = list(optimizers)

    @property
    def param_groups(self) -> list[dict]:
        return [g for o in self.optimizers for g in o.param_groups]

    @property
    def state(self) -> dict:
        return {p: s for o in self.optimizers for p, s in o.state.items()}

    @torch.no_grad()
    def step(self) -> None:
        for o in self.optimizers:
            o.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {"optimizers": [o.state_dict() for o in self.optimizers]}

    def load_state_dict(self, state: dict) -> None:
        if len(state.get("optimizers", [])) != len(self.optimizers):
            raise ValueError(f"the state holds {len(state.get('optimizers', []))} optimizers, not {len(self.optimizers)}")
        for o, s in zip(self.optimizers, state["optimizers"], strict=True):
            o.load_state_dict(s)


class Muon(torch.optim.Muon):
    """torch.optim.Muon, with the Newton-Schulz iteration in a dtype of the caller's choice.

    torch's Muon always orthogonalises in bf16: fast where bf16 matmuls are native (CUDA, CPUs with
    AVX-512 BF16 or AMX), but emulated elsewhere, and then the optimizer step costs more than the forward
    and backward passes (most laptop CPUs; on an AVX2-only CPU a bf16 matmul is hundreds of times slower
    than fp32). `ns_dtype` (from `runtime.devices.fast_matmul_dtype`) picks bf16 where it is native and
    fp32 elsewhere. The settings, the state (one momentum buffer per matrix) and its state_dict are
    torch's, so checkpoints move between the two. The step, for each matrix W with gradient G:

        M <- momentum * M + (1 - momentum) * G                  the momentum buffer
        U  = (1 - momentum) * G + momentum * M   (nesterov)     else U = M
        X  = U / ||U||_F, as the wide matrix (rows <= columns)  so every singular value is <= 1
        5 times: A = X X^T;  X <- a X + (b A + c A A) X         pushes the singular values towards 1
        W <- W (1 - lr * weight_decay) - lr * sqrt(max(1, rows / columns)) * X
    """

    def __init__(self, params, ns_dtype: torch.dtype = torch.bfloat16, **settings):
        super().__init__(params, **settings)
        self.ns_dtype = ns_dtype

    @torch.no_grad()
    def step(self, closure=None) -> None:
        """One step for every matrix; the matrices of one shape (as wide matrices: a tall one transposed)
        orthogonalise together, as one batch of matmuls: model=mini's 28 matrices are 2 batches, and
        model=small's 42 are 2, instead of one small matmul (and its launch) at a time."""
        for group in self.param_groups:
            if group["adjust_lr_fn"] not in (None, "original"):
                raise ValueError(f"adjust_lr_fn={group['adjust_lr_fn']!r}: only torch's original scaling is offered")
            beta, batches = group["momentum"], {}
            for p in group["params"]:
                if p.grad is not None:
                    wide = tuple(sorted(p.shape))  # (rows, columns) of the wide form: rows <= columns
                    batches.setdefault((wide, p.dtype, p.device), []).append(p)
            for params in batches.values():
                grads = [p.grad for p in params]
                bufs = [self.state[p].setdefault("momentum_buffer", torch.zeros_like(p.grad)) for p in params]
                torch._foreach_lerp_(bufs, grads, 1 - beta)
                updates = torch._foreach_lerp(grads, bufs, beta) if group["nesterov"] else bufs
                wide_updates = [u if u.size(0) <= u.size(1) else u.T for u in updates]  # (r, s), r <= s
                # a lone matrix stays 2-D: the same kernels as torch's Muon, so its update is torch's bit for bit
                stacked = wide_updates[0] if len(params) == 1 else torch.stack(wide_updates)  # (n, r, s)
                x = orthogonalise(stacked, group["ns_coefficients"], group["ns_steps"], group["eps"], self.ns_dtype)
                for p, xi in zip(params, x.unbind(0) if len(params) > 1 else [x], strict=True):
                    rows, cols = p.shape
                    p.mul_(1 - group["lr"] * group["weight_decay"])
                    p.add_(xi if rows <= cols else xi.T, alpha=-group["lr"] * math.sqrt(max(1.0, rows / cols)))


def orthogonalise(g: torch.Tensor, coefficients: tuple[float, float, float], steps: int, eps: float,
                  dtype: torch.dtype) -> torch.Tensor:
    """Muon's quintic Newton-Schulz iteration in dtype: g (..., r, s), one matrix or a batch of them, with
    each matrix's singular values pushed into about [0.7, 1.2] (not exactly 1: these coefficients trade
    exactness for speed, which training does not mind)."""
    a, b, c = coefficients
    wide = g.size(-2) <= g.size(-1)
    x = g.to(dtype) if wide else g.to(dtype).mT  # (..., r, s), r <= s: the Gram matrix X X^T is the small one
    norm = x.norm() if x.dim() == 2 else x.norm(dim=(-2, -1), keepdim=True)  # each matrix's Frobenius norm
    x = x / norm.clamp(min=eps)
    add_mm = torch.addmm if x.dim() == 2 else torch.baddbmm  # beta * M + alpha * A @ B, in one kernel
    for _ in range(steps):
        gram = x @ x.mT  # (..., r, r)
        x = add_mm(x, add_mm(gram, gram, gram, beta=b, alpha=c), x, beta=a)  # a X + (b A + c A A) X
    return x if wide else x.mT
