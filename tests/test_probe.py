"""Probes recover labels where the answer is known."""
import torch
import torch.nn as nn

from featdrop import probe


def clusters(n, k, dim, sep, seed):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, dim, generator=g) * sep
    y = torch.arange(n) % k
    return centres[y] + torch.randn(n, dim, generator=g), y


def test_logistic_probe_separable_and_chance():
    x, y = clusters(600, 5, 20, 3.0, 0)
    xt, yt = clusters(300, 5, 20, 3.0, 0)  # same centres (same seed), fresh noise would also do
    assert probe.logistic_regression(x, y, xt, yt, 5) > 0.97
    # labels independent of the features: held-out accuracy near chance (0.2)
    y_rand = torch.randint(0, 5, (600,), generator=torch.Generator().manual_seed(1))
    yt_rand = torch.randint(0, 5, (300,), generator=torch.Generator().manual_seed(2))
    assert probe.logistic_regression(x, y_rand, xt, yt_rand, 5) < 0.35


def test_logistic_probe_reads_a_linear_feature_in_noise():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2000, 50, generator=g)
    y = (x[:, 7] + 0.1 * x[:, 8] > 0).long()
    acc = probe.logistic_regression(x[:1000], y[:1000], x[1000:], y[1000:], 2)
    assert acc > 0.95


def test_knn_accuracy():
    x, y = clusters(500, 4, 10, 4.0, 5)
    assert probe.knn_accuracy(x[:400], y[:400], x[400:], y[400:], 4, k=20) > 0.95
    # hand-computed: 1-NN of each test point is its own copy in train
    assert probe.knn_accuracy(x, y, x[:50], y[:50], 4, k=1) == 1.0


class Identity(nn.Module):
    def features(self, x):
        return x, x


def test_reference_probe_protocol_learns_separable_data():
    x, y = clusters(512, 3, 8, 3.0, 6)
    acc = probe.reference_probe(Identity(), lambda idx: x[idx], 512, y, lambda sl: x[sl], 512, y, 3,
                                epochs=10, batch=64, lr=0.05, generator=torch.Generator().manual_seed(0))
    assert acc > 0.95
