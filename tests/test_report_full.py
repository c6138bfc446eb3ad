"""The whole report from a constructed prediction set: every figure and table is produced, each
figure has the expected panels and curves, table values equal the inputs (matched budgets
interpolated by hand here), and missing results give a message while the rest is still made."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import AxesImage

from pag import report
from pag.report import RunFiles, planned_files
from pag.report.activity import layer_activity
from pag.report.curves import training_curves
from pag.report.qualitative import multipool_maps, ponder_maps, qualitative
from pag.report.results import ReportData, ReportInputs, load_summary
from pag.report.table import Table, latex_escape
from pag.report.tables import matched_budget_table, multipool_table, paper_table, value_at

H, W = 12, 16
IDS = ("val/000001", "val/000002")
BLOCKS = ("layer1.0", "layer2.0", "layer3.0")
BRANCHES = ("dilation 2", "dilation 4", "original", "skip")
TASKS = ("semantic", "boundary", "depth", "normals")
# (method, budget, effective MACs % of dense per seed, base value): seeds 0 and 1
RUNS = [
    ("dense", None, (100.0, 100.0), 0.60),
    ("multipool_avg", None, (150.0, 150.0), 0.64),
    ("mp_pag", None, (104.0, 104.0), 0.63),
    ("pag", 0.8, (90.0, 92.0), 0.58),
    ("pag", 0.5, (70.0, 72.0), 0.52),
    ("pag", 0.3, (50.0, 50.0), 0.44),
    ("truncation", 6, (60.0, 60.0), 0.50),
    ("truncation", 4, (30.0, 30.0), 0.40),
    ("layer_skip", 0.7, (95.0, 95.0), 0.55),
    ("layer_skip", 0.4, (75.0, 75.0), 0.45),
    ("sact", 1.0, (88.0, 88.0), 0.54),
    ("sact", 5.0, (65.0, 65.0), 0.47),
]
DENSE_MACS = 2.0e8


def run_name(method: str, budget, seed: int) -> str:
    return f"{method}-s{seed}" if budget is None else f"{method}-{budget:g}-s{seed}"


def metric_values(base: float, seed: int) -> dict[tuple[str, str], float]:
    """Each run's metrics: a base value, +0.01 for seed 1 (so the sample s.d. is 0.0071)."""
    v = base + 0.01 * seed
    return {
        ("semantic", "miou"): v,
        ("boundary", "ods"): v / 2,
        ("depth", "rmse"): 1.5 - v,
        ("depth", "abs_rel"): (1.5 - v) / 3,
        ("normals", "mean"): 60 - 40 * v,
        ("normals", "within_11_25"): v / 3,
    }


def compute_values(method: str, base: float, seed: int) -> dict[tuple[str, str], float]:
    """A dynamic method's compute rows: more units near boundaries than away (ratio > 1)."""
    if method not in ("pag", "layer_skip", "sact"):
        return {}
    near, far = 4 * base + 0.1 * seed, 3 * base
    return {
        ("compute", "activity"): base,
        ("compute", "near_boundary"): near,
        ("compute", "far_from_boundary"): far,
        ("compute", "allocation_ratio"): near / far,
    }


