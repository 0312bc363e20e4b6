"""The compiled viewmaker step on the CPU (compile=True; issue 19, item 5 measured it and left it off by
default): the same views as eager on the same weights, and a step that trains the viewmaker."""
import shutil

import pytest
import torch
from test_fast_step import raw_batch, synthetic_trainer


@pytest.mark.skipif(not any(shutil.which(c) for c in ("g++", "clang++", "c++")),
                    reason="no C++ compiler for inductor's CPU kernels")
def test_compiled_cpu_viewmaker_step_matches_eager(tmp_path):
    """Inductor on the CPU (fp32): the same views as eager to float rounding, and a step that trains."""
    eager = synthetic_trainer(tmp_path / "eager", views="viewmaker", compile=False)
    compiled = synthetic_trainer(tmp_path / "compiled", views="viewmaker", compile=True)
    assert compiled.vm_fn is not compiled.viewmaker and eager.vm_fn is eager.viewmaker
    compiled.viewmaker.load_state_dict(eager.viewmaker.state_dict())
    compiled.encoder.load_state_dict(eager.encoder.state_dict())
    raw = raw_batch()
    views = []
    for t in (eager, compiled):
        with torch.no_grad():
            views.append(t.views(raw, torch.Generator().manual_seed(0), grad=False))
    for a, b in zip(*views):
        assert (a - b).abs().max() < 1e-3
        assert not torch.equal(a, eager.data.modality.to_encoder(raw.float() / 255))  # a real perturbation
    before = [p.clone() for p in compiled.viewmaker.parameters()]
    out = compiled.step(raw, torch.Generator().manual_seed(1))
    assert torch.isfinite(out["loss"]) and torch.isfinite(out["viewmaker_loss"])
    assert any(not torch.equal(b, p) for b, p in zip(before, compiled.viewmaker.parameters()))
