"""Several torch optimizers stepped as one (e.g. Muon for the hidden matrices, AdamW for the rest).

`Optimizers` offers what the training loop, GradScaler and the checkpoint code use of a
torch.optim.Optimizer: param_groups (all of them, in order), step, zero_grad, state and state_dict,
whose "optimizers" list holds each one's own state_dict.
"""

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