def write_summary(path: Path, runs=RUNS, drop=lambda row: False) -> Path:
    rows = []
    for method, budget, macs, base in runs:
        for seed in (0, 1):
            values = {**metric_values(base, seed), **compute_values(method, base, seed)}
            for (task, metric), value in values.items():
                row = {
                    "run": run_name(method, budget, seed),
                    "method": method,
                    "budget": "" if budget is None else budget,
                    "seed": seed,
                    "dataset": "synthetic",
                    "task": task,
                    "metric": metric,
                    "value": value,
                    "effective_macs": macs[seed] / 100 * DENSE_MACS,
                    "dense_macs": DENSE_MACS,
                }
                if not drop(row):
                    rows.append(row)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(report.COLUMNS))
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_run(folder: Path, method: str, seed: int) -> RunFiles:
    """A run's samples.npz, evaluation and training history, as the pipeline writes them."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    arrays: dict[str, np.ndarray] = {"ids": np.array(IDS)}
    for sid in IDS:
        arrays[f"{sid}/image"] = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        arrays[f"{sid}/semantic"] = rng.integers(0, 4, (H, W)).astype(np.uint8)
        arrays[f"{sid}/depth"] = rng.uniform(1, 5, (H, W)).astype(np.float16)
        normals = rng.normal(size=(H, W, 3))
        arrays[f"{sid}/normals"] = (
            normals / np.linalg.norm(normals, axis=-1, keepdims=True)
        ).astype(np.float16)
        arrays[f"{sid}/boundary"] = rng.integers(0, 256, (H, W), dtype=np.uint8)
        if method in ("pag", "layer_skip", "sact"):
            arrays[f"{sid}/ponder"] = rng.integers(0, len(BLOCKS) + 1, (H, W)).astype(np.float16)
        if method == "pag":
            for block in BLOCKS:
                arrays[f"{sid}/gate/{block}"] = rng.integers(0, 2, (H // 4, W // 4), dtype=np.uint8)
        if method == "mp_pag":
            arrays[f"{sid}/multipool/layer3.1"] = rng.integers(
                0, len(BRANCHES), (3, 4), dtype=np.uint8
            )
    np.savez_compressed(folder / "samples.npz", **arrays)
    activity = (
        {b: 1.0 - 0.2 * i for i, b in enumerate(BLOCKS)}
        if method in ("pag", "layer_skip", "sact")
        else {}
    )
    (folder / "evaluation.json").write_text(json.dumps({"activity": activity}))
    epochs = 3 if method == "dense" else 2
    terms = ("loss", *TASKS) + (("budget",) if method == "pag" else ())
    history = [{"epoch": e + 1, "train": {t: 1.0 / (e + 1) for t in terms}} for e in range(epochs)]
    (folder / "training.json").write_text(json.dumps({"history": history}))
    return RunFiles(folder / "evaluation.json", folder / "samples.npz", folder / "training.json")


def ground_truth(ids):
    rng = np.random.default_rng(7)
    truth = {}
    for sid in ids:
        depth = rng.uniform(1, 5, (H, W))
        depth[0, 0] = 0.0  # invalid
        truth[sid] = {
            "semantic": rng.integers(0, 4, (H, W)).astype(np.uint8),
            "depth": depth,
            "normals": np.dstack([np.zeros((H, W)), np.zeros((H, W)), np.ones((H, W))]),
            "boundary": rng.integers(0, 2, (H, W)).astype(np.uint8),
        }
    return truth


@pytest.fixture(scope="module")
def full(tmp_path_factory) -> ReportInputs:
    root = tmp_path_factory.mktemp("results")
    runs = {}
    for method, budget, _, _ in RUNS:
        for seed in (0, 1):
            name = run_name(method, budget, seed)
            runs[name] = write_run(root / name, method, seed)
    return ReportInputs(
        summary_csv=write_summary(root / "summary.csv"),
        runs=runs,
        ground_truth=ground_truth,
        class_names=("floor", "wall", "table", "lamp"),
        multipool_branches=BRANCHES,
        methods=("dense", "multipool_avg", "mp_pag", "pag", "truncation", "layer_skip", "sact"),
        tasks=TASKS,
        profile="constructed",
    )


def data_of(inputs: ReportInputs) -> ReportData:
    return ReportData(inputs, load_summary(inputs.summary_csv))


def image_axes(fig) -> list:
    return [ax for ax in fig.axes if any(isinstance(a, AxesImage) for a in ax.get_images())]


def test_every_figure_and_table_is_produced(full: ReportInputs, tmp_path: Path) -> None:
    result = report.make_report(full, tmp_path / "out")
    assert result.skipped == {}
    names = sorted(p.name for p in result.written)
    assert names == sorted(planned_files(full.methods, full.tasks))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == names
    assert len(names) == 2 * (12 + 5) + 1  # 12 figures, 5 tables, two formats each; README
    for path in result.written:
        if path.suffix == ".png":
            assert path.read_bytes().startswith(b"\x89PNG")
        elif path.suffix == ".pdf":
            assert path.read_bytes().startswith(b"%PDF-")
    readme = (tmp_path / "out" / "README.md").read_text()
    for path in result.written:
        if path.name != "README.md":
            assert f"[`{path.name}`]({path.name})" in readme
    again = report.make_report(full, tmp_path / "again")
    assert [p.read_bytes() for p in again.written] == [p.read_bytes() for p in result.written]


def test_ponder_maps_panels(full: ReportInputs) -> None:
    fig = ponder_maps(data_of(full), "pag")
    # 2 images x (input, ground truth, 3 budgets x (prediction, ponder)) + one colour bar
    grid = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(grid) == 2 * (2 + 2 * 3)
    assert len(image_axes(fig)) == 2 * 8
    titles = [ax.get_title() for ax in grid[:8]]
    assert titles[2] == "PAG 0.8\nprediction"
    assert titles[3] == "ponder\n(90 % MACs)"  # the run shown: seed 0
    assert titles[-1] == "ponder\n(50 % MACs)"
    bar = next(ax for ax in fig.axes if ax.get_label() == "<colorbar>")
    assert bar.get_ylabel() == f"units computed (of {len(BLOCKS)})"
    # one colour and one labelled tick per count of units, 0 to all of them
    assert list(bar.get_yticks()) == list(range(len(BLOCKS) + 1))


def test_layer_activity_lines(full: ReportInputs) -> None:
    fig = layer_activity(data_of(full))
    assert [ax.get_title() for ax in fig.axes] == ["PAG", "Layer skip", "SACT"]
    assert [len(ax.get_lines()) for ax in fig.axes] == [3, 2, 2]  # one per budget
    first = fig.axes[0].get_lines()[0]
    assert list(first.get_ydata()) == pytest.approx([1.0, 0.8, 0.6])
    assert first.get_label() == "PAG 0.8 (91 % MACs)"


def test_multipool_maps_panels_and_legend(full: ReportInputs) -> None:
    fig = multipool_maps(data_of(full))
    assert len(fig.axes) == 2 * 4  # input, ground truth, prediction, one MultiPool block
    assert fig.axes[3].get_title() == "branch at layer3.1"
    assert [t.get_text() for t in fig.legends[0].get_texts()] == list(BRANCHES)


@pytest.mark.parametrize("task", TASKS)
def test_qualitative_panels(full: ReportInputs, task: str) -> None:
    fig = qualitative(data_of(full), task)
    grid = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    # input, ground truth, dense, MP-PAG, PAG highest, PAG lowest
    assert len(grid) == 2 * 6
    assert [ax.get_title().split("\n")[0] for ax in grid[:6]] == [
        "input",
        "ground truth",
        "Dense",
        "MP-PAG",
        "PAG 0.8",
        "PAG 0.3",
    ]
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(bars) == (2 if task == "depth" else 0)  # a depth scale bar per row, in metres
    if task == "semantic":
        labels = [t.get_text() for t in fig.legends[0].get_texts()]
        assert labels == ["floor", "wall", "table", "lamp", "ignore / invalid"]


def test_training_curves_panels_and_offsets(full: ReportInputs) -> None:
    fig = training_curves(data_of(full))
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == [
        "total loss",
        "semantic loss",
        "boundary loss",
        "depth loss",
        "normals loss",
        "budget loss",
    ]
    # one line per (method, budget) with that term: 12 configurations, only PAG's 3 budget
    assert [len(ax.get_lines()) - 1 for ax in fig.axes] == [12, 12, 12, 12, 12, 3]  # - axvline
    dense = fig.axes[0].get_lines()[0]
    assert list(dense.get_xdata()) == [1, 2, 3]
    finetuned = fig.axes[0].get_lines()[1]
    assert list(finetuned.get_xdata()) == [4, 5]  # continues after the baseline's 3 epochs


def test_value_at_measured_interpolated_and_out_of_range() -> None:
    import pandas as pd

    points = pd.DataFrame(
        {"macs_pct": [50.0, 80.0, 80.4, 99.5], "mean": [0.2, 0.5, 0.7, 0.9], "std": [0.1] * 4}
    )
    assert value_at(points, 100.0) == ("measured", 0.9, 0.1)  # within 1 point
    assert value_at(points, 50.0) == ("measured", 0.2, 0.1)
    kind, value, _ = value_at(points, 90.0)  # between 80 and 80.4: nearest is 80.4 > 1 away
    assert kind == "interpolated"
    assert value == pytest.approx(0.7 + (0.9 - 0.7) * (90 - 80.4) / (99.5 - 80.4))
    assert value_at(points, 40.0) is None  # no extrapolation
    same = pd.DataFrame({"macs_pct": [60.0, 60.0], "mean": [0.4, 0.6], "std": [0.0, 0.2]})
    assert value_at(same, 60.0) == ("measured", pytest.approx(0.5), pytest.approx(0.1))


def test_matched_budget_table_values(full: ReportInputs) -> None:
    table = matched_budget_table(data_of(full))
    rows = {(r[1], r[2]): r[3:] for r in table.rows}
    assert table.header[3:] == ["100 %", "90 %", "80 %", "70 %", "50 %"]
    miou = "semantic: mIoU ↑"
    # dense measured at 100 %; mean of 0.60 and 0.61, sample s.d. 0.0071
    assert rows[(miou, "Dense")] == ["0.605 ± 0.007", "—", "—", "—", "—"]
    # PAG points at 91 % (0.585), 71 % (0.525), 50 % (0.445): 90 and 70 lie within 1 point,
    # 80 is interpolated between 71 and 91
    pag_80 = 0.525 + (0.585 - 0.525) * (80 - 71) / (91 - 71)
    assert rows[(miou, "PAG")] == [
        "—",
        "0.585 ± 0.007",
        f"{pag_80:.3f}†",
        "0.525 ± 0.007",
        "0.445 ± 0.007",
    ]
    # truncation at 30 % (0.405) and 60 % (0.505): 50 % is interpolated
    expected = 0.405 + (0.505 - 0.405) * (50 - 30) / (60 - 30)
    assert rows[(miou, "Truncation")] == ["—", "—", "—", "—", f"{expected:.3f}†"]
    # layer skipping at 75 and 95 %: 90 and 80 % interpolated, 70 % outside
    skip = [0.455 + (0.555 - 0.455) * (b - 75) / (95 - 75) for b in (90, 80)]
    assert rows[(miou, "Layer skip")] == ["—", *(f"{v:.3f}†" for v in skip), "—", "—"]
    # six headline metrics, five methods: the MultiPool ones (104 and 150 %) match no budget
    assert len(table.rows) == 6 * 5
    assert not any(row[2] in ("MP-PAG", "MultiPool (avg)") for row in table.rows)
    assert "†" in table.notes[0]


def test_multipool_table_values(full: ReportInputs) -> None:
    table = multipool_table(data_of(full))
    assert [row[0] for row in table.rows] == ["Dense", "MultiPool (avg)", "MP-PAG"]
    mp = dict(zip(table.header, table.rows[2], strict=True))
    assert mp["MACs / image"] == "208.0 M"
    assert mp["MACs % of dense"] == "104.0"
    assert mp["semantic: mIoU ↑"] == "0.635 ± 0.007"
    assert mp["depth: RMSE ↓"] == "0.865 ± 0.007"


def test_paper_table_says_not_run_and_keeps_provenance(full: ReportInputs) -> None:
    table = paper_table(data_of(full))
    by_key = {(r[0], r[2]): r for r in table.rows}
    city = by_key[("cityscapes", "mIoU ↑")]
    assert city[3] == "75.8 %"
    assert "[LB]" in city[4]
    assert city[5:] == ["not run", "not run", "not run"]
    assert by_key[("kitti", "Abs Rel ↓")][5] == "not run (no KITTI loader)"
    assert "[CODE]" in by_key[("stanford2d3d", "mean angle error (°) ↓")][4]
    assert table.header[-1] == "ours: PAG λ = 0.8"  # the budget nearest the demo's 0.7


def test_paper_table_gives_our_value_on_a_run_dataset(tmp_path: Path) -> None:
    path = write_summary(tmp_path / "summary.csv")
    path.write_text(path.read_text().replace(",synthetic,", ",nyuv2,"))
    table = paper_table(data_of(ReportInputs(path)))
    nyu = next(r for r in table.rows if r[0] == "nyuv2")
    # dense mIoU 0.60 and 0.61 in %; MP-PAG 0.63, 0.64; PAG 0.8: 0.58, 0.59
    assert nyu[5:] == ["60.50 ± 0.71", "63.50 ± 0.71", "58.50 ± 0.71"]  # sample s.d. of 1 apart


def test_latex_is_booktabs_and_escaped() -> None:
    table = Table(
        "A_b 100%",
        ["method", "mIoU ↑"],
        [["PAG", "0.5 ± 0.1"], ["SACT", "0.4†"]],
        notes=["δ < 1.25"],
        groups=["a", "b"],
    )
    tex = table.latex("x")
    assert "\\toprule" in tex and "\\midrule" in tex and "\\bottomrule" in tex
    assert "PAG & 0.5 $\\pm$ 0.1 \\\\" in tex
    assert tex.count("\\midrule") == 2  # after the header, and where the group changes
    assert "\\caption{A\\_b 100\\%. $\\delta$ $<$ 1.25}" in tex
    assert tex.count("\\begin{table}[t]") == 1  # two columns fit one column of a paper
    assert latex_escape("a&b#c") == "a\\&b\\#c"
    assert table.markdown().splitlines()[2:4] == ["| method | mIoU ↑ |", "|---|---:|"]


def test_missing_method_and_metric_are_named_and_the_rest_is_made(
    full: ReportInputs, tmp_path: Path
) -> None:
    from dataclasses import replace

    summary = write_summary(
        tmp_path / "summary.csv",
        runs=[r for r in RUNS if r[0] != "sact"],
        drop=lambda row: row["task"] == "normals",
    )
    runs = {k: v for k, v in full.runs.items() if not k.startswith("mp_pag")}
    result = report.make_report(replace(full, summary_csv=summary, runs=runs), tmp_path / "out")
    assert result.skipped["method sact"].startswith("sact is in the profile but has no runs in")
    assert "normals/mean is absent" in result.skipped["metric normals/mean"]
    assert "run 'mp_pag-s0': no samples.npz given" in result.skipped["multipool_maps"]
    assert "qualitative_semantic" in result.skipped  # MP-PAG is one of its columns
    names = {p.name for p in result.written}
    assert {"accuracy_vs_compute.png", "ponder_maps_pag.png", "layer_activity.png"} <= names
    assert "ponder_maps_sact.png" in result.skipped or "ponder_maps_sact.png" not in names
    readme = (tmp_path / "out" / "README.md").read_text()
    assert "## Not made, or incomplete" in readme
    assert "- method sact: sact is in the profile but has no runs" in readme


def test_corrupt_samples_are_named(full: ReportInputs, tmp_path: Path) -> None:
    from dataclasses import replace

    bad = tmp_path / "samples.npz"
    bad.write_bytes(b"not a zip")
    runs = dict(full.runs)
    runs["pag-0.8-s0"] = RunFiles(runs["pag-0.8-s0"].evaluation, bad, runs["pag-0.8-s0"].training)
    result = report.make_report(replace(full, runs=runs), tmp_path / "out")
    assert result.skipped["ponder_maps_pag"].startswith(f"{bad}: not a readable samples.npz")
    assert (tmp_path / "out" / "ponder_maps_sact.png").is_file()


def test_a_report_removes_the_outputs_it_no_longer_makes(
    full: ReportInputs, tmp_path: Path
) -> None:
    """Found by the run-integrity issue: with one run's samples missing the report skipped a
    figure but left the previous report's copy beside a README saying it is missing."""
    from dataclasses import replace

    out = tmp_path / "out"
    report.make_report(full, out)
    assert (out / "multipool_maps.png").is_file()
    runs = {k: v for k, v in full.runs.items() if not k.startswith("mp_pag")}
    result = report.make_report(replace(full, runs=runs), out)
    assert "multipool_maps" in result.skipped
    assert not (out / "multipool_maps.png").exists() and not (out / "multipool_maps.pdf").exists()
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in result.written)
    assert "multipool_maps" in (out / "README.md").read_text()
