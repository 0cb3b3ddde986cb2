"""`python -m bench models`: every model with parameters equal to the published figures."""

import json
import subprocess
import sys
from pathlib import Path

from tests.reference import expected_params

ROOT = Path(__file__).resolve().parent.parent


def test_models_json_lists_every_model_with_published_parameters():
    result = subprocess.run(
        [sys.executable, "-m", "bench", "models", "--json"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    rows = json.loads(result.stdout)
    assert {r["name"]: r["params"] for r in rows} == expected_params()
    assert {"name", "family", "depth", "params", "flops_per_image"} <= set(rows[0])
    resnet50 = next(r for r in rows if r["name"] == "resnet50")
    assert resnet50["flops_per_image"] == 2 * 4_089_184_256 and resnet50["image_size"] == 224


def test_models_table_and_bad_image_size():
    table = subprocess.run(
        [sys.executable, "-m", "bench", "models"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert "| resnet152" in table and "60,192,808" in table
    bad = subprocess.run(
        [sys.executable, "-m", "bench", "models", "--image-size", "16"], cwd=ROOT, capture_output=True, text=True
    )
    assert bad.returncode == 2 and "at least 32 px" in bad.stderr
