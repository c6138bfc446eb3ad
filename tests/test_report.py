"""The report step: figure panels and lines, table values, byte-identical reruns, clear errors."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from matplotlib.collections import PathCollection
from PIL import Image

from pag import report
from pag.errors import PagError
from pag.report import make as report_make
from pag.report.compute import accuracy_vs_compute
from pag.report.results import ReportData, ReportInputs, load_summary
from pag.report.style import COLORBLIND
from pag.report.tables import summary_table

DENSE_MACS = 1.0e9
# (run, method, budget, seed, effective MACs, miou, rmse); pag-0.5's and dense's numbers are the
# ones the table test checks by hand
RUNS = [
    ("dense-s0", "dense", "", 0, 1.00e9, 0.600, 0.500),
    ("dense-s1", "dense", "", 1, 1.00e9, 0.620, 0.520),
    ("mp_pag-0.5-s0", "mp_pag", "0.5", 0, 0.60e9, 0.580, 0.530),
    ("mp_pag-0.5-s1", "mp_pag", "0.5", 1, 0.62e9, 0.590, 0.540),
    ("pag-0.8-s0", "pag", "0.8", 0, 0.82e9, 0.590, 0.510),
    ("pag-0.8-s1", "pag", "0.8", 1, 0.84e9, 0.600, 0.515),
    ("pag-0.5-s0", "pag", "0.5", 0, 0.55e9, 0.500, 0.560),
    ("pag-0.5-s1", "pag", "0.5", 1, 0.57e9, 0.520, 0.584),
    ("truncation-0.8-s0", "truncation", "0.8", 0, 0.80e9, 0.550, 0.550),
    ("truncation-0.8-s1", "truncation", "0.8", 1, 0.80e9, 0.560, 0.555),
    ("truncation-0.5-s0", "truncation", "0.5", 0, 0.50e9, 0.400, 0.650),
    ("truncation-0.5-s1", "truncation", "0.5", 1, 0.50e9, 0.420, 0.640),
]


def _rows(dataset: str = "synthetic") -> list[dict[str, object]]:
    """Tidy rows: semantic (miou, pixel_acc) and depth (rmse, abs_rel, delta1) per run."""
    rows = []
    for run, method, budget, seed, macs, miou, rmse in RUNS:
        metrics = {
            ("semantic", "miou"): miou,
            ("semantic", "pixel_acc"): miou + 0.3,
            ("depth", "rmse"): rmse,
            ("depth", "abs_rel"): rmse / 4,
            ("depth", "delta1"): 1 - rmse,
        }
        for (task, metric), value in metrics.items():
            rows.append(
                {
                    "run": run,
                    "method": method,
                    "budget": budget,
                    "seed": seed,
                    "dataset": dataset,
                    "task": task,
                    "metric": metric,
                    "value": value,
                    "effective_macs": macs,
                    "dense_macs": DENSE_MACS,
                }
            )
    return rows


def _write(path: Path, rows: list[dict[str, object]], columns: list[str] | None = None) -> Path:
    columns = columns or list(report.COLUMNS)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture
def summary(tmp_path: Path) -> Path:
    return _write(tmp_path / "summary.csv", _rows())


def _table_rows(text: str) -> dict[tuple[str, str], dict[str, str]]:
    """The Markdown table as {(method, budget): {column: cell}}."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    rows = {}
    for line in lines[2:]:
        cells = dict(
            zip(header, (cell.strip() for cell in line.strip("|").split("|")), strict=True)
        )
        rows[(cells["method"], cells["budget"])] = cells
    return rows


def _lines_and_points(fig) -> list[tuple[str, int, int]]:
    """(title, Line2D count, marker collection count) per panel."""
    return [
        (
            ax.get_title(),
            len(ax.get_lines()),
            sum(isinstance(c, PathCollection) for c in ax.collections),
        )
        for ax in fig.axes
    ]


def _data(path: Path, **inputs) -> ReportData:
    return ReportData(ReportInputs(path, **inputs), load_summary(path))


