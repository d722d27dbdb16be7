"""Batches of random windows from a prepared token file: seeded, resumable, light on memory."""

from pathlib import Path

import numpy as np
import torch

from data.config import DataError
from data.prepare import load_meta, split_file


class BatchSampler:
    """Draws batch_size random windows of block_size + 1 tokens from data/<name>/<split>.bin.

    Each window w gives inputs x = w[:-1] and next-token targets y = w[1:], both (B, T). The start
    positions come from a seeded torch.Generator, whose state `state_dict` saves and
    `load_state_dict` restores, so a resumed run draws the batches it would have drawn.
    """

    def __init__(self, data_dir: Path, split: str, block_size: int, batch_size: int, seed: int,
                 device: torch.device | str = "cpu", meta: dict | None = None):
        meta = load_meta(Path(data_dir)) if meta is None else meta
        self.path, self.dtype, self.n_tokens = split_file(Path(data_dir), split, meta)
        if self.n_tokens < block_size + 1:
            raise DataError(f"{self.path} holds {self.n_tokens} tokens, fewer than block_size + 1 = "
                            f"{block_size + 1}: use more text or a smaller block_size")
        self.block_size, self.batch_size = block_size, batch_size
        self.device = torch.device(device)
        self.generator = torch.Generator().manual_seed(seed)
        self.offsets = np.arange(block_size + 1)  # (T+1,)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        # a window starting at s covers s .. s + block_size, so s < n_tokens - block_size
        starts = torch.randint(self.n_tokens - self.block_size, (self.batch_size,), generator=self.generator)
        # A fresh memory map per batch, as nanoGPT does: pages read through one long-lived map count
        # as this process's resident memory, which would creep up to the file's size over a long run.
        tokens = np.memmap(self.path, dtype=self.dtype, mode="r")
        windows = tokens[starts.numpy()[:, None] + self.offsets]  # (B, T+1), copied out of the map
        del tokens
        windows = torch.from_numpy(windows.astype(np.int64))  # (B, T+1)
        if self.device.type == "cuda":  # pinned memory lets the copy run while the GPU computes
            windows = windows.pin_memory().to(self.device, non_blocking=True)
        elif self.device.type != "cpu":
            windows = windows.to(self.device)
        return windows[:, :-1], windows[:, 1:]  # x (B, T), y (B, T)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


def fixed_batches(data_dir: Path, split: str, block_size: int, batch_size: int, n_batches: int,
                  seed: int = 1337, device: torch.device | str = "cpu") -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The same n_batches batches every time: evaluate on these so losses compare across steps and runs."""
    sampler = BatchSampler(data_dir, split, block_size, batch_size, seed, device)
    return [sampler.next_batch() for _ in range(n_batches)]
