"""The GPU check's estimate, by hand: at 1 image/s, nyuv2's sweep (3 dense runs of 100 epochs
and 69 fine-tunes of 30, over 795 training images) takes 2370 x 795 s = 523.4 GPU hours."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from gpu_check import README_END, README_START, gpu_hours


def test_gpu_hours_of_a_sweep_by_hand():
    hours = {h["profile"]: h for h in gpu_hours({"dense": 1.0})}
    assert hours["nyuv2"]["runs"] == 72 and hours["nyuv2"]["train_images"] == 795
    assert hours["nyuv2"]["training_gpu_hours"] == pytest.approx(523.4)
    # twice the speed for every method: half the hours
    assert gpu_hours({"dense": 2.0})[0]["training_gpu_hours"] == pytest.approx(261.7)


def test_the_readme_has_the_block_the_check_fills():
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert text.index(README_START) < text.index(README_END)
