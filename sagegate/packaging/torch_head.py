"""The wrapper that makes a PyTorch module's output what the server expects (imports torch)."""

from __future__ import annotations

import torch

from sagegate.manifest import Task

__all__ = ["TorchHead"]


class TorchHead(torch.nn.Module):
    """Probabilities [N, C] for classification (a single logit becomes [1-p, p]), values [N] else."""

    def __init__(self, body: torch.nn.Module, task: Task, torch_output: str) -> None:
        super().__init__()
        self.body = body
        self.regression = task is Task.REGRESSION
        self.logits = torch_output == "logits"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        if self.regression:
            return y.reshape(-1)  # type: ignore[no-any-return]
        if y.dim() == 1:
            y = y.unsqueeze(-1)
        if self.logits:
            y = torch.sigmoid(y) if y.shape[-1] == 1 else torch.softmax(y, dim=-1)
        if y.shape[-1] == 1:
            y = torch.cat([1.0 - y, y], dim=-1)
        return y  # type: ignore[no-any-return]
