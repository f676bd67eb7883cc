"""Averages of parameter lists over optimizer steps, with ``torch._foreach_*`` (no per-tensor loops).

Three shapes cover the paper: a ring of the last K snapshots (SDV's voters), the mean of that ring
kept with a running sum (SDA's teacher, eq. 6), and an O(1)-memory cumulative mean (SE, eq. 4, and
SDA with K = T−1).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor


def _clone_zeros(like: Sequence[Tensor]) -> list[Tensor]:
    return [torch.zeros_like(t, memory_format=torch.contiguous_format) for t in like]


class ParameterRing:
    """The last ``size`` pushed parameter lists; the oldest slot is overwritten first."""

    def __init__(self, like: Sequence[Tensor], size: int) -> None:
        if size < 1:
            raise ValueError(f"ring size must be >= 1 (got {size})")
        self.size = size
        self.slots: list[list[Tensor]] = [_clone_zeros(like) for _ in range(size)]
        self.pushes = 0

    @property
    def count(self) -> int:
        """How many snapshots are held (at most ``size``)."""
        return min(self.pushes, self.size)

    @property
    def next_slot(self) -> list[Tensor]:
        """The slot the next push overwrites (the oldest snapshot once the ring is full)."""
        return self.slots[self.pushes % self.size]

    @torch.no_grad()
    def push(self, params: Sequence[Tensor]) -> None:
        """Store a copy of ``params`` in the oldest slot."""
        torch._foreach_copy_(self.next_slot, list(params))
        self.pushes += 1

    def snapshots(self) -> list[list[Tensor]]:
        """The held snapshots, oldest first."""
        if self.pushes <= self.size:
            return self.slots[: self.pushes]
        start = self.pushes % self.size
        return self.slots[start:] + self.slots[:start]

    def state_dict(self) -> dict[str, Any]:
        return {"pushes": self.pushes, "slots": [[t.clone() for t in s] for s in self.slots]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if len(state["slots"]) != self.size:
            raise ValueError(f"checkpoint holds {len(state['slots'])} snapshots, this run keeps {self.size}")
        for slot, saved in zip(self.slots, state["slots"], strict=True):
            torch._foreach_copy_(slot, [t.to(slot[0].device) for t in saved])
        self.pushes = int(state["pushes"])


class WindowMean:
    """Mean of the last K pushed parameter lists: a ring buffer plus a running sum.

    Each push costs one add and (when full) one subtract. Every K pushes the sum is rebuilt from the
    ring, so floating-point drift never spans more than K steps however long the run is.
    """

    def __init__(self, like: Sequence[Tensor], size: int) -> None:
        self.ring = ParameterRing(like, size)
        self.total = _clone_zeros(like)

    @property
    def count(self) -> int:
        return self.ring.count

    @torch.no_grad()
    def push(self, params: Sequence[Tensor]) -> None:
        params = list(params)
        if self.ring.pushes >= self.ring.size:
            torch._foreach_sub_(self.total, self.ring.next_slot)
        self.ring.push(params)
        if self.ring.pushes % self.ring.size == 0:
            self._resync()
        else:
            torch._foreach_add_(self.total, params)

    def _resync(self) -> None:
        torch._foreach_copy_(self.total, self.ring.slots[0])
        for slot in self.ring.slots[1 : self.ring.count]:
            torch._foreach_add_(self.total, slot)

    @torch.no_grad()
    def write_mean(self, out: Sequence[Tensor]) -> None:
        """Write the window mean into ``out`` (e.g. the teacher model's parameters)."""
        if self.count == 0:
            return
        torch._foreach_copy_(list(out), self.total)
        torch._foreach_div_(list(out), float(self.count))

    def state_dict(self) -> dict[str, Any]:
        # the running sum is saved as is, so a resumed run continues bit for bit
        return {"ring": self.ring.state_dict(), "total": [t.clone() for t in self.total]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ring.load_state_dict(state["ring"])
        torch._foreach_copy_(self.total, [t.to(self.total[0].device) for t in state["total"]])


class CumulativeMean:
    """Equal-weight mean of every pushed parameter list in O(1) extra memory.

    ``mean ← mean + (θ − mean)/n`` (the update of ``torch.optim.swa_utils``). ``storage`` lets the mean
    live directly in a model's parameters, so the averaged model needs no further copy.
    """

    def __init__(self, like: Sequence[Tensor], storage: Sequence[Tensor] | None = None) -> None:
        self.mean = list(storage) if storage is not None else _clone_zeros(like)
        self.pushes = 0

    @property
    def count(self) -> int:
        return self.pushes

    @torch.no_grad()
    def push(self, params: Sequence[Tensor]) -> None:
        params = list(params)
        self.pushes += 1
        if self.pushes == 1:
            torch._foreach_copy_(self.mean, params)
        else:
            torch._foreach_lerp_(self.mean, params, 1.0 / self.pushes)

    def write_mean(self, out: Sequence[Tensor]) -> None:
        out = list(out)
        if self.pushes and any(o is not m for o, m in zip(out, self.mean, strict=True)):
            torch._foreach_copy_(out, self.mean)

    def state_dict(self) -> dict[str, Any]:
        return {"pushes": self.pushes, "mean": [t.detach().clone() for t in self.mean]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        torch._foreach_copy_(self.mean, [t.to(self.mean[0].device) for t in state["mean"]])
        self.pushes = int(state["pushes"])
