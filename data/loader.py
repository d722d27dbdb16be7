"""Batches of random windows from a prepared split's shards: seeded, resumable, flat in memory.

A split may be any number of shards of any size (billions of tokens): positions are int64 from the
generator to the memory map, so no index overflows at 2^31 tokens or at uint16's 65,536.
"""

from pathlib import Path

import numpy as np
import torch

from data.config import DataError
from data.shards import load_meta, split_shards


class BatchSampler:
    """Draws batch_size random windows of block_size + 1 tokens from data/<name>/<split>_*.bin.

    Each window w gives inputs x = w[:-1] and next-token targets y = w[1:], both (B, T). A window lies
    inside one shard: its start is drawn uniformly from all the starts of all the shards (a shard of
    n tokens has n - block_size of them) by a seeded torch.Generator, whose state `state_dict` saves
    and `load_state_dict` restores, so a resumed run draws the batches it would have drawn.
    """

    def __init__(self, data_dir: Path, split: str, block_size: int, batch_size: int, seed: int,
                 device: torch.device | str = "cpu", meta: dict | None = None):
        meta = load_meta(Path(data_dir)) if meta is None else meta
        self.dtype = np.dtype(meta["dtype"])
        shards = split_shards(Path(data_dir), split, meta)
        self.n_tokens = sum(n for _, n in shards)
        shards = [(path, n) for path, n in shards if n >= block_size + 1]  # too short for a window: never drawn
        if not shards:
            raise DataError(f"the {split} split of {data_dir} holds {self.n_tokens} tokens, fewer than block_size + 1 = "
                            f"{block_size + 1} in any shard: use more text or a smaller block_size")
        self.paths = [path for path, _ in shards]
        starts = np.array([n - block_size for _, n in shards], dtype=np.int64)  # window starts per shard
        self.first_start = np.concatenate([[0], np.cumsum(starts)])  # (shards + 1,): global index of each shard's first
        self.block_size, self.batch_size = block_size, batch_size
        self.device = torch.device(device)
        self.generator = torch.Generator().manual_seed(seed)
        self.offsets = np.arange(block_size + 1, dtype=np.int64)  # (T+1,)

    def windows(self, starts: np.ndarray) -> np.ndarray:
        """The windows at global start indices (B,) int64: (B, T+1) int64 tokens."""
        shard = np.searchsorted(self.first_start, starts, side="right") - 1  # (B,)
        local = starts - self.first_start[shard]  # (B,) start within its shard
        out = np.empty((len(starts), self.block_size + 1), dtype=np.int64)
        for s in np.unique(shard):
            # A fresh memory map per batch, as nanoGPT does: pages read through one long-lived map count
            # as this process's resident memory, which would creep up to the file's size over a long run.
            tokens = np.memmap(self.paths[s], dtype=self.dtype, mode="r")
            rows = shard == s
            out[rows] = tokens[local[rows, None] + self.offsets]  # copied out of the map
            del tokens
        return out

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        starts = torch.randint(int(self.first_start[-1]), (self.batch_size,), generator=self.generator)  # int64
        return self.on_device(torch.from_numpy(self.windows(starts.numpy())))  # (B, T+1)

    def on_device(self, windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Windows (B, T+1) as training gets them: on the device, then x (B, T) and y (B, T) as views of one
        tensor (strides (T+1, 1)). torch.compile guards on strides, so whatever warms it up is made here too."""
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