def _figure(path: Path):
    return accuracy_vs_compute(_data(path))


def test_report_from_summary_alone(summary: Path, tmp_path: Path) -> None:
    out = tmp_path / "out" / "nested"
    result = report.make_report(ReportInputs(summary, title="Synthetic"), out)
    names = [p.name for p in result.written]
    assert names == [
        "accuracy_vs_compute.png",
        "accuracy_vs_compute.pdf",
        "summary_table.md",
        "summary_table.tex",
        "table_multipool.md",
        "table_multipool.tex",
        "table_matched_budgets.md",
        "table_matched_budgets.tex",
        "table_paper.md",
        "table_paper.tex",
        "README.md",
    ]
    assert sorted(p.name for p in out.iterdir()) == sorted(names)  # no temp files
    # what needs samples, evaluations or histories is skipped, each with its reason
    assert set(result.skipped) == {
        "ponder_maps_pag",
        "layer_activity",
        "compute_allocation",  # no compute rows in this summary
        "table_compute_allocation",
        "multipool_maps",
        "qualitative_semantic",
        "qualitative_depth",
        "training_curves",
    }
    assert "no samples.npz given" in result.skipped["ponder_maps_pag"]
    with Image.open(result.written[0]) as image:
        image.load()
        assert image.format == "PNG"
        # 7 in wide at 200 dpi; one row of three panels plus the legend
        assert image.size == (1400, 570)
    assert result.written[1].read_bytes().startswith(b"%PDF-")
    assert result.written[2].read_text().startswith("# Synthetic\n")
    readme = (out / "README.md").read_text()
    assert "[`accuracy_vs_compute.png`](accuracy_vs_compute.png)" in readme
    assert "`training_curves`: run 'dense-s0': no training metrics.json given" in readme
    assert "What the synthetic default shows, and what it does not" in readme


def test_figure_has_one_panel_per_headline_metric(summary: Path) -> None:
    fig = _figure(summary)
    # semantic/miou, depth/rmse, depth/abs_rel present; pixel_acc and delta1 are not headline
    # metrics; the shared legend is a figure legend, not an axes of its own
    assert len(fig.axes) == 3
    assert len(fig.legends) == 1
    assert [text.get_text() for text in fig.legends[0].get_texts()] == [
        "Dense",
        "MP-PAG",
        "PAG",
        "Truncation",
    ]
    # one line per swept method (pag, truncation), one marker set per single method (dense,
    # mp_pag)
    assert _lines_and_points(fig) == [
        ("Semantic segmentation", 2, 2),
        ("Depth", 2, 2),
        ("Depth", 2, 2),
    ]
    assert [ax.get_ylabel() for ax in fig.axes] == ["mIoU ↑", "RMSE ↓", "Abs Rel ↓"]
    assert {ax.get_xlabel() for ax in fig.axes} == {"MACs (% of dense)"}


def test_figure_points_are_seed_means(summary: Path) -> None:
    miou = _figure(summary).axes[0]
    pag_line = miou.get_lines()[0]  # pag is drawn before truncation
    # ordered by MACs: budget 0.5 then 0.8; x = mean effective MACs / dense mean MACs
    assert list(pag_line.get_xdata()) == pytest.approx([56.0, 83.0])
    assert list(pag_line.get_ydata()) == pytest.approx([0.51, 0.595])
    dense = next(c for c in miou.collections if isinstance(c, PathCollection))
    assert dense.get_offsets().ravel().tolist() == pytest.approx([100.0, 0.61])


