"""Linear probes and kNN on frozen features, for the main and the alternate label.

Default (``probe="fast"``): features computed once with the encoder in eval mode (pooled, 512-d for
ResNet-18), standardised with training statistics, then a multinomial logistic regression fitted by
full-batch L-BFGS on the device (a fixed, small L2 penalty; nothing is tuned on the test set).
``probe="reference"``: the reference protocol (feature_dropout.md §5): a linear layer on the
flattened pre-pool map (8192-d for the CIFAR ResNet-18), SGD lr 0.01, momentum 0.9, batch 128,
×0.1 at 60 % and 80 % of the epochs (epochs 60 and 80 of 100), training inputs augmented by the
method's own views (expert views, or the frozen viewmaker), clean test inputs.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


@torch.no_grad()
def extract(encoder: nn.Module, inputs, n: int, batch: int = 1024, prepool: bool = False) -> torch.Tensor:
    """Features of ``inputs(slice) → encoder input`` for n items, encoder in eval mode (restored after)."""
    was_training = encoder.training
    encoder.eval()
    out = []
    for i in range(0, n, batch):
        pooled, flat = encoder.features(inputs(slice(i, min(i + batch, n))))
        out.append((flat if prepool else pooled).float())
    encoder.train(was_training)
    return torch.cat(out)


class LinearProbe:
    """Multinomial logistic regression on standardised features, fitted by full-batch L-BFGS."""

    def __init__(self, train_x, train_y, num_classes: int, l2: float = 1e-4, iters: int = 200, init=None):
        """``init``: (w, b) of an earlier fit to start from (a warm start: the monitor refits each epoch on
        features that moved a little); zeros otherwise."""
        self.mean, self.std = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
        a = (train_x - self.mean) / self.std
        w0 = init[0] if init is not None else torch.zeros(a.shape[1], num_classes, device=a.device)
        b0 = init[1] if init is not None else torch.zeros(num_classes, device=a.device)
        self.w, self.b = w0.clone().requires_grad_(True), b0.clone().requires_grad_(True)
        opt = torch.optim.LBFGS([self.w, self.b], lr=1, max_iter=iters, history_size=20,
                                line_search_fn="strong_wolfe", tolerance_grad=1e-6, tolerance_change=1e-9)

        def closure():
            opt.zero_grad()
            loss = F.cross_entropy(a @ self.w + self.b, train_y) + l2 * (self.w * self.w).sum()
            loss.backward()
            return loss

        with torch.enable_grad():
            opt.step(closure)
        self.w, self.b = self.w.detach(), self.b.detach()

    @torch.no_grad()
    def logits(self, x):
        return ((x - self.mean) / self.std) @ self.w + self.b

    def accuracy(self, x, y) -> float:
        return (self.logits(x).argmax(1) == y).float().mean().item()


def logistic_regression(train_x, train_y, test_x, test_y, num_classes: int, l2: float = 1e-4,
                        iters: int = 200) -> float:
    """Test accuracy of a LinearProbe fitted on the training features."""
    return LinearProbe(train_x, train_y, num_classes, l2, iters).accuracy(test_x, test_y)


def chance(test_y, num_classes: int) -> float:
    """Accuracy of always guessing the most frequent test label."""
    return (torch.bincount(test_y, minlength=num_classes).max() / len(test_y)).item()


def fast_metrics(train_x, test_x, labelsets, knn_k: int = 200) -> dict:
    """The fast protocol on precomputed features: for each ``(name, train_y, test_y, num_classes)`` in
    ``labelsets``, ``probe_<name>`` (logistic regression), ``knn_<name>`` and ``chance_<name>``."""
    out = {}
    for name, ytr, yte, k in labelsets:
        if k < 2:  # a label with one class (overlay "none" has no alternate label): nothing to probe
            out[f"probe_{name}"] = out[f"knn_{name}"] = out[f"chance_{name}"] = None
            continue
        out[f"probe_{name}"] = logistic_regression(train_x, ytr, test_x, yte, k)
        out[f"knn_{name}"] = knn_accuracy(train_x, ytr, test_x, yte, k, knn_k)
        out[f"chance_{name}"] = chance(yte, k)
    return out


def knn_accuracy(train_x, train_y, test_x, test_y, num_classes: int, k: int = 200, t: float = 0.1,
                 batch: int = 1024) -> float:
    """Weighted kNN on cosine similarity (InstDisc / SimCLR monitors): votes exp(s/t) of the k nearest."""
    k = min(k, len(train_x))
    a, b = F.normalize(train_x, dim=1), F.normalize(test_x, dim=1)
    correct = 0
    for i in range(0, len(b), batch):
        sim = b[i:i + batch] @ a.t()                          # (n, N)
        top, idx = sim.topk(k, dim=1)
        votes = torch.zeros(len(top), num_classes, device=a.device)
        votes.scatter_add_(1, train_y[idx], torch.exp(top / t))
        correct += (votes.argmax(1) == test_y[i:i + batch]).sum().item()
    return correct / len(b)


def reference_probe(encoder, train_inputs, n_train: int, train_y, test_inputs, n_test: int, test_y,
                    num_classes: int, epochs: int = 100, batch: int = 128, lr: float = 0.01,
                    generator: torch.Generator | None = None) -> float:
    """The reference protocol. ``train_inputs(idx) → augmented encoder input``, encoder frozen, eval mode."""
    device = train_y.device
    with torch.no_grad():
        dim = extract(encoder, test_inputs, 1, prepool=True).shape[1]
    head = nn.Linear(dim, num_classes).to(device)
    opt = torch.optim.SGD(head.parameters(), lr=lr, momentum=0.9, weight_decay=0)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [int(0.6 * epochs), int(0.8 * epochs)], 0.1)
    encoder.eval()
    for _ in range(epochs):
        perm = torch.randperm(n_train, generator=generator,
                              device=generator.device if generator else "cpu").to(device)
        for i in range(0, n_train, batch):
            idx = perm[i:i + batch]
            with torch.no_grad():
                feats = encoder.features(train_inputs(idx))[1].float()
            loss = F.cross_entropy(head(feats), train_y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    with torch.no_grad():
        feats = extract(encoder, test_inputs, n_test, prepool=True)
        return (head(feats).argmax(1) == test_y).float().mean().item()
