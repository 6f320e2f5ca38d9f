"""The layer figure says what it shows: the metric, the task, the model, the seeds per point, the training budget;
spread only with several seeds; a chance line for accuracy."""

import pytest

from .test_report import finished, write_sweep


def drawn_axes(monkeypatch):
    """The axes of every figure the report saves."""
    import matplotlib.figure

    seen = []
    original = matplotlib.figure.Figure.savefig

    def savefig(self, *args, **kwargs):
        seen.append(self.axes[0])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)
    return seen


@pytest.mark.parametrize("seeds", [(1,), (1, 2, 3)])
def test_layer_figure_labels(tmp_path, monkeypatch, seeds):
    from idspam.tools.report import report

    sweep = tmp_path / "layer_sweep" / "t"
    jobs = [([f"layer={layer}", f"seed={seed}"],
             finished(0.6 + 0.02 * layer + 0.01 * seed, method="idspam", task="rte", seed=seed, layer=layer,
                      model="roberta_large", experiment="layer_sweep",
                      config={"trainer": {"max_epochs": 5, "max_steps": -1}, "task": {"max_train_samples": 64}}))
            for layer in range(3) for seed in seeds]
    write_sweep(sweep, {"layer": "range(0,3)", "seed": ",".join(map(str, seeds))}, [], jobs)
    axes = drawn_axes(monkeypatch)
    report([sweep])
    ax = axes[0]
    title, ylabel = ax.get_title(), ax.get_ylabel()
    assert "rte" in title and "roberta_large" in title and f"{len(seeds)} seed(s) per point" in title
    assert "budget: 5 epochs, 64 train samples" in title  # from the jobs' configs
    assert "accuracy" in ylabel
    spread = [c for c in ax.collections if c.get_paths()]  # fill_between's polygons
    if len(seeds) == 1:
        assert "one seed, no spread" in ylabel and not spread
    else:
        assert "mean ± std over seeds" in ylabel and spread
    chance = [line for line in ax.get_lines() if "chance" in line.get_label()]
    assert len(chance) == 1 and chance[0].get_ydata()[0] == pytest.approx(50.0)  # RTE: two classes
