"""Results tables from sweep summaries (the paper's layout) and the results notebook."""
from __future__ import annotations

import io
import json
import math

import pandas as pd
import pytest

from freeze_embed.tools import results

from freeze_embed import paper
from freeze_embed.paper import dataset_name, model_name
from freeze_embed.tools.results import load_summaries, render, tables

from helpers import ROOT


def summary(method, dataset, id_mean, ood_mean, id_ci=None, ood_ci=None, model="CLIP ViT-B/16", n=3):
    return {"method": method, "dataset": dataset, "model": model,
            "id": {"mean": id_mean, "ci90": id_ci, "n": n}, "ood": {"mean": ood_mean, "ci90": ood_ci, "n": n}}


SUMMARIES = [  # written in a scrambled order: tables follow the paper's
    summary("SGD (freeze-embed)", "Waterbirds", 0.978, 0.737, 0.001, 0.02),
    summary("SGD", "Waterbirds", 0.972, 0.625, 0.002, 0.03),
    summary("AdamW", "Living-17", 0.981, 0.828, 0.003, 0.004),
    summary("SGD", "Living-17", 0.978, 0.800, 0.004, 0.01),
    summary("SGD (freeze-embed)", "Living-17", 0.982, 0.832),  # one seed: no CI
]


def test_table_layout_and_numbers():
    tabs = tables(SUMMARIES)
    mean, ci = tabs["OOD"]
    assert list(mean.index) == list(dict.fromkeys(x["method"] for x in SUMMARIES))  # rows in the order given
    assert list(mean.index) == ["SGD (freeze-embed)", "SGD", "AdamW"]
    assert list(mean.columns) == ["Living-17", "Waterbirds", "Avg."]
    assert mean.loc["SGD", "Avg."] == pytest.approx((80.0 + 62.5) / 2)
    assert ci.loc["SGD", "Avg."] == pytest.approx(math.sqrt(1.0 ** 2 + 3.0 ** 2) / 2)
    assert math.isnan(mean.loc["AdamW", "Avg."])  # no Waterbirds run: no average
    assert mean.loc["SGD (freeze-embed)", "Avg."] == pytest.approx((83.2 + 73.7) / 2)
    assert math.isnan(ci.loc["SGD (freeze-embed)", "Avg."])  # a dataset without CI: none for the average
    assert tabs["ID"][0].loc["AdamW", "Living-17"] == pytest.approx(98.1)


def test_markdown_exact():
    text = render([SUMMARIES[1], SUMMARIES[3]], "markdown")
    assert text == (
        "**ID accuracy (%) on CLIP ViT-B/16: mean ± 90% CI, 3 seeds**\n\n"
        "| Method | Living-17 | Waterbirds | Avg. |\n|:--|--:|--:|--:|\n"
        "| SGD | 97.8 ± 0.4 | 97.2 ± 0.2 | 97.5 ± 0.2 |\n\n"
        "**OOD accuracy (%) on CLIP ViT-B/16: mean ± 90% CI, 3 seeds**\n\n"
        "| Method | Living-17 | Waterbirds | Avg. |\n|:--|--:|--:|--:|\n"
        "| SGD | 80.0 ± 1.0 | 62.5 ± 3.0 | 71.2 ± 1.6 |")


def test_models_group_rows_and_missing_cells():
    rows = SUMMARIES + [summary("SGD", "Living-17", 0.9, 0.7, model="ConvNeXt-B")]
    mean, _ = tables(rows)["ID"]
    assert list(mean.index.names) == ["Model", "Method"]
    assert list(mean.index)[:1] == [("CLIP ViT-B/16", "SGD (freeze-embed)")] and ("ConvNeXt-B", "SGD") in mean.index
    assert ("ConvNeXt-B", "AdamW") not in mean.index  # no empty rows
    md = render(rows, "markdown")
    assert "| Model | Method | Living-17 | Waterbirds | Avg. |" in md
    assert "| ConvNeXt-B | SGD | 90.0 | - | - |" in md


def test_latex_and_csv():
    tex = render(SUMMARIES, "latex")
    assert r"\begin{tabular}{l|ccc}" in tex and r"80.0 $\pm$ 1.0" in tex
    assert r"SGD (freeze-embed) & 98.2 & 97.8 $\pm$ 0.1 & 98.0 \\" in tex
    assert tex.count(r"\end{tabular}") == 2
    df = pd.read_csv(io.StringIO(render(SUMMARIES, "csv")))
    assert list(df.columns) == ["table", "Method", "Living-17", "Living-17 CI", "Waterbirds", "Waterbirds CI", "Avg.",
                                "Avg. CI"]
    row = df[(df.table == "OOD") & (df.Method == "SGD")].iloc[0]
    assert row["Waterbirds"] == 62.5 and row["Waterbirds CI"] == 3.0 and row["Avg."] == 71.25