def test_table_values_match_inputs(summary: Path, tmp_path: Path) -> None:
    report.make_report(ReportInputs(summary), tmp_path / "out")
    text = (tmp_path / "out" / "summary_table.md").read_text()
    rows = _table_rows(text)
    # dense, mp_pag, pag (budget descending), truncation (budget descending)
    assert list(rows) == [  # display names, in legend order
        ("Dense", "—"),
        ("MP-PAG", "0.5"),
        ("PAG", "0.8"),
        ("PAG", "0.5"),
        ("Truncation", "0.8"),
        ("Truncation", "0.5"),
    ]
    pag = rows[("PAG", "0.5")]
    assert pag["seeds"] == "2"
    assert pag["MACs % of dense"] == "56.0"  # (0.55e9 + 0.57e9) / 2 / 1e9
    assert pag["semantic: mIoU ↑"] == "0.510 ± 0.014"  # mean and sample s.d. of 0.50, 0.52
    assert pag["depth: RMSE ↓"] == "0.572 ± 0.017"
    assert pag["depth: Abs Rel ↓"] == "0.143 ± 0.004"  # 0.14, 0.146
    assert rows[("Dense", "—")]["MACs % of dense"] == "100.0"
    assert rows[("Dense", "—")]["semantic: mIoU ↑"].startswith("**")  # the best, in bold
    assert rows[("MP-PAG", "0.5")]["MACs % of dense"] == "61.0"
    assert "semantic: pixel accuracy ↑" not in pag
    assert "ddof=1" in text and "Bold: the best mean in its column" in text


def test_reruns_are_byte_identical(summary: Path, tmp_path: Path) -> None:
    inputs = ReportInputs(summary)
    first = [p.read_bytes() for p in report.make_report(inputs, tmp_path / "a").written]
    second = [p.read_bytes() for p in report.make_report(inputs, tmp_path / "b").written]
    assert first == second
    again = [p.read_bytes() for p in report.make_report(inputs, tmp_path / "a").written]
    assert again == first


def test_metric_missing_for_one_method_still_draws(tmp_path: Path) -> None:
    rows = [
        row for row in _rows() if not (row["method"] == "truncation" and row["metric"] == "rmse")
    ]
    path = _write(tmp_path / "summary.csv", rows)
    assert [n for _, n, _ in _lines_and_points(_figure(path))] == [2, 1, 2]
    result = report.make_report(ReportInputs(path), tmp_path / "out")
    assert all(p.stat().st_size > 0 for p in result.written)
    table = _table_rows((tmp_path / "out" / "summary_table.md").read_text())
    assert table[("Truncation", "0.5")]["depth: RMSE ↓"] == "—"
    assert table[("Truncation", "0.5")]["semantic: mIoU ↑"] == "0.410 ± 0.014"


def test_without_dense_run_uses_own_dense_macs(tmp_path: Path) -> None:
    rows = [row for row in _rows() if row["method"] != "dense"]
    path = _write(tmp_path / "summary.csv", rows)
    assert {ax.get_xlabel() for ax in _figure(path).axes} == {"MACs (% of own dense arch.)"}
    report.make_report(ReportInputs(path), tmp_path / "out")
    text = (tmp_path / "out" / "summary_table.md").read_text()
    assert _table_rows(text)[("PAG", "0.5")]["MACs % of dense"] == "56.0"
    assert "own dense architecture" in text


def test_several_datasets_are_not_mixed(tmp_path: Path) -> None:
    path = _write(tmp_path / "summary.csv", _rows("nyuv2") + _rows("synthetic"))
    fig = _figure(path)
    assert len(fig.axes) == 6
    assert fig.axes[0].get_title() == "nyuv2: Semantic segmentation"
    text = summary_table(_data(path)).markdown()
    assert "| dataset | method |" in text
    assert text.count("| nyuv2 | PAG | 0.5 | 2 | 56.0 | 0.510 ± 0.014 |") == 1


