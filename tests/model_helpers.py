"""Helpers shared by the model tests."""

import torch


def warm_bn(model, steps: int = 2, seed: int = 1) -> None:
    """A few training-mode forwards so BatchNorm running statistics are not the trivial ones."""
    g = torch.Generator().manual_seed(seed)
    model.train()
    with torch.no_grad():
        for _ in range(steps):
            model(torch.randn(4, 3, 32, 32, generator=g) * 2 + 0.5)


def recalibrate_bn(model, generator, batches: int = 4) -> None:
    """Re-estimate BatchNorm statistics as exact averages over a few batches: after a few
    dozen steps the running variances still carry much of their initial value of 1 (0.9^30 =
    4%, against batch variances of pooled features far below that), which would make the
    evaluation-mode heads differ from the trained ones."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        for _ in range(batches):
            model(torch.randn(8, 3, 32, 32, generator=generator))


def train_toy(model, steps: int = 30) -> torch.Generator:
    """Train on a toy 3-class task plus the model's budget loss, then recalibrate BatchNorm;
    returns the generator, to draw evaluation inputs from it."""
    import torch.nn.functional as F

    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    g = torch.Generator().manual_seed(1)
    model.train()
    for _ in range(steps):
        x = torch.randn(8, 3, 32, 32, generator=g)
        y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
        out = model(x)
        loss = F.cross_entropy(out["pred"]["semantic"], y) + model.budget_loss(out["aux"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    recalibrate_bn(model, g)
    return g
