"""Suppression as a paired difference: every overlay cell is paired, seed by seed, with the cell that differs
only in overlay="none" (or overlay_opacity=0); mean ± sd and a paired t-test over the seeds, checked against
a table computed by hand."""
import math

import pandas as pd
import pytest

from featdrop import cli, rundir
from featdrop.lab import tables


def run(i, views, opacity, seed, main, alt, overlay="shapes", budget=0.05):
    return dict(run=f"r{i}", overlay=overlay, views=views, overlay_opacity=opacity, seed=seed, budget=budget,
                overlay_size=1.0, epochs=10, preset="quick", loss="reference", device="cpu", out_dir=f"r{i}",
                probe_main=main, probe_alt=alt, knn_main=main - 0.1, knn_alt=alt - 0.1, chance_main=0.1,
                chance_alt=0.34)


def grid():
    """expert/viewmaker × opacity {0, 1} × seeds {0, 1, 2}, and one viewmaker cell at opacity 0.5 whose
    opacity-0 control is missing for seed 2; numbers chosen so the differences are easy to follow."""
    rows, i = [], 0
    for views, base, cost in (("expert", 0.50, (0.04, 0.06, 0.05)), ("viewmaker", 0.48, (0.01, -0.01, 0.03))):
        for seed in (0, 1, 2):
            rows.append(run(i, views, 0.0, seed, base + 0.01 * seed, 0.34))
            rows.append(run(i + 1, views, 1.0, seed, base + 0.01 * seed - cost[seed], 0.9))
            i += 2
    rows.append(run(i, "viewmaker", 0.5, 0, 0.47, 0.6))
    rows.append(run(i + 1, "viewmaker", 0.5, 1, 0.50, 0.6))
    return pd.DataFrame(rows)


def test_paired_suppression_matches_a_hand_computed_table():
    t = tables.paired_suppression(grid()).set_index(["overlay_opacity", "views"])
    e = t.loc[(1.0, "expert")]
    assert e["n"] == 3 and "opacity 0" in e["partner"]
    assert e["suppression_main"] == pytest.approx(0.05)            # mean of 0.04, 0.06, 0.05
    assert e["suppression_main_sd"] == pytest.approx(0.01)         # sample sd of the three
    # paired t over 3 seeds: t = 0.05 / (0.01 / √3) = 8.660 with 2 degrees of freedom, where the two-sided
    # p has a closed form, 1 − t/√(t² + 2) = 0.01307
    assert e["suppression_main_p"] == pytest.approx(0.01307, abs=2e-5)
    assert e["suppression_knn_main"] == pytest.approx(0.05)        # kNN is paired the same way
    assert e["suppression_alt"] == pytest.approx(0.34 - 0.9)       # the invisible shape is read at chance
    v = t.loc[(1.0, "viewmaker")]
    assert v["suppression_main"] == pytest.approx(0.01) and v["suppression_main_sd"] == pytest.approx(0.02)
    assert v["suppression_main_p"] == pytest.approx(0.4778, abs=1e-4)  # t = 0.866: 1 − 0.866/√2.75
    half = t.loc[(0.5, "viewmaker")]  # seed 0 and 1 have controls (opacity 0, same fields)
    assert half["n"] == 2 and half["suppression_main"] == pytest.approx(((0.48 - 0.47) + (0.49 - 0.50)) / 2)


def test_a_cell_without_a_control_says_so_and_none_is_a_control_too():
    df = grid()
    df = df[~((df.overlay_opacity == 0) & (df.views == "viewmaker"))]            # drop viewmaker's controls
    t = tables.paired_suppression(df).set_index(["overlay_opacity", "views"])
    lonely = t.loc[(1.0, "viewmaker")]
    assert lonely["n"] == 0 and lonely["partner"].startswith("none")
    assert math.isnan(lonely["suppression_main"])
    # overlay="none" with the same other fields pairs too; there the alternate label has no difference
    none = [run(100 + s, "viewmaker", 1.0, s, 0.49, 1.0, overlay="none") for s in (0, 1, 2)]
    for r in none:
        r["probe_alt"] = float("nan")
    t = tables.paired_suppression(pd.concat([df, pd.DataFrame(none)]))
    t = t.set_index(["overlay", "overlay_opacity", "views"])
    row = t.loc[("shapes", 1.0, "viewmaker")]
    assert row["n"] == 3 and "overlay=none" in row["partner"]
    assert row["suppression_main"] == pytest.approx((0.02 - 0.01 + 0.02) / 3)  # 0.49 − (0.47, 0.50, 0.47)
    assert math.isnan(row["suppression_alt"])