def test_palette_is_seaborn_colorblind() -> None:
    seaborn = pytest.importorskip("seaborn")
    assert list(COLORBLIND) == seaborn.color_palette("colorblind").as_hex()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "empty file"),
        ("run,method,budget,seed,dataset,task,metric,effective_macs,dense_macs\n", "['value']"),
        (",".join(report.COLUMNS) + "\n", "no rows"),
    ],
)
def test_unusable_files_are_named(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "summary.csv"
    path.write_text(content)
    with pytest.raises(PagError, match=r"summary\.csv") as info:
        report.make_report(ReportInputs(path), tmp_path / "out")
    assert message in str(info.value)
    assert not (tmp_path / "out").exists()


def test_missing_column_is_named(tmp_path: Path) -> None:
    columns = [c for c in report.COLUMNS if c != "value"]
    path = _write(tmp_path / "summary.csv", _rows(), columns)
    with pytest.raises(PagError, match=r"summary\.csv: missing column\(s\) \['value'\]"):
        report.make_report(ReportInputs(path), tmp_path / "out")


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(PagError, match=r"nothere\.csv: file not found"):
        report.make_report(ReportInputs(tmp_path / "nothere.csv"), tmp_path / "out")


@pytest.mark.parametrize(
    ("column", "bad"),
    [
        ("value", "abc"),
        ("effective_macs", ""),
        ("seed", "1.5"),
        ("budget", "half"),
        ("value", "nan"),
    ],
)
def test_non_numeric_value_is_named(tmp_path: Path, column: str, bad: str) -> None:
    rows = _rows()
    rows[3][column] = bad
    path = _write(tmp_path / "summary.csv", rows)
    with pytest.raises(PagError, match=rf"summary\.csv: line 5: {column} '{bad}'"):
        report.make_report(ReportInputs(path), tmp_path / "out")


def test_no_headline_metric_is_named(tmp_path: Path) -> None:
    rows = [row for row in _rows() if row["metric"] == "pixel_acc"]
    path = _write(tmp_path / "summary.csv", rows)
    with pytest.raises(PagError, match=r"summary\.csv: no headline metric"):
        report.make_report(ReportInputs(path), tmp_path / "out")


def test_unknown_method_and_duplicates_are_named(tmp_path: Path) -> None:
    rows = _rows()
    rows[0]["method"] = "magic"
    path = _write(tmp_path / "summary.csv", rows)
    with pytest.raises(PagError, match=r"summary\.csv: unknown method\(s\) \['magic'\]"):
        report.make_report(ReportInputs(path), tmp_path / "out")
    rows = _rows()
    path = _write(tmp_path / "summary.csv", [*rows, rows[0]])
    with pytest.raises(PagError, match=r"summary\.csv: more than one row for run 'dense-s0'"):
        report.make_report(ReportInputs(path), tmp_path / "out")


def test_failure_while_rendering_writes_nothing(
    summary: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    out.mkdir()

    def broken(*args: object, **kwargs: object) -> bytes:
        raise RuntimeError("boom")

    monkeypatch.setattr(report_make, "render", broken)
    with pytest.raises(RuntimeError, match="boom"):
        report.make_report(ReportInputs(summary), out)
    assert list(out.iterdir()) == []


def test_best_rows_follow_the_metrics_direction_per_group():
    from pag.report.tables import best_rows

    assert best_rows([0.3, 0.5, None, 0.5], "miou") == {1, 3}  # ties are all best
    assert best_rows([0.3, 0.5, float("nan")], "rmse") == {0}
    assert best_rows([0.3, 0.5, 0.1, 0.2], "rmse", ["a", "a", "b", "b"]) == {0, 2}
    assert best_rows([0.3, 0.5], "some_count") == set()  # no direction, no best


def test_best_cells_are_bold_in_markdown_and_latex():
    from pag.report.table import Table

    table = Table("T", ["method", "mIoU ↑"], [["A", "0.3"], ["B", "0.5_x"]], best={(1, 1)})
    assert "| B | **0.5_x** |" in table.markdown()
    assert r"B & \textbf{0.5\_x} \\" in table.latex("t")
    assert "| A | 0.3 |" in table.markdown()


def test_the_reference_is_an_outline_so_the_dense_point_under_it_shows():
    from pag.report.style import is_outlined, legend_handle

    assert is_outlined("dense_ft") and not is_outlined("dense") and not is_outlined("pag")
    assert legend_handle("dense_ft").get_markerfacecolor() == "none"
    assert legend_handle("dense").get_markerfacecolor() != "none"
