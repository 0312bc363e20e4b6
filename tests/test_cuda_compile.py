"""The compiled viewmaker on CUDA (issue 10): it runs, matches eager within bf16 tolerance, and traces
without graph breaks. Skipped without CUDA; `python -m pytest -m cuda` runs just the CUDA tests."""
import copy

import pytest
import torch

from featdrop import config, train
from featdrop.data.base import Data
from featdrop.views.modality import image_modality

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def trainer(tmp_path, compile_):
    cfg = config.make(overlay="shapes", preset="paper", views="viewmaker", device="cuda", batch_size=64,
                      compile=compile_, out_dir=str(tmp_path / str(compile_)), progress=False)
    return train.Trainer(cfg, data=Data(image_modality(), None, None, 10, 3))


def test_compiled_viewmaker_step_matches_eager_and_has_no_graph_breaks(tmp_path):
    eager, compiled = trainer(tmp_path, False), trainer(tmp_path, True)
    compiled.viewmaker.load_state_dict(eager.viewmaker.state_dict())
    compiled.encoder.load_state_dict(eager.encoder.state_dict())
    raw = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, device="cuda")
    views = []
    for t in (eager, compiled):
        with torch.no_grad():
            views.append(t.views(raw, torch.Generator(device="cuda").manual_seed(0), grad=False))
    for a, b in zip(*views):  # bf16: a few units in the last place of a normalised pixel
        assert (a.float() - b.float()).abs().max() < 0.1
    losses = [float(t.loss(*v)[0]) for t, v in zip((eager, compiled), views)]
    assert losses[1] == pytest.approx(losses[0], rel=0.02, abs=0.02)
    out = compiled.step(raw, torch.Generator(device="cuda").manual_seed(1))
    assert torch.isfinite(out["loss"]) and torch.isfinite(out["viewmaker_loss"])
    vm = copy.deepcopy(eager.viewmaker)
    x = raw.float() / 255
    explained = torch._dynamo.explain(vm)(
        x, noise=vm.draw_noise(x, torch.Generator(device="cuda").manual_seed(0)))
    assert explained.graph_break_count == 0
