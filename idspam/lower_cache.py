"""`cache_lower=true`: the frozen lower stack's output for each training example, computed once.

With the backbone frozen and in eval mode (no dropout), the hidden states entering layer m (and the
embedding output the generator may read) are the same in every epoch. The first epoch computes
them and stores each example's real-token rows; later epochs re-pad them into the batch and skip
the lower stack entirely. Padding positions are never attended to, so the results are unchanged.

Storage: in memory when the estimate fits `cache_lower_memory_gb`, otherwise two memory-mapped
files under `<cache_dir>/lower/<key>/`, where the key covers the backbone, the layer, the
tokenisation settings and the training data, so any change starts a fresh cache. The trade-off:
no dropout below m (the backbone must be in eval mode, the default `model.backbone_mode=eval`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from .injection import LowerStates


class LowerCache:
    def __init__(self, num_examples: int, max_length: int, hidden_size: int, same_tensor: bool,
                 folder: Path | None = None):
        """`same_tensor`: at m = 0 the hidden states are the embedding output; store them once."""
        self.same = same_tensor
        self.lengths = np.zeros(num_examples, dtype=np.int32)  # 0: not cached yet
        shape = (num_examples, max_length, hidden_size)
        parts = ("hidden",) if same_tensor else ("hidden", "embeddings")
        if folder is None:
            self.store = {p: torch.zeros(shape) for p in parts}
        else:
            folder.mkdir(parents=True, exist_ok=True)
            lengths = folder / "lengths.npy"
            if lengths.is_file():
                self.lengths = np.load(lengths)
            self.lengths_file = lengths
            self.memmaps = {p: np.lib.format.open_memmap(
                folder / f"{p}.npy", mode="r+" if (folder / f"{p}.npy").is_file() else "w+",
                dtype=np.float32, shape=shape) for p in parts}
            self.store = {p: torch.from_numpy(m) for p, m in self.memmaps.items()}
        self.folder = folder

    def has(self, index: torch.Tensor) -> bool:
        return bool((self.lengths[index.cpu().numpy()] > 0).all())

    def put(self, index: torch.Tensor, states: LowerStates) -> None:
        lengths = states.attention_mask.sum(1).cpu().numpy()
        for row, (i, n) in enumerate(zip(index.cpu().numpy(), lengths, strict=True)):
            self.store["hidden"][i, :n] = states.hidden[row, :n].detach().float().cpu()
            if not self.same:
                self.store["embeddings"][i, :n] = states.embeddings[row, :n].detach().float().cpu()
            self.lengths[i] = n
        if self.folder is not None:  # rows on disk first, then the lengths that mark them present (atomically)
            for m in self.memmaps.values():
                m.flush()
            tmp = self.lengths_file.with_name(".lengths.tmp.npy")
            np.save(tmp, self.lengths)
            os.replace(tmp, self.lengths_file)

    def get(self, index: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor, encoder,
            dtype: torch.dtype) -> LowerStates:
        L = input_ids.shape[1]
        rows = index.cpu()
        device = input_ids.device
        hidden = self.store["hidden"][rows, :L].to(device=device, dtype=dtype)
        embeddings = hidden if self.same else self.store["embeddings"][rows, :L].to(device=device, dtype=dtype)
        return LowerStates(input_ids, attention_mask, embeddings, hidden, _encoder=encoder)