def test_labels():
    assert dataset_name("waterbirds") == "Waterbirds" and dataset_name("DemoShift") == "Demo"
    assert dataset_name("camelyon17") == "Camelyon" and dataset_name("MyData") == "MyData"
    assert dataset_name("cifar10") == "CIFAR-10" and dataset_name("CIFAR10") == "CIFAR-10"  # config stem, class
    assert model_name("open_clip:ViT-B-16:openai") == "CLIP ViT-B/16" and model_name("timm:x") == "timm:x"
    assert results.dataset_name is paper.dataset_name and results.DATASETS is paper.DATASETS  # one vocabulary


def test_cli_finds_summaries_below_dirs(tmp_path, capsys):
    for i, s in enumerate(SUMMARIES):
        d = tmp_path / "sweeps" / f"s{i}"
        d.mkdir(parents=True)
        (d / "summary.json").write_text(json.dumps(s))
    assert len(load_summaries([tmp_path / "sweeps"])) == 5
    results.main([str(tmp_path / "sweeps"), "--format", "markdown"])
    out = capsys.readouterr().out
    assert "| SGD (freeze-embed) | 98.2 | 97.8 ± 0.1 | 98.0 |" in out
    with pytest.raises(results.ResultsError, match="no sweep summaries"):
        results.main([str(tmp_path / "empty")])


@pytest.mark.slow
def test_results_notebook_runs(tmp_path, monkeypatch):
    """notebooks/results_tables.ipynb on its built-in example summaries (no sweeps needed), in seconds."""
    import nbformat
    monkeypatch.setenv("FREEZE_EMBED_SWEEPS", str(tmp_path / "no_sweeps_here"))
    from nbclient import NotebookClient
    nb = nbformat.read(ROOT / "notebooks/results_tables.ipynb", as_version=4)
    NotebookClient(nb, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    text = "\n".join(o.get("text", "") + str(o.get("data", {}).get("text/markdown", ""))
                     for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "SGD (freeze-embed)" in text and "OOD accuracy" in text
    assert any("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)


# --- momentum x effective LR (Li et al., ICLR 2020) ---------------------------------------------------------------
def momentum_summary():
    """A two-momentum sweep's summary as freeze_embed.tools.sweep writes it (one seed: no CI)."""
    from freeze_embed.tools.sweep import summarize_momenta

    def rec(m, lr, id_val, id_, ood):
        block = {"best/id_val/acc": id_val, "best/paper/id": id_, "best/paper/ood": ood}
        return {"momentum": m, "lr": lr, "seed": 0, "status": "done", "results": {"best_epoch": 2, "best": block}}
    records = [rec(0.0, 0.01, 0.90, 0.91, 0.60), rec(0.0, 0.1, 0.95, 0.94, 0.70),
               rec(0.9, 0.001, 0.97, 0.96, 0.65), rec(0.9, 0.01, 0.80, 0.82, 0.75)]
    return {"method": "SGD", "dataset": "Demo", "model": "demo", **summarize_momenta(records)}


def test_momentum_table_and_markdown():
    table = results.momentum_table([momentum_summary()])
    assert list(table["Effective LR"]) == [0.01, 0.1, 0.01, 0.1] and list(table["LR"]) == [0.01, 0.1, 0.001, 0.01]
    assert list(table["chosen"]) == [False, True, True, False]  # per momentum, on ID val
    assert list(table["OOD"]) == pytest.approx([60.0, 70.0, 65.0, 75.0])
    md = results.momentum_markdown(table)
    assert "| Momentum | Effective LR | LR | Runs | ID val | ID | OOD |" in md
    assert "| 0 | 0.1* | 0.1 | 1/1 | 95.0 | 94.0 | 70.0 |" in md
    assert "| 0.9 | 0.01* | 0.001 | 1/1 | 97.0 | 96.0 | 65.0 |" in md
    assert "| 0.9 | 0.1 | 0.01 | 1/1 | 80.0 | 82.0 | 75.0 |" in md
    with pytest.raises(ValueError, match="no momentum sweep"):
        results.momentum_table(SUMMARIES)


def test_momentum_plot_one_line_per_momentum(tmp_path, capsys):
    d = tmp_path / "sweep"
    d.mkdir()
    (d / "summary.json").write_text(json.dumps(momentum_summary()))
    png = tmp_path / "fig" / "momentum.png"
    results.main([str(d), "--momentum", "--plot", str(png)])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| 0.9 | 0.01* | 0.001 |" in capsys.readouterr().out
    fig = results.plot_momentum(results.momentum_table([momentum_summary()]))
    id_ax, ood_ax = fig.axes
    lines = [line for line in ood_ax.get_lines() if not line.get_label().startswith("_")]  # not the CI caps
    assert id_ax.get_xscale() == "log" and [line.get_label() for line in lines] == ["momentum 0", "momentum 0.9"]
    x, y = lines[1].get_data()
    assert list(x) == [0.01, 0.1] and list(y) == pytest.approx([65.0, 75.0])
    with pytest.raises(results.ResultsError, match="add --momentum"):
        results.main([str(d), "--plot", str(png)])
