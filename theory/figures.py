"""The theory's figures: probe accuracy against the dropout rate beside the closed form, and the weight norms
over training. Each function returns a matplotlib figure; ``theory.sweep.save`` writes them."""
import torch


def mean(x):
    """The mean over seeds of a list."""
    return sum(x) / len(x)


def plot_accuracy(res):
    """Probe accuracy vs p (seed mean, seeds as dots) against the spectral closed form and p*."""
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ps, th, K = res["ps"], res["theory"], res["setting"]["K"]
    for key, name, col in (("acc_A", "task A (u, strong)", "C0"), ("acc_B", "task B (v, weak)", "C3")):
        acc = torch.tensor(res[key])
        ax.plot(ps, acc.mean(1), "o-", color=col, label=f"InfoNCE sim: {name}")
        for j in range(acc.shape[1]):
            ax.plot(ps, acc[:, j], ".", color=col, alpha=0.4)
        ax.plot(th["p_grid"], th[key], "--", color=col, lw=1,
                label="spectral closed form" if key == "acc_A" else None)
        ax.plot(th["p_grid"], th[key + "_whitened"], ":", color=col, lw=1,
                label="whitened closed form" if key == "acc_A" else None)
    if th["p_star"] is not None:
        ax.axvline(mean(th["p_star"]), color="k", ls="--", lw=0.8, label=f"p* = {mean(th['p_star']):.2f}")
        ax.axvline(mean(th["p_star_whitened"]), color="k", ls=":", lw=0.8,
                   label=f"p* whitened = {mean(th['p_star_whitened']):.2f}")
    ax.axhline(1 / K, color="gray", lw=0.5)
    ax.set(xlabel=f"feature dropout rate p (block {res['setting']['drop']})", ylabel="clean probe accuracy",
           ylim=(0, 1))
    ax.legend(fontsize=7, loc="lower left", ncol=2)
    fig.tight_layout()
    return fig


def plot_norms(res):
    """‖W_u‖ (solid) and ‖W_v‖ (dashed) over training, seed mean, one colour per p."""
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    h = res["history"]
    nu, nv = torch.tensor(h["norm_u"]).mean(-1), torch.tensor(h["norm_v"]).mean(-1)  # (T, P)
    for i, p in enumerate(res["ps"]):
        col = plt.cm.viridis(i / max(1, len(res["ps"]) - 1))
        ax.plot(h["step"], nu[:, i], "-", color=col, label=f"p = {p:.2f}")
        ax.plot(h["step"], nv[:, i], "--", color=col)
    ax.set(xlabel="GD step (log scale: cosine similarity makes the first steps from small init jump)",
           ylabel="‖W_u‖_F (solid), ‖W_v‖_F (dashed)", xscale="log", yscale="log")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