def audio_grid():
    """overlay=noise: expert/viewmaker × noise_volume {0.001, 0.05, 0.2} × seeds {0, 1, 2}; the digit probe
    falls by 0.1 (expert) / 0.02 (viewmaker) per step up in volume, plus a per-seed wobble."""
    rows, i = [], 0
    for views, drop in (("expert", 0.1), ("viewmaker", 0.02)):
        for step, volume in enumerate((0.001, 0.05, 0.2)):
            for seed in (0, 1, 2):
                main = 0.6 + 0.01 * seed - drop * step - 0.005 * seed * step
                r = run(i, views, 1.0, seed, main, 0.5 + 0.2 * step, overlay="noise", budget=0.125)
                rows.append({**r, "noise_volume": volume})
                i += 1
    return pd.DataFrame(rows)


def test_audio_pairs_each_noise_volume_with_the_quietest_run_of_the_same_fields_and_seed():
    df = audio_grid()
    t = tables.paired_suppression(df).set_index(["noise_volume", "views"])
    assert set(t.index) == {(0.05, "expert"), (0.2, "expert"), (0.05, "viewmaker"), (0.2, "viewmaker")}
    e = t.loc[(0.05, "expert")]
    assert e["n"] == 3 and e["partner"] == "overlay=noise, noise_volume 0.001"
    # control − run per seed: 0.1 + 0.005·seed → 0.100, 0.105, 0.110: mean 0.105, sd 0.005
    assert e["suppression_main"] == pytest.approx(0.105) and e["suppression_main_sd"] == pytest.approx(0.005)
    assert e["suppression_alt"] == pytest.approx(-0.2)              # the noise is read better when louder
    assert t.loc[(0.2, "expert"), "suppression_main"] == pytest.approx(0.21)      # 0.2 + 0.01·seed, mean
    assert t.loc[(0.2, "viewmaker"), "suppression_main"] == pytest.approx(0.05)   # 0.04 + 0.01·seed
    per = tables.suppression_per_run(df, "probe_main")
    assert (per[df.noise_volume == 0.001] == 0).all()               # the controls against themselves
    seed2 = df[(df.views == "expert") & (df.noise_volume == 0.2) & (df.seed == 2)].index
    assert per[seed2].tolist() == pytest.approx([0.22])
    # a run whose only volume is its own has no control
    alone = df[(df.views == "expert") & (df.noise_volume == 0.05)]
    t = tables.paired_suppression(alone)
    assert t["n"].tolist() == [0] and "noise_volume" in t["partner"][0]
    # a quiet run with another budget is no control: 0.001 at ε 0.25 stands alone, and among the runs at
    # ε 0.125 the quietest left, 0.05, is the control of 0.2
    moved = df.copy()
    moved.loc[(moved.views == "viewmaker") & (moved.noise_volume == 0.001), "budget"] = 0.25
    t = tables.paired_suppression(moved).set_index(["noise_volume", "views", "budget"])
    assert t.loc[(0.001, "viewmaker", 0.25), "n"] == 0 and t.loc[(0.05, "expert", 0.125), "n"] == 3
    v = t.loc[(0.2, "viewmaker", 0.125)]
    assert v["partner"] == "overlay=noise, noise_volume 0.05"
    assert v["suppression_main"] == pytest.approx(0.025)


def write_runs(df, folder):
    """Each row of ``df`` as a finished run directory under ``folder``: config.json and metrics.json."""
    measured = ("probe", "knn", "chance")
    for r in df.to_dict("records"):
        d = folder / r["run"]
        config = {k: v for k, v in r.items() if not k.startswith((*measured, "run"))}
        rundir.write_json(d / "config.json", config)
        rundir.write_json(d / "metrics.json", {k: v for k, v in r.items() if k.startswith(measured)})


