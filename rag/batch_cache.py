"""What the requests in a running batch share: one key/value cache, and the attention mask, positions and last
tokens that go with it, one row per request.

Rows join left-padded to a common length (the mask hides the padding, positions count only real tokens) and leave
with whatever leading padding no remaining row needs. Only the scheduler's loop thread touches it
(``rag.batching``), so it takes no lock.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any


class BatchCache:
    """The batch's decoding state: ``cache`` (layers of keys/values [B, H, T, D]), ``mask`` [B, T] (1 for real
    tokens), ``positions`` [B] (each row's next position) and ``last`` [B] (each row's last chosen token)."""

    def __init__(self, torch: Any) -> None:
        self.torch = torch
        self.clear()

    def clear(self) -> None:
        self.cache: Any = None
        self.mask: Any = None
        self.positions: Any = None
        self.last: Any = None

    def add(self, cache: Any, mask: Any, positions: Any, last: Any) -> None:
        """One prefilled request joins as the last row; the first one sets the batch up."""
        if self.cache is None:
            self.cache, self.mask, self.positions, self.last = cache, mask, positions, last
        else:
            self._merge(cache, mask, positions, last)

    def _merge(self, cache: Any, mask: Any, positions: Any, last: Any) -> None:
        """Append one request's cache to the batch's, left-padding whichever is shorter."""
        torch = self.torch
        length, new_length = self.mask.shape[1], mask.shape[1]
        target = max(length, new_length)

        def pad(t: Any, by: int) -> Any:  # keys/values [B, H, T, D]: zeros on the left of T
            if by == 0:
                return t
            return torch.cat([t.new_zeros(*t.shape[:2], by, t.shape[3]), t], dim=2)

        for mine, theirs in zip(self.cache.layers, cache.layers, strict=True):
            mine.keys = torch.cat([pad(mine.keys, target - length), pad(theirs.keys, target - new_length)], dim=0)
            mine.values = torch.cat([pad(mine.values, target - length), pad(theirs.values, target - new_length)], dim=0)
        self.mask = torch.cat(
            [
                torch.cat([self.mask.new_zeros(self.mask.shape[0], target - length), self.mask], dim=1),
                torch.cat([mask.new_zeros(1, target - new_length), mask], dim=1),
            ],
            dim=0,
        )
        self.positions = torch.cat([self.positions, positions])
        self.last = torch.cat([self.last, last])

    def decode(self, forward: Callable[..., Any]) -> Any:
        """One forward pass over every row (each row's last token at its next position); that step's logits [B, V].
        The caller sets ``last`` to the tokens it chooses from them."""
        mask = self.torch.cat([self.mask, self.mask.new_ones(self.mask.shape[0], 1)], dim=1)
        out = forward(
            self.cache,
            input_ids=self.last.unsqueeze(1),
            attention_mask=mask,
            position_ids=self.positions.unsqueeze(1),
        )
        self.mask = mask
        self.positions = self.positions + 1
        return out.logits[:, -1, :]

    def keep(self, rows: Sequence[int]) -> None:
        """Keep only ``rows`` (in order), then trim the leading columns no remaining row needs."""
        if not rows:
            self.clear()
            return
        index = self.torch.tensor(rows, device=self.mask.device)
        self.mask = self.mask[index]
        self.positions = self.positions[index]
        self.last = self.last[index]
        lead = int(self.mask.any(dim=0).int().argmax())  # leading columns no remaining request needs
        self.mask = self.mask[:, lead:]
        for layer in self.cache.layers:
            layer.keys = layer.keys[index, :, lead:, :]
            layer.values = layer.values[index, :, lead:, :]
