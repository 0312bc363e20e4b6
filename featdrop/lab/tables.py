"""Tables of finished runs: probe accuracy on every label, mean ± sd over seeds, grouped by what differs.

``collect`` reads every ``metrics.json`` (with its run's ``config.json``) under a directory; ``summary``
groups them by the config fields that vary (other than the seed); ``suppression_curve`` plots the probes
against a swept number such as ``overlay_opacity``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from .. import config, rundir
from ..errors import ConfigError, DataNotFoundError
from ..viz import compare

# Config fields that never define a group: where and how a run ran, not what it computed.
BOOKKEEPING = ("seed", "out_dir", "data_dir", "device", "progress", "download", "compile")
FIRST = ("run", "overlay", "views", "seed", "preset", "encoder", "epochs", "probe_main", "probe_alt",
         "probe_coarse", "knn_main", "knn_alt", "chance_main", "chance_alt", "chance_coarse", "wall_s")


REWRITE = "running its command again rewrites it from its checkpoint.pt"


def _read_object(path: Path) -> dict:
    """A JSON object from ``path``; ValueError saying what is wrong with it (missing, cut, not an object)."""
    if not path.exists():
        raise ValueError(f"no {path.name}")
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"its {path.name} is cut or not JSON ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"its {path.name} is not a JSON object")
    return obj


def collect(runs_dir: str | None, run_dirs=None, say=print):
    """One row per finished run (a directory holding metrics.json) under ``runs_dir``, or of the
    directories ``run_dirs``: every config field and every metric (the config wins a shared name; a field
    the run's config.json predates takes its default). A run whose metrics.json or config.json is missing,
    cut or not JSON is left out, with one line each through ``say``: one damaged run hides no other."""
    import pandas as pd

    paths = [Path(d) / "metrics.json" for d in run_dirs] if run_dirs is not None else \
        sorted(Path(runs_dir).glob("**/metrics.json"))
    defaults = dataclasses.asdict(config.Config())
    rows, skipped = [], 0
    for m in paths:
        if not m.exists():
            continue
        try:
            metrics, cfg = _read_object(m), _read_object(m.parent / "config.json")
        except ValueError as why:
            say(f"skipped {m.parent}: {why}; {REWRITE}")
            skipped += 1
            continue
        missing = {k: v for k, v in defaults.items() if k not in cfg and k not in metrics}
        rows.append({"run": str(m.parent), **missing, **metrics, **cfg})
    if not rows:
        raise DataNotFoundError(f"no {'readable ' if skipped else ''}runs (metrics.json) under {runs_dir!r}"
                                + (f" ({skipped} skipped, named above)" if skipped else "")
                                + ": launch some first (report.ipynb with launch=True, featdrop grid, "
                                  "or notebooks/pretrain.ipynb)")
    df = pd.DataFrame(rows)
    return df[[c for c in FIRST if c in df] + [c for c in df if c not in FIRST]]


def varying_fields(df) -> list[str]:
    """The config fields whose value differs between runs, other than the seed and bookkeeping."""
    return [f for f in config.field_names() if f in df and f not in BOOKKEEPING
            and df[f].astype(str).nunique() > 1]


def mean_sd(values, digits: int = 3) -> str:
    """'mean ± sd' (sample sd, over seeds) of the values that are not None/NaN, with ``digits`` decimals;
    one value alone; '–' for none."""
    import numpy as np

    v = np.array([x for x in values if x is not None], dtype=float)
    v = v[~np.isnan(v)]
    if not len(v):
        return "–"
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}" if len(v) > 1 else f"{v.mean():.{digits}f}"


def check_by(by) -> None:
    """ConfigError unless every name in ``by`` is a config field (the columns a table can be grouped by)."""
    unknown = [b for b in by if b not in config.field_names()]
    if unknown:
        raise ConfigError(f"--by {' '.join(unknown)}: not a config field; allowed: "
                          f"{', '.join(config.field_names())}")


def summary(df, by=None):
    """Runs grouped by ``by`` (default: the fields that vary, else overlay × views) → 'mean ± sd (n)'
    of every probe (main, alternate, coarse when present) and kNN, with the chance levels."""
    def fmt(s):
        return f"{mean_sd(s)} (n={s.notna().sum()})"

    if by:
        check_by(by)
    by = list(by) if by else (varying_fields(df) or ["overlay", "views"])
    cols = {}
    for key, name in (("probe_main", "main"), ("probe_alt", "alternate"), ("probe_coarse", "coarse"),
                      ("knn_main", "knn_main"), ("knn_alt", "knn_alt")):
        if key in df and df[key].notna().any():
            cols[name] = (key, fmt)
    for key in ("chance_main", "chance_alt", "chance_coarse"):
        if key in df and df[key].notna().any():
            cols[key] = (key, "mean")
    table = df.assign(**{b: df[b].astype(str) for b in by if df[b].isna().any()}).groupby(by).agg(**cols)
    return table.round(3)


# ------------------------------------------------------------------------ suppression as a paired difference
PAIRED = ("probe_main", "probe_coarse", "probe_alt", "knn_main", "knn_coarse", "knn_alt")
OVERLAY_ONLY = ("overlay_size", "overlay_opacity", "overlay_resample")  # no effect when overlay="none"


def _control_of(run, controls):
    """The control run that differs from ``run`` only in overlay="none" (fields that only shape the overlay
    ignored) or only in overlay_opacity=0, or (overlay="noise") only in a lower noise_volume, with the same
    seed; None when there is none."""
    fields = [f for f in config.field_names() if f in run.index and f not in BOOKKEEPING and f != "seed"]
    for _, c in controls.iterrows():
        if c["seed"] != run["seed"]:
            continue
        if c["overlay"] == "none":
            differ = [f for f in fields if f not in ("overlay", *OVERLAY_ONLY) and str(c[f]) != str(run[f])]
        elif c["overlay"] == "noise" and float(c["noise_volume"]) < float(run["noise_volume"]):
            differ = [f for f in fields if f != "noise_volume" and str(c[f]) != str(run[f])]
        else:
            differ = [f for f in fields if f != "overlay_opacity" and str(c[f]) != str(run[f])]
        if not differ:
            return c
    return None


def _is_control(df):
    return (df["overlay"] == "none") | (df["overlay_opacity"].astype(float) == 0) | _quietest_noise(df)


def _quietest_noise(df):
    """The audio study's controls: overlay="noise" runs whose noise_volume is the lowest among the runs that
    differ from them only in noise_volume (same seed), when a louder one exists. Background noise cannot be
    made invisible (noise_volume > 0), so the noise nearly off (e.g. 0.001) is the control."""
    import pandas as pd

    out = pd.Series(False, index=df.index)
    noise = df[df["overlay"] == "noise"] if "noise_volume" in df else df.iloc[:0]
    if not len(noise):
        return out
    same = [f for f in config.field_names() if f in df and f not in BOOKKEEPING and f != "noise_volume"]
    key = noise[same + ["seed"]].apply(lambda r: "|".join(str(v) for v in r), axis=1)
    volume = noise["noise_volume"].astype(float)
    lowest, loudest = volume.groupby(key).transform("min"), volume.groupby(key).transform("max")
    out[noise.index] = (volume == lowest) & (loudest > lowest)
    return out


def _controls(df) -> dict:
    """Per run (by index) of the runs that are not controls, its control row (:func:`_control_of`) or None:
    the one pairing behind the paired table and the per-run differences."""
    is_control = _is_control(df)
    controls = df[is_control]
    return {i: _control_of(r, controls) for i, r in df[~is_control].iterrows()}


def suppression_per_run(df, metric: str = "probe_main"):
    """Per run, ``metric`` of its control minus its own, paired as in :func:`paired_suppression`: the
    suppression each seed shows, 0 for a control itself and NaN for a run without a control."""
    import numpy as np
    import pandas as pd

    paired = _controls(df)
    diffs = [0.0 if i not in paired else np.nan if paired[i] is None else paired[i][metric] - df.at[i, metric]
             for i in df.index]
    return pd.Series(diffs, index=df.index, dtype=float)


def paired_stats(differences) -> tuple[float, float, float]:
    """Mean, sample sd and the two-sided p of a paired t-test (a one-sample t-test of the differences against
    0) of paired differences, NaNs dropped; NaN for what fewer than two (or all equal) cannot give."""
    import numpy as np
    from scipy import stats

    d = np.asarray(differences, dtype=float)
    d = d[~np.isnan(d)]
    mean = d.mean() if len(d) else np.nan
    sd = d.std(ddof=1) if len(d) > 1 else np.nan
    p = stats.ttest_1samp(d, 0.0).pvalue if len(d) > 1 and d.std() > 0 else np.nan
    return mean, sd, p


def paired_suppression(df, metrics=PAIRED):
    """Suppression as a paired difference, one row per cell (the runs that differ only in their seed):
    ``suppression_<metric>`` = metric(control) − metric(run) for each seed, where the control is the run
    with overlay="none" (or overlay_opacity=0; audio: the lowest noise_volume) and everything else equal;
    mean, sd and a paired t-test over the seeds (p, two-sided; NaN below 2 pairs). A cell whose runs have no
    control says so in ``partner``."""
    import pandas as pd

    paired = _controls(df)
    runs = df.loc[list(paired)]
    by = [f for f in varying_fields(df) if f != "seed"] or ["overlay", "views"]
    rows = []
    for key, cell in runs.groupby(by, dropna=False, sort=False):
        pairs = [(r, paired[i]) for i, r in cell.iterrows() if paired[i] is not None]
        row = dict(zip(by, key if isinstance(key, tuple) else (key,)), n=len(pairs),
                   partner=_partner(pairs[0][1]) if pairs else "none: no run with overlay=none or "
                   "overlay_opacity=0 (audio: a lower noise_volume), same fields")
        for m in (m for m in metrics if m in df):
            name = "suppression_" + m.removeprefix("probe_")  # suppression_main, ..., suppression_knn_alt
            # NaN, dropped: a label the control lacks (none has no alternate label) gives no difference
            row[name], row[f"{name}_sd"], row[f"{name}_p"] = paired_stats([c[m] - r[m] for r, c in pairs])
        rows.append(row)
    return pd.DataFrame(rows)


def _partner(control) -> str:
    if control["overlay"] == "noise" and not float(control["overlay_opacity"]) == 0:
        return f"overlay=noise, noise_volume {float(control['noise_volume']):g}"
    return f"overlay={control['overlay']}, opacity {control['overlay_opacity']:g}"


def format_paired(table):
    """The paired table for reading: 'mean ± sd (p 0.04)' per suppression column, '–' where none."""
    import numpy as np

    shown = table[[c for c in table if not c.startswith("suppression_")]].copy()
    for c in [c for c in table if c.startswith("suppression_") and not c.endswith(("_sd", "_p"))]:
        shown[c] = ["–" if np.isnan(m) else f"{m:+.3f}" + ("" if np.isnan(sd) else f" ± {sd:.3f}")
                    + ("" if np.isnan(p) else f" (p {p:.2g})")
                    for m, sd, p in zip(table[c], table[f"{c}_sd"], table[f"{c}_p"])]
    return shown


def numeric_fields(df) -> list[str]:
    """Varying config fields with numeric values: candidates for a suppression curve's x axis."""
    import pandas as pd

    return [f for f in varying_fields(df) if pd.api.types.is_numeric_dtype(df[f]) and df[f].notna().all()]


def suppression_curve(df, runs_dir: str, x: str | None = None):
    """Probe accuracy against the swept number ``x`` (default: the first numeric field that varies),
    one line per views type; saved as ``<runs_dir>/figures/suppression_<x>.png``. None when no
    numeric field varies."""
    x = x or next(iter(numeric_fields(df)), None)
    if x is None:
        return None
    lines = ["views", *(f for f in varying_fields(df) if f not in (x, "views"))]
    fig = compare.suppression_curve(df, x, lines)
    rundir.save_figure(fig, Path(runs_dir) / "figures" / f"suppression_{x}.png")
    return fig


def map_pairs(df, runs_dir: str | None = None):
    """The embedding maps of expert and viewmaker runs of the same overlay and seed (and everything else
    equal but the views), side by side; saved as ``<runs_dir>/figures/maps_expert_viewmaker.png``. None when
    no such pair has its maps."""
    by = [f for f in varying_fields(df) if f != "views"] + ["seed"]
    rows = []
    for key, group in df.groupby(by, dropna=False):
        maps = {r["views"]: Path(r["run"]) / "figures" / "embedding.png" for _, r in group.iterrows()}
        pair = [maps.get(v) for v in ("expert", "viewmaker")]
        if all(p is not None and p.exists() for p in pair):
            name = ", ".join(f"{f} {v}" for f, v in zip(by, key if isinstance(key, tuple) else (key,)))
            rows.append((name, [("expert views", str(pair[0])), ("viewmaker views", str(pair[1]))]))
    if not rows:
        return None
    fig = compare.images(rows)
    if runs_dir:
        rundir.save_figure(fig, Path(runs_dir) / "figures" / "maps_expert_viewmaker.png", dpi=150)
    return fig


def comparison(df, runs_dir: str, value: str = "probe"):
    """Bars of overlay × views → accuracy on both labels, saved as
    ``<runs_dir>/figures/comparison_<value>.png``."""
    fig = compare.comparison(df, value)
    rundir.save_figure(fig, Path(runs_dir) / "figures" / f"comparison_{value}.png")
    return fig


EXAMPLES = """examples:
  featdrop report runs/study11
  featdrop report runs/opacity --by overlay_opacity views"""


def main(argv=None, prog: str = "featdrop report") -> int:
    ap = argparse.ArgumentParser(prog=prog, description="Tabulate every finished run under a folder "
                                 "(mean ± sd over seeds, grouped by the config fields that differ) "
                                 "and draw the comparison figures into <runs_dir>/figures/.", epilog=EXAMPLES,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs_dir", help="a folder of run directories (a grid's --runs-dir, or runs/)")
    ap.add_argument("--by", nargs="+", help="config fields to group by (default: the fields that differ)")
    args = ap.parse_args(argv)
    if args.by:
        check_by(args.by)  # before any run is read
    df = collect(args.runs_dir)
    print(f"{len(df)} finished run(s) under {args.runs_dir}\n")
    print(summary(df, by=args.by).to_string())
    paired = paired_suppression(df)
    if len(paired):
        print("\nsuppression = control − run (control: overlay=none or overlay_opacity=0, or for audio the "
              "lowest noise_volume;\nsame other fields and seed), mean ± sd over the seeds, paired t-test p:")
        print(format_paired(paired).to_string(index=False))
    written = [comparison(df, args.runs_dir, v) and f"comparison_{v}.png" for v in ("probe", "knn")]
    if suppression_curve(df, args.runs_dir) is not None:
        written.append(f"suppression_{numeric_fields(df)[0]}.png")
    print(f"\nwrote {', '.join(written)} in {Path(args.runs_dir) / 'figures'}")
    return 0
