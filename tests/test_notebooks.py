"""Every notebook runs end to end through papermill with tiny parameters; hygiene rules hold."""
import ast
import json
import math

import pytest
from conftest import ROOT, NotebookFailed, needs_cifar, needs_nbformat, needs_papermill, run_notebook

from featdrop import config

# papermill and nbformat are imported where they are used, and each test says which one it needs: on an
# image without papermill the notebooks are not executed, but the hygiene rules are still checked.
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
TINY = dict(preset="quick", oracles=False, epochs=1, subset=256, test_subset=128, batch_size=64,
            progress=False)


def execute(name, tmp_path, **params):
    return run_notebook(name, tmp_path / f"{name}.out.ipynb", **params)


def read_notebook(path):
    import nbformat

    return nbformat.read(path, as_version=4)


def parameters_cell(path):
    nb = read_notebook(path)
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"{path.name}: exactly one cell tagged 'parameters'"
    return {t.id: ast.literal_eval(n.value) for n in ast.parse(cells[0].source).body
            if isinstance(n, ast.Assign) for t in n.targets}


@needs_nbformat
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_without_outputs_definitions_or_path_hacks(path):
    nb = read_notebook(path)
    assert nb.cells[0].cell_type == "markdown" and "papermill" in nb.cells[0].source
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: outputs not stripped"
        tree = ast.parse(cell.source)
        assert not any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda))
                       for n in ast.walk(tree)), f"{path.name}: definitions belong in featdrop/"
        assert "sys.path" not in cell.source


@needs_nbformat
def test_pretrain_parameters_are_config_fields_and_defaults_parse():
    params = parameters_cell(ROOT / "notebooks" / "pretrain.ipynb")
    assert set(params) <= set(config.field_names())
    assert {"overlay", "views", "preset", "epochs", "batch_size", "budget", "loss", "seed", "device",
            "data_dir", "out_dir"} <= set(params)
    config.resolve(config.make(**params), cuda_available=False)


@needs_nbformat
@pytest.mark.parametrize("name,extra", [("views", "VIEWS_PARAMETERS"), ("report", "REPORT_PARAMETERS")])
def test_other_notebooks_parameters_are_config_fields_or_declared(name, extra):
    from featdrop import notebook

    params = parameters_cell(ROOT / "notebooks" / f"{name}.ipynb")
    allowed = set(config.field_names()) | set(getattr(notebook, extra))
    assert set(params) <= allowed
    config.make(**{k: v for k, v in params.items() if k in config.field_names() and v is not None})


@needs_papermill
def test_unknown_parameter_fails_the_run_listing_known_names(tmp_path):
    with pytest.raises(NotebookFailed) as err:
        execute("pretrain", tmp_path, epoch=3, out_dir=str(tmp_path / "run"))
    assert "unknown parameter(s) ['epoch']" in str(err.value) and "epochs" in str(err.value)
    assert not (tmp_path / "run").exists()


def figures_in(executed):
    return sum(1 for c in executed["cells"] for o in c.get("outputs", []) if "image/png" in o.get("data", {}))


@needs_papermill
@needs_cifar
@pytest.mark.parametrize("views", ["expert", "viewmaker"])
def test_pretrain_notebook_runs_and_writes_its_files(tmp_path, data_dir, views):
    run = tmp_path / "run"
    executed = execute("pretrain", tmp_path, overlay="shapes", views=views, viewmaker_width=8,
                       data_dir=data_dir, out_dir=str(run), **TINY)
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("probe_main", "probe_alt", "knn_main", "knn_alt", "wall_s"):
        assert math.isfinite(metrics[key])
    assert 0 <= metrics["probe_alt"] <= 1 and metrics["views"] == views
    for fig in ("inputs", "loss_curves", "views", "probes"):
        assert (run / "figures" / f"{fig}.png").stat().st_size > 5000
    assert figures_in(executed) >= 4
    assert any("preset='auto'" in "".join(o.get("text", "")) or "preset=quick" in "".join(o.get("text", ""))
               for c in executed["cells"] for o in c.get("outputs", []))


@needs_papermill
@needs_cifar
def test_views_notebook_renders_statically_from_a_run(tmp_path, data_dir):
    from featdrop import train

    run = tmp_path / "run"
    train.pretrain(overlay="shapes", views="viewmaker", viewmaker_width=8, data_dir=data_dir,
                   out_dir=str(run), **TINY)
    executed = execute("views", tmp_path, run_dir=str(run), n_views=3, runs_root=str(tmp_path))
    assert (run / "figures" / "explorer.png").stat().st_size > 5000
    assert figures_in(executed) >= 1
    text = json.dumps(executed)
    assert "alt_dropped" in text and "application/vnd.jupyter.widget-view+json" in text


@needs_papermill
@needs_cifar
def test_report_notebook_launches_missing_runs_and_tabulates(tmp_path, data_dir):
    runs_dir = tmp_path / "grid"
    executed = execute("report", tmp_path, runs_dir=str(runs_dir), launch=True, overlays=["shapes"],
                       views_list=["expert"], seeds=[0, 1], data_dir=data_dir, epochs=1, subset=256,
                       test_subset=128, batch_size=64, oracles=False)  # its cells run in worker processes
    for seed in (0, 1):  # one grid cell per seed, named by the swept fields
        run = runs_dir / f"overlay-shapes__views-expert__seed-{seed}"
        assert ((run / "metrics.json").exists() and (run / "grid.log").exists()
                and not (run / "error.txt").exists())
    assert (runs_dir / "figures" / "comparison_probe.png").exists()
    assert "± " in json.dumps(executed, ensure_ascii=False)  # mean ± sd over the two seeds


def test_view_grid_shows_amplified_perturbations_not_rescaled_as_uint8():
    import torch

    from featdrop.viz import plots

    x = torch.full((1, 3, 8, 8), 0.5)
    delta = torch.full((1, 3, 8, 8), 0.3)  # 0.5 + 5·0.3 = 2.0 > 1.5: still a float image, clamps to white
    fig = plots.view_grid(x, [x + delta], [delta])
    panel = fig.axes[2].get_images()[0].get_array()
    assert float(panel.min()) == 1.0
    assert float(plots._to_hwc(torch.full((3, 2, 2), 255, dtype=torch.uint8)).max()) == 1.0


def test_probe_bars_show_every_probed_label_and_skip_a_constant_one():
    from featdrop.viz import plots

    base = dict(probe_main=0.4, knn_main=0.3, chance_main=0.1, probe_alt=0.6, knn_alt=0.5, chance_alt=1 / 3)
    coarse = dict(probe_coarse=0.9, knn_coarse=0.85, chance_coarse=0.6)

    def shown(metrics):
        ax = plots.probe_bars(metrics).axes[0]
        return [t.get_text() for t in ax.get_xticklabels()], [round(p.get_height(), 3) for p in ax.patches]

    assert shown(base) == (["main label", "alternate label"], [0.4, 0.6, 0.3, 0.5])
    assert shown({**base, **coarse}) == (["main label", "alternate label", "coarse label"],
                                         [0.4, 0.6, 0.9, 0.3, 0.5, 0.85])
    # overlay "none": the overlay label is constant (chance 1.0), so its bar would say nothing
    assert shown({**base, "chance_alt": 1.0, "probe_alt": 1.0, **coarse})[0] == ["main label", "coarse label"]