def test_featdrop_report_prints_the_audio_suppression(tmp_path, capsys):
    write_runs(audio_grid(), tmp_path)
    assert cli.main(["report", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "lowest noise_volume" in out and "+0.105 ± 0.005" in out
    assert "overlay=noise, noise_volume 0.001" in out


def test_a_different_budget_is_not_a_control():
    df = grid()
    df.loc[(df.views == "viewmaker") & (df.overlay_opacity == 0), "budget"] = 0.1
    t = tables.paired_suppression(df).set_index(["overlay_opacity", "views", "budget"])
    assert t.loc[(1.0, "viewmaker", 0.05), "n"] == 0


def test_featdrop_report_prints_the_paired_table(tmp_path, capsys):
    write_runs(grid(), tmp_path)
    assert cli.main(["report", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "suppression" in out and "+0.050 ± 0.010 (p 0.013)" in out
    assert (tmp_path / "figures" / "suppression_overlay_opacity.png").exists()


def test_a_label_a_run_does_not_have_is_shown_as_a_dash_never_as_an_accuracy():
    df = pd.DataFrame([run(s, "expert", 1.0, s, 0.5, 1.0, overlay="none") for s in (0, 1)]
                      + [run(2 + s, "expert", 1.0, s, 0.45, 0.9) for s in (0, 1)])
    df.loc[df.overlay == "none", ["probe_alt", "knn_alt", "chance_alt"]] = None  # what evaluate() writes
    table = tables.summary(df)
    assert table.loc["none", "alternate"] == "– (n=0)"
    assert table.loc["shapes", "alternate"].startswith("0.900")
    assert "1.000" not in table.to_string()
    assert tables.mean_sd([None, float("nan")]) == "–" and tables.mean_sd([0.5, 0.7]) == "0.600 ± 0.141"


def test_suppression_per_run_is_the_seed_by_seed_difference_the_table_averages():
    df = grid()
    d = tables.suppression_per_run(df, "probe_main")
    expert = df[(df.views == "expert") & (df.overlay_opacity == 1.0)].sort_values("seed")
    assert list(d[expert.index]) == pytest.approx([0.04, 0.06, 0.05])
    assert (d[df.overlay_opacity == 0] == 0).all()                     # a control against itself
    half = df[(df.views == "viewmaker") & (df.overlay_opacity == 0.5)].sort_values("seed")
    assert list(d[half.index]) == pytest.approx([0.48 - 0.47, 0.49 - 0.50])
    lonely = df.drop(df[(df.views == "viewmaker") & (df.overlay_opacity == 0) & (df.seed == 1)].index)
    d = tables.suppression_per_run(lonely, "probe_main")
    gone = lonely[(lonely.views == "viewmaker") & (lonely.seed == 1) & (lonely.overlay_opacity > 0)]
    assert d[gone.index].isna().all() and d.drop(gone.index).notna().all()
    t = tables.paired_suppression(df).set_index(["overlay_opacity", "views"])
    per = tables.suppression_per_run(df, "probe_main")[expert.index]
    assert t.loc[(1.0, "expert"), "suppression_main"] == pytest.approx(per.mean())


def _script(name: str):
    """scripts/<name>.py, loaded as a module (scripts/ is not a package)."""
    import importlib.util

    from conftest import ROOT

    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)
    return study


def test_study_script_pairs_each_budget_with_the_default_by_seed():
    """scripts/study_dropout.py's budget effect: suppression(ε) − suppression(0.05), seed by seed."""
    study = _script("study_dropout")
    rows, i = [], 0
    for budget, cost in ((0.05, (0.06, 0.07, 0.05)), (0.1, (0.04, 0.04, 0.04))):
        for seed in (0, 1, 2):
            rows += [run(i, "viewmaker", 0.0, seed, 0.5 + 0.01 * seed, 0.34, budget=budget),
                     run(i + 1, "viewmaker", 1.0, seed, 0.5 + 0.01 * seed - cost[seed], 0.6, budget=budget)]
            i += 2
    df = pd.DataFrame(rows)
    df["suppression_main"] = tables.suppression_per_run(df, "probe_main")
    [line] = study.budget_effect(df)
    # differences −0.02, −0.03, −0.01: mean −0.02, sd 0.01, t = −0.02 / (0.01 / √3) = −3.464 with 2 degrees of
    # freedom, two-sided p = 1 − |t| / √(t² + 2) = 0.0742
    assert line.startswith("opacity 1, ε 0.1 against ε 0.05: class suppression -0.020 ± 0.010 over 3 seeds")
    assert line.endswith("(paired p 0.074)")


def test_axis_script_tests_the_longest_length_against_the_shortest():
    """scripts/study_axis.py's change along the training axis: one run at one end is a new draw against the
    other end's seeds; two or more at both ends, Welch's t. Values by hand."""
    study = _script("study_axis")

    def frame(short, long, middle=()):
        rows = [dict(views="viewmaker", overlay_opacity=1.0, image_steps=steps, alt_destroyed=v)
                for steps, values in ((100, short), (200, middle), (1000, long)) for v in values]
        # a control run (opacity 0) at the longest length does not count
        rows.append(dict(views="viewmaker", overlay_opacity=0.0, image_steps=1000, alt_destroyed=9.0))
        return pd.DataFrame(rows)

    # one run at the longest: t = (0.05 − 0.02) / (0.01 · √(1 + 1/3)) with 2 degrees of freedom, whose
    # two-sided p is 1 − |t| / √(t² + 2); the middle length does not enter
    diff, p = study.change(frame([0.01, 0.02, 0.03], [0.05], middle=[0.5]), "alt_destroyed", "viewmaker")
    t = 0.03 / (0.01 * math.sqrt(4 / 3))
    assert diff == pytest.approx(0.03) and p == pytest.approx(1 - t / math.sqrt(t * t + 2))
    # three at both ends with equal spread: Welch's df is 4 and t = 0.04 / √(2 · 0.01² / 3)
    from scipy import stats

    diff, p = study.change(frame([0.01, 0.02, 0.03], [0.05, 0.06, 0.07]), "alt_destroyed", "viewmaker")
    assert diff == pytest.approx(0.04)
    assert p == pytest.approx(2 * stats.t.sf(0.04 / math.sqrt(2 * 0.01 ** 2 / 3), 4))
    # named lengths: the middle (one run, 0.5) against the shortest, a new draw against its three seeds
    diff, p = study.change(frame([0.01, 0.02, 0.03], [0.05], middle=[0.5]), "alt_destroyed", "viewmaker",
                           (100, 200))
    t = 0.48 / (0.01 * math.sqrt(4 / 3))
    assert diff == pytest.approx(0.48) and p == pytest.approx(1 - t / math.sqrt(t * t + 2))
    assert study.change(frame([0.01, 0.02], []), "alt_destroyed", "viewmaker") is None
    assert math.isnan(study.change(frame([0.02], [0.05]), "alt_destroyed", "viewmaker")[1])


def test_axis_script_trend_is_least_squares_on_log_image_steps_with_the_slopes_p():
    """scripts/study_axis.py's trend: every opacity-1 run of the views a point at log10(image-steps).
    Points (1, 0), (2, 1), (3, 3): slope 3 / 2, residuals 1/6, −1/3, 1/6, s² = (1/6) / 1, se = √(s² / 2),
    t = 1.5 · √12 with 1 degree of freedom, whose two-sided p is 1 − 2·atan(t)/π."""
    study = _script("study_axis")
    rows = [dict(views="viewmaker", overlay_opacity=1.0, image_steps=10 ** x, m=y)
            for x, y in ((1, 0.0), (2, 1.0), (3, 3.0))]
    rows += [dict(views="viewmaker", overlay_opacity=0.0, image_steps=10, m=50.0),  # a control: left out
             dict(views="expert", overlay_opacity=1.0, image_steps=10, m=-50.0)]  # other views: left out
    slope, at_paper, p = study.trend(pd.DataFrame(rows), "m", "viewmaker")
    assert slope == pytest.approx(1.5)
    assert at_paper == pytest.approx(4 / 3 + 1.5 * (math.log10(study.PAPER_IMAGE_STEPS) - 2))
    assert p == pytest.approx(1 - 2 * math.atan(1.5 * math.sqrt(12)) / math.pi)
    # two points: a line through both, no degrees of freedom left for a p
    two = pd.DataFrame(rows[:2])
    assert math.isnan(study.trend(two, "m", "viewmaker")[2])
    assert study.trend(pd.DataFrame(rows[:1]), "m", "viewmaker") is None


def test_axis_script_gap_between_views_is_expert_minus_viewmaker_at_one_length():
    """scripts/study_axis.py's views_gap: at one length, opacity 1 only, Welch's t between the two views."""
    from scipy import stats

    study = _script("study_axis")
    rows = [dict(views=v, overlay_opacity=1.0, image_steps=100, m=x)
            for v, xs in (("expert", (0.06, 0.07, 0.08)), ("viewmaker", (0.03, 0.04, 0.05))) for x in xs]
    rows += [dict(views="viewmaker", overlay_opacity=1.0, image_steps=200, m=9.0),  # another length
             dict(views="expert", overlay_opacity=0.0, image_steps=100, m=9.0)]  # a control
    diff, p = study.views_gap(pd.DataFrame(rows), "m", 100)
    assert diff == pytest.approx(0.03)
    assert p == pytest.approx(2 * stats.t.sf(0.03 / math.sqrt(2 * 0.01 ** 2 / 3), 4))
    assert study.views_gap(pd.DataFrame(rows), "m", 200) is None  # no expert run at that length
