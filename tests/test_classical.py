"""The classical floor (`pag classical`): the two edge detectors on hand-built images, the
profile key, the plan's job, classical.json on the BSDS500 fixture, the paper table's rows, and
one real val image scored end to end where the real BSDS500 sits beside the checkout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from faults import pag_cli
from fixtures_real import make_bsds

from pag.errors import PagError
from pag.params import load_profile
from pag.pipeline import dvcyaml
from pag.pipeline.classical import canny, gradient, grey, score
from pag.pipeline.plan import load_plan

ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = ROOT.parent / "shared" / "data"


def step(height: int = 12, width: int = 16, at: int = 8) -> np.ndarray:
    """A 3 x H x W image, black left of column `at`, white from it on."""
    image = np.zeros((3, height, width))
    image[:, :, at:] = 1.0
    return image


# -- detectors -----------------------------------------------------------------------------------


def test_gradient_peaks_on_the_step_and_keeps_the_shape():
    soft = gradient(step())
    assert soft.shape == (12, 16)
    assert soft.min() >= 0 and soft.max() == 1
    # the step lies between columns 7 and 8: both are the maximum on every row (symmetric),
    # and the map falls off on either side
    assert np.allclose(soft[:, 7], 1) and np.allclose(soft[:, 8], 1)
    row = soft[5]
    assert (np.diff(row[:8]) > 0).all() and (np.diff(row[8:]) < 0).all()


def test_canny_marks_only_the_step():
    soft = canny(step())
    assert soft.shape == (12, 16) and soft.min() >= 0 and soft.max() == 1
    rows, columns = np.nonzero(soft)
    # one pixel wide, on the step (column 7 or 8: their gradients tie, non-maximum
    # suppression keeps one), on every row but the outermost (skimage blanks them)
    assert len(set(columns)) == 1 and set(columns) <= {7, 8}
    assert sorted(rows) == list(range(1, 11))


@pytest.mark.parametrize("detector", [gradient, canny])
def test_a_flat_image_gives_zeros_without_dividing_by_zero(detector):
    soft = detector(np.full((3, 5, 6), 0.4))  # warnings are errors (pyproject)
    assert soft.shape == (5, 6) and not soft.any()


def test_detectors_take_a_samples_channel_first_image():
    assert grey(np.ones((3, 2, 4))).shape == (2, 4)
    assert np.allclose(grey(np.ones((3, 2, 4))), 1.0)  # the luma weights sum to 1
    with pytest.raises(PagError, match=r"3 x H x W RGB image, got shape \(2, 4, 3\)"):
        gradient(np.ones((2, 4, 3)))


# -- profile and plan ----------------------------------------------------------------------------


def tiny_raw() -> dict:
    return yaml.safe_load((ROOT / "params" / "tiny.yaml").read_text())


def write_profile(folder: Path, raw: dict) -> Path:
    path = folder / f"{raw['name']}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_classical_needs_the_boundary_task(tmp_path):
    raw = tiny_raw()
    raw["tasks"] = {"depth": None}
    raw["evaluation"]["classical"] = ["gradient"]
    with pytest.raises(PagError, match=r"evaluation.classical: .*boundary task.*\['depth'\]"):
        load_profile(write_profile(tmp_path, raw))
    raw["tasks"] = {"boundary": None}
    raw["evaluation"]["classical"] = ["canny", "canny"]
    with pytest.raises(PagError, match=r"evaluation.classical: .*repeat"):
        load_profile(write_profile(tmp_path, raw))
    raw["evaluation"]["classical"] = ["sobel"]
    with pytest.raises(PagError, match=r"evaluation.classical.0: "):
        load_profile(write_profile(tmp_path, raw))


@pytest.mark.parametrize("name", ["synthetic", "tiny"])
def test_profiles_without_detectors_have_no_classical_job(name):
    plan = load_plan(name)
    assert plan.profile.evaluation.classical == []
    assert "classical" not in [job.name for job in plan.jobs]
    assert not any("classical" in dep for dep in plan.job("report").deps)
    # their evaluations depend on the evaluation section as before (dvc.lock stays valid)
    evaluation = next(job for job in plan.jobs if job.name.startswith("eval-"))
    assert evaluation.params == ("evaluation", "resources.device")
    assert "classical" not in evaluation.values


def test_listed_detectors_add_a_job_the_report_depends_on(tmp_path):
    raw = tiny_raw()
    raw["evaluation"]["classical"] = ["gradient", "canny"]
    plan = load_plan(write_profile(tmp_path, raw))
    names = [job.name for job in plan.jobs]
    assert names[-4:] == ["trivial", "classical", "summarize", "report"]
    job = plan.job("classical")
    assert job.cmd == f"pag classical --profile {tmp_path.as_posix()}/tiny.yaml --workers 1"
    assert job.deps == ("data/tiny/synthetic",)
    assert job.results == ("results/tiny/classical.json",)
    assert job.params == ("evaluation.classical", "evaluation.split")
    assert job.values == {"classical": ["gradient", "canny"], "split": "val"}
    assert "results/tiny/classical.json" in plan.job("report").deps
    # changing the detectors reruns no evaluation: their keys leave `classical` out
    evaluation = plan.job("eval-dense-s0")
    assert "evaluation.classical" not in evaluation.params
    assert "evaluation.split" in evaluation.params
    assert "classical" not in evaluation.values
    stages = yaml.safe_load(dvcyaml.render(plan))["stages"]
    path = f"{tmp_path.as_posix()}/tiny.yaml"
    assert stages["classical"]["params"] == [{path: ["evaluation.classical", "evaluation.split"]}]
    assert stages["classical"]["outs"] == [{"results/tiny/classical.json": {"cache": False}}]


def test_the_bsds500_profile_scores_both_detectors():
    plan = load_plan("bsds500")
    assert plan.profile.evaluation.classical == ["gradient", "canny"]
    assert plan.job("classical").cmd == "pag classical --profile params/bsds500.yaml --workers 8"


# -- the command on the BSDS500 fixture ----------------------------------------------------------


@pytest.fixture
def bsds_project(tmp_path, monkeypatch) -> Path:
    """A project folder with a BSDS500 profile `bsdsfix` and the fixture data it reads."""
    raw = yaml.safe_load((ROOT / "params" / "bsds500.yaml").read_text())
    raw["name"] = "bsdsfix"
    (tmp_path / "params").mkdir()
    write_profile(tmp_path / "params", raw)
    make_bsds(tmp_path / "data" / "bsdsfix" / "bsds500")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_cli_writes_classical_json(bsds_project):
    result = pag_cli(["classical", "--profile", "params/bsdsfix.yaml"])
    assert result.code == 0, result.err
    path = bsds_project / "results" / "bsdsfix" / "classical.json"
    assert result.out == f"wrote {path.relative_to(bsds_project)}\n"
    record = json.loads(path.read_text())
    assert (record["split"], record["num_images"], record["dataset"]) == ("test", 1, "bsds500")
    assert record["data"] is None  # installed by hand: no fetch markers to fingerprint
    assert sorted(record["detectors"]) == ["canny", "gradient"]  # keys sorted
    for entry in record["detectors"].values():
        assert entry["settings"]["sigma"] == 3.0
        scores = entry["boundary"]
        assert all(0 <= scores[key] <= 1 for key in ("ods", "ois", "ap"))
        assert scores["pr_curve"]["num_images"] == 1 and len(scores["pr_curve"]["f"]) == 99
    assert sorted(p.name for p in path.parent.iterdir()) == ["classical.json"]


def test_workers_do_not_change_the_result(bsds_project):
    kwargs = {"root": "data/bsdsfix", "split": "train", "names": ["gradient", "canny"]}
    alone = score("bsds500", **kwargs)
    assert alone["num_images"] == 2
    assert score("bsds500", workers=2, **kwargs) == alone


def test_cli_refuses_a_profile_without_detectors(bsds_project):
    raw = yaml.safe_load((bsds_project / "params" / "bsdsfix.yaml").read_text())
    del raw["evaluation"]["classical"]
    write_profile(bsds_project / "params", raw)
    result = pag_cli(["classical", "--profile", "params/bsdsfix.yaml"])
    assert result.code == 1
    assert "evaluation.classical lists no detector" in result.err
    assert not (bsds_project / "results").exists()


# -- the paper table -----------------------------------------------------------------------------


def bsds_report(tmp_path: Path, classical: dict | None):
    from test_report_full import write_summary

    from pag.report.results import ReportData, ReportInputs, load_summary

    summary = write_summary(tmp_path / "summary.csv")
    summary.write_text(summary.read_text().replace(",synthetic,", ",bsds500,"))
    path = None
    if classical is not None:
        path = tmp_path / "classical.json"
        path.write_text(json.dumps(classical))
    inputs = ReportInputs(summary, classical=path)
    return ReportData(inputs, load_summary(summary))


FLOOR = {
    "split": "test",
    "num_images": 200,
    "dataset": "bsds500",
    "data": None,
    "detectors": {  # sorted, as classical.json holds them
        "canny": {"settings": {"sigma": 2.0}, "boundary": {"ods": 0.6, "ois": 0.64, "ap": 0.55}},
        "gradient": {
            "settings": {"sigma": 2.0},
            "boundary": {"ods": 0.61, "ois": 0.6349, "ap": 0.5},
        },
    },
}


def test_paper_table_shows_references_and_floors_for_bsds500(tmp_path):
    from pag.report.tables import paper_table

    table = paper_table(bsds_report(tmp_path, FLOOR))
    assert table.header[-1] == "ours: classical floor"
    by_task = {row[1]: row for row in table.rows if row[0] == "bsds500"}
    hed = "[HED] Xie & Tu 2015, Table 4"
    assert by_task["boundary: Human"][2:5] == ["ODS / OIS / AP ↑", "0.80 / 0.80 / —", hed]
    assert by_task["boundary: Canny"][3:5] == ["0.600 / 0.640 / 0.580", hed]
    assert by_task["boundary: gPb-owt-ucm"][3] == "0.726 / 0.757 / 0.696"
    assert by_task["boundary: HED"][3] == "0.788 / 0.808 / 0.840"
    assert by_task["boundary: HED"][5:] == ["—"] * 4
    gradient_row = by_task["boundary: Gaussian gradient magnitude, σ = 2"]
    assert gradient_row[3:] == [
        "—",
        "[FLOOR] measured by this pipeline: test split, 200 images",
        "—",
        "—",
        "—",
        "0.610 / 0.635 / 0.500",
    ]
    assert by_task["boundary: Canny, σ = 2"][-1] == "0.600 / 0.640 / 0.550"
    # the references in the order of the source, then the floors, gradient first
    assert [row[1].removeprefix("boundary: ") for row in table.rows[-6:]] == [
        "Human",
        "Canny",
        "gPb-owt-ucm",
        "HED",
        "Gaussian gradient magnitude, σ = 2",
        "Canny, σ = 2",
    ]
    assert "Canny, $\\sigma$ = 2" in table.latex("table_paper")
    # PAG's own published ODS keeps its row and our runs' values; the floor column is empty
    pag = next(row for row in table.rows if row[1] == "boundary" and row[0] == "bsds500")
    assert pag[3] == "0.792" and pag[5] != "not run" and pag[-1] == "—"
    notes = " ".join(table.notes)
    assert "Table 4 of Xie & Tu" in notes and "Arbeláez et al., TPAMI 2011" in notes
    assert "not re-verified against the PDF" in notes
    assert table.groups is not None and table.groups[-1] == "bsds500"


def test_paper_table_references_without_floors_and_nothing_for_other_datasets(tmp_path):
    from test_report_full import write_summary

    from pag.report.results import ReportData, ReportInputs, load_summary
    from pag.report.tables import paper_table

    table = paper_table(bsds_report(tmp_path, None))
    assert table.header[-1].startswith("ours: PAG")  # no floor column without classical.json
    assert any(row[1] == "boundary: Canny" for row in table.rows)
    synthetic = write_summary(tmp_path / "synthetic.csv")
    plain = paper_table(ReportData(ReportInputs(synthetic), load_summary(synthetic)))
    assert len(plain.rows) == 9 and plain.groups is None
    assert not any("[HED]" in note for note in plain.notes)


def test_a_missing_classical_json_is_named_in_the_table(tmp_path):
    from pag.report.readme import readme
    from pag.report.tables import paper_table

    data = bsds_report(tmp_path, FLOOR)
    assert "## The classical floor" in readme(data, [], {}, {})
    data.inputs.classical.unlink()
    table = paper_table(data)
    assert table.header[-1].startswith("ours: PAG")
    assert any("No classical floor: " in note and "not found" in note for note in table.notes)
    assert "## The classical floor" not in readme(data, [], {}, {})


# -- the real data -------------------------------------------------------------------------------


@pytest.mark.skipif(
    not (REAL_DATA / "bsds500").is_dir(), reason="the real BSDS500 is not beside the checkout"
)
def test_one_real_val_image_gradient_floor():
    """The first val image (481 x 321, 5 annotators) at full resolution: about 3 s."""
    record = score("bsds500", REAL_DATA, "val", ["gradient"], limit=1)
    assert record["num_images"] == 1 and record["split"] == "val"
    scores = record["detectors"]["gradient"]["boundary"]
    # measured with sigma 3: ODS = OIS 0.753 (one image), AP 0.802
    assert scores["ods"] == pytest.approx(0.7527, abs=1e-3)
    assert scores["ois"] == scores["ods"]
    assert scores["ap"] == pytest.approx(0.8025, abs=1e-3)
