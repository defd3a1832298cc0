"""Toy models for the randomization tests (no tests here), each with a hand-known forward order."""

from __future__ import annotations

import torch
from torch import nn
from zoo import _seeded


class Toy(nn.Module):
    """Registered head-first (the reverse of execution); body.0 and body.2 have the same shape."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(6, 3)
        self.body = nn.Sequential(nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 6))
        self.bn = nn.BatchNorm1d(6)
        self.stem = nn.Linear(5, 6)
        g = torch.Generator().manual_seed(7)
        self.bn.running_mean.copy_(torch.randn(6, generator=g) * 0.1)
        self.bn.running_var.copy_(torch.rand(6, generator=g) + 0.5)
        self.bn.weight.data.copy_(torch.rand(6, generator=g) + 0.5)
        self.bn.bias.data.copy_(torch.randn(6, generator=g) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.bn(self.stem(x))))


TOY_FORWARD = ["stem", "bn", "body.0", "body.2", "head"]


class TokenNet(nn.Module):
    """A class token and a position embedding registered on the root, used after `embed`."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(8, 3)
        self.mix = nn.Linear(8, 8)
        self.cls_token = nn.Parameter(torch.randn(1, 1, 8))
        self.embed = nn.Linear(4, 8)
        self.pos = nn.Parameter(torch.randn(1, 4, 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, 3, 4)
        t = self.embed(x)
        t = torch.cat([self.cls_token.expand(len(t), -1, -1), t], 1) + self.pos
        return self.head(self.mix(t).relu()[:, 0])


class Shared(nn.Module):
    """`fc` called twice and registered twice (`alias`); `tied` shares fc's weight."""

    def __init__(self) -> None:
        super().__init__()
        self.out = nn.Linear(4, 2)
        self.fc = nn.Linear(4, 4)
        self.alias = self.fc
        self.tied = nn.Linear(4, 4)
        self.tied.weight = self.fc.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.tied(self.fc(self.fc(x).relu())))


class Unused(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.spare = nn.Linear(4, 4)
        self.out = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.fc(x))


class Dead(nn.Module):
    """`aux` is computed but its result is thrown away: randomizing it changes nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.aux = nn.Linear(4, 4)
        self.out = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)
        self.aux(h)
        return self.out(h)


class Attn(nn.Module):
    """out_proj is never called as a module: multi-head attention uses its weight functionally."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(8, 2)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.attn(x, x, x, need_weights=False)[0].mean(1))


class Prefixes(nn.Module):
    """Module names where one is a non-dotted string prefix of another (blk, blk2)."""

    def __init__(self) -> None:
        super().__init__()
        self.blk = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
        self.blk2 = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blk2(self.blk(x))


def make(name: str) -> tuple[nn.Module, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    factories = {
        "toy": (Toy, (8, 5)),
        "token": (TokenNet, (4, 3, 4)),
        "shared": (Shared, (4, 4)),
        "unused": (Unused, (4, 4)),
        "dead": (Dead, (4, 4)),
        "attn": (Attn, (2, 3, 8)),
        "prefixes": (Prefixes, (3, 4)),
    }
    cls, shape = factories[name]
    return _seeded(cls, 0).eval(), torch.randn(*shape, generator=g)
