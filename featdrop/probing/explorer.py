"""Interactive view visualisation (``notebooks/views.ipynb``): watch feature dropout happen.

``ViewExplorer`` loads a run (or trains a tiny demo run when there is none), fits linear probes for
the main and the alternate label on clean training features, and draws, for one test example, the
original and several views, each titled with what the alternate-label probe predicts from that view.
A view whose overlay the viewmaker destroyed is predicted wrongly (red title). In JupyterLab,
``widget()`` adds controls; ``figure()`` draws the same picture statically (papermill, export).
"""
from __future__ import annotations

from pathlib import Path

import torch

from .. import config as cfgmod
from .. import probe, rundir
from ..data import records
from ..data.audio import RATE
from ..oracles import store as oracle_store
from ..train import load_run, pretrain
from ..train.figures import draw_views
from ..train.monitor import dropped_fraction
from ..viz import plots


def find_runs(root: str | Path = "runs") -> list[str]:
    return sorted(str(p.parent) for p in cfgmod.project_path(root).glob("*/checkpoint.pt"))


class ViewExplorer:
    def __init__(self, run_dir: str | None = None, index: int = 0, n_views: int = 4,
                 budget: float | None = None, views: str | None = None, seed: int = 0,
                 demo: dict | None = None, probe_n: int = 2000):
        run_dir = str(cfgmod.project_path(run_dir)) if run_dir is not None else None
        if run_dir is None or not (Path(run_dir) / "checkpoint.pt").exists():
            run_dir = self._train_demo(run_dir, demo or {})
        self.run_dir = run_dir
        self.trainer = load_run(run_dir)
        self.cfg, self.data = self.trainer.cfg, self.trainer.data
        self.index, self.n_views, self.seed = index, n_views, seed
        self.views = views or self.cfg.views
        self.budget = budget or self.cfg.budget
        self._fit_probes(probe_n)
        # the run's label oracles, when cached (a run with oracles=True trained them): each view's title says
        # what the overlay oracle reads, independent of the encoder
        self.oracles = oracle_store.for_run(self.cfg, self.data, self.trainer.device, say=lambda s: None,
                                            train=False)

    @staticmethod
    def _train_demo(run_dir, demo: dict) -> str:
        """A few quick steps so there is something to look at (about a minute on a CPU)."""
        kw = dict(overlay="shapes", views="viewmaker", preset="quick", subset=1024, test_subset=256, epochs=2,
                  batch_size=128, progress=False)
        kw.update(demo)
        kw["out_dir"] = run_dir or str(cfgmod.PROJECT_ROOT / "runs"
                                       / f"views-demo-{kw['overlay']}-{kw['views']}")
        print(f"no trained run given: training a tiny demo run into {kw['out_dir']} ...")
        pretrain(cfgmod.make(**kw))
        return kw["out_dir"]

    def _features(self, x):
        return self.trainer.encoder.features(self.trainer.cl(x))[0].float()

    def _fit_probes(self, n: int) -> None:
        split = self.data.train.draw(0)
        n = min(n, len(split.labels))
        feats = self.trainer.clean_features(split.images, n)
        self.probes = {"main": probe.LinearProbe(feats, split.labels[:n], self.data.num_classes),
                       "alt": probe.LinearProbe(feats, split.alt_labels[:n], self.data.num_alt_classes)}
        self.trainer.encoder.eval()

    # ---------------------------------------------------------------- the picture
    def predict(self, x) -> tuple[torch.Tensor, torch.Tensor]:
        """Alternate-label prediction and its probability for encoder inputs x."""
        with torch.no_grad():
            p = self.probes["alt"].logits(self._features(x)).softmax(1)
        return p.argmax(1), p.max(1).values

    def figure(self, index: int | None = None, views: str | None = None, budget: float | None = None,
               resample: int = 0):
        index = self.index if index is None else index
        views, budget = views or self.views, budget or self.budget
        t = self.data.test
        raw = t.images[index:index + 1]
        g = torch.Generator().manual_seed(self.seed * 1000 + resample)
        outs, deltas, enc_in = draw_views(self.trainer, raw, self.n_views, g, views, budget)
        names = self.alt_names()
        truth = int(t.alt_labels[index])
        clean_pred, clean_prob = self.predict(self.data.modality.clean(raw))
        oracle = self.oracles.get("alt")
        clean_read = int(oracle.read(self.trainer.cl(self.data.modality.clean(raw)))[0]) if oracle else None
        titles = []
        for x in enc_in:  # "dropped": the probe reads the overlay from the clean input but not from this view
            pred, prob = self.predict(x)
            mark = "✓" if int(pred) == truth else ("✗ dropped" if int(clean_pred) == truth else "✗")
            title = f"probe: {names[int(pred)]} {float(prob):.2f} {mark}"
            if oracle is not None:  # "destroyed": the oracle reads the clean input right and this view wrong
                read = int(oracle.read(self.trainer.cl(x))[0])
                verdict = "✓" if read == truth else ("✗ destroyed" if clean_read == truth else "✗")
                title += f"\noracle: {names[read]} {verdict}"
            titles.append(title)
        fig = plots.view_grid(self.data.modality.base(raw), outs, deltas, [titles],
                              spectrogram=self.data.modality.audio)
        kind = f"viewmaker views, budget ε {budget:g}" if views == "viewmaker" else "expert views"
        fig.suptitle(f"test #{index}: true alternate label {names[truth]}; clean input → "
                     f"{names[int(clean_pred)]} ({float(clean_prob):.2f}); {kind}", fontsize=8, y=1.08)
        return fig

    def alt_names(self) -> tuple[str, ...]:
        """The alternate label's class names from the overlay's record (audio: the run's noise_classes)."""
        return records.get(self.cfg.overlay).alt_class_names(self.cfg.noise_classes)

    def save_figure(self, **kw):
        """figure(), also written to ``<run_dir>/figures/explorer.png``."""
        fig = self.figure(**kw)
        rundir.save_figure(fig, Path(self.run_dir) / "figures" / "explorer.png")
        return fig

    def dropout_rate(self, n: int = 256, views: str | None = None, budget: float | None = None) -> dict:
        """Over n test examples whose clean input the alt probe gets right: the fraction of views on
        which it is wrong (the overlay feature was dropped), and the same for the main label."""
        views, budget = views or self.views, budget or self.budget
        t, m = self.data.test, self.data.modality
        raw = t.images[:n]
        g = torch.Generator().manual_seed(self.seed)
        _, _, (x,) = draw_views(self.trainer, raw, 1, g, views, budget)
        out = {}
        for name, y in (("alt", t.alt_labels[:n]), ("main", t.labels[:n])):
            with torch.no_grad():
                clean_pred = self.probes[name].logits(self._features(m.clean(raw))).argmax(1)
                view_pred = self.probes[name].logits(self._features(x)).argmax(1)
            out[f"{name}_dropped"] = dropped_fraction(clean_pred, view_pred, y)
        return out

    # ---------------------------------------------------------------- JupyterLab
    def widget(self, runs_root: str = "runs"):
        import ipywidgets as w
        runs = find_runs(runs_root) or [self.run_dir]
        if self.run_dir not in runs:
            runs.append(self.run_dir)
        run = w.Dropdown(options=runs, value=self.run_dir, description="run")
        index = w.IntSlider(self.index, 0, len(self.data.test.labels) - 1, description="image")
        kind = w.ToggleButtons(options=["viewmaker", "expert"], value=self.views, description="views")
        budget = w.FloatLogSlider(self.budget, base=10, min=-2.5, max=-0.3, step=0.05, description="budget ε")
        again = w.Button(description="resample noise", icon="refresh")
        out = w.Output()
        state = {"resample": 0}

        def redraw(*_, first: bool = False):
            fig = self.figure(index.value, kind.value, budget.value, state["resample"])
            plots.show_in(out, fig, first)

        def change_run(change):
            fresh = ViewExplorer(change["new"], index.value, self.n_views, seed=self.seed)
            self.__dict__.update(fresh.__dict__)
            index.max = len(self.data.test.labels) - 1
            budget.value = self.budget
            redraw()

        def resample(_):
            state["resample"] += 1
            redraw()

        for control in (index, kind, budget):
            control.observe(redraw, names="value")
        run.observe(change_run, names="value")
        again.on_click(resample)
        redraw(first=True)
        return w.VBox([w.HBox([run, kind]), w.HBox([index, budget, again]), out])

    # ---------------------------------------------------------------- audio runs
    def _audio_views(self, index: int | None, resample: int, budget: float | None) -> dict:
        """Test clip ``index``: its raw item, speech alone, clean input and labels; two expert views and, when
        the run has a viewmaker, two viewmaker views with their δ (one generator: the figure and the players
        get the same views)."""
        m, t = self.data.modality, self.data.test
        if not m.audio:
            raise ValueError(f"this is for audio runs (overlay='noise'); this run has "
                             f"overlay={self.cfg.overlay!r}")
        index = self.index if index is None else index
        raw = t.images[index:index + 1]
        g = torch.Generator().manual_seed(self.seed * 1000 + resample)
        out = dict(index=index, raw=raw[:, 0] if raw.dim() == 3 else raw, speech=t.base[index:index + 1],
                   clean=m.clean(raw), digit=int(t.labels[index]), noise=int(t.alt_labels[index]))
        out["expert"] = draw_views(self.trainer, raw, 2, g, "expert")
        if self.trainer.viewmaker is not None:
            out["viewmaker"] = draw_views(self.trainer, raw, 2, g, "viewmaker", budget or self.budget)
        return out

    def audio_figure(self, index: int | None = None, resample: int = 0, budget: float | None = None):
        """Audio runs: one test clip as the encoder sees it (speech + noise) beside the speech alone, two
        expert views and, with a viewmaker, two viewmaker views and their perturbations δ. The title names the
        digit and the noise class; each input's title says what the run's two probes read from it (✓ right,
        ✗ wrong)."""
        v, names = self._audio_views(index, resample, budget), self.alt_names()

        def read(x):
            with torch.no_grad():
                f = self._features(x)
                d, n = (int(self.probes[k].logits(f).argmax(1)) for k in ("main", "alt"))
            return (f"reads {d} {'✓' if d == v['digit'] else '✗'}, "
                    f"{names[n]} {'✓' if n == v['noise'] else '✗'}")

        rows = [[(self.data.modality.logmel(v["speech"])[0], "speech alone (not an input)", "logmel"),
                 (v["clean"][0], f"clip = speech + noise\n{read(v['clean'])}", "logmel")]]
        outs, _, enc = v["expert"]
        rows[0] += [(outs[j][0], f"expert view {j + 1}\n{read(enc[j])}", "logmel") for j in range(2)]
        if "viewmaker" in v:
            outs, deltas, enc = v["viewmaker"]
            rows.append([p for j in range(2) for p in (
                (outs[j][0], f"viewmaker view {j + 1}\n{read(enc[j])}", "logmel"),
                (deltas[j][0], f"δ{j + 1} (ε {budget or self.budget:g})", "delta"))])
        title = (f"test clip #{v['index']}: the digit {v['digit']} with {names[v['noise']]} noise "
                 f"(noise_volume {self.cfg.noise_volume:g}); log-mels, 64 mel bands × 64 frames")
        return plots.spectrogram_panels(rows, title)

    def players(self, index: int | None = None, resample: int = 0, budget: float | None = None):
        """Audio runs in JupyterLab: players for the clip of ``audio_figure()``: the speech alone and the clip
        (their waveforms), and its views (log-mels inverted by Griffin-Lim: the phase is estimated, not
        recovered, so expect a slightly metallic sound)."""
        import ipywidgets as w
        from IPython.display import Audio

        v = self._audio_views(index, resample, budget)
        named = [("speech alone", v["speech"][0]), ("clip = speech + noise", v["raw"][0])]
        for kind in ("expert", "viewmaker"):
            if kind in v:
                waves = self.data.modality.logmel.invert(torch.cat(v[kind][0]))
                named += [(f"{kind} view {j + 1}", waves[j]) for j in range(2)]

        def player(name, wave):
            wav = Audio(wave.float().cpu().numpy(), rate=RATE, normalize=True).data  # the bytes of a WAV file
            return w.VBox([w.Label(name), w.Audio(value=wav, format="wav", autoplay=False)])

        return w.GridBox([player(name, wave) for name, wave in named],
                         layout=w.Layout(grid_template_columns="repeat(4, 25%)"))

    def listen(self, view: int | None = 0, index: int | None = None, views: str | None = None,
               budget: float | None = None, resample: int = 0):
        """Audio runs: a player for view ``view`` of test item ``index`` (the same views as ``figure()``;
        ``view=None``: the clean input), its log-mel inverted by Griffin-Lim. The phase is estimated,
        not recovered, so expect a slightly metallic sound."""
        from IPython.display import Audio

        m = self.data.modality
        if not m.audio:
            raise ValueError(f"listen() is for audio runs (overlay='noise'); this run has "
                             f"overlay={self.cfg.overlay!r}")
        if view is not None and not 0 <= view < self.n_views:
            raise ValueError(f"view={view!r} is invalid: allowed None (the clean input) or "
                             f"0 … {self.n_views - 1}")
        index = self.index if index is None else index
        raw = self.data.test.images[index:index + 1]
        if view is None:
            x = m.base(raw)
        else:
            g = torch.Generator().manual_seed(self.seed * 1000 + resample)
            outs, _, _ = draw_views(self.trainer, raw, self.n_views, g, views or self.views,
                                    budget or self.budget)
            x = outs[view]
        return Audio(m.logmel.invert(x)[0].numpy(), rate=RATE, normalize=True)
