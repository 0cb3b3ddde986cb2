"""Gradient flow (`python -m bench gradient-flow`): the measures every engine records, the rescale-invariant
measure the report judges on, a blown-up first update told apart from vanishing, divergence read from any
NaN or inf, the engines' agreement at each point in time, and the command end to end on the smallest depth."""

import csv
import json
import math
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from bench.backends import recipe
from bench.studies.gradient_flow import flow_report
from bench.studies.gradient_flow.flow_report import first_to_last, sensitivity, state, write_flow_report
from bench.studies.gradient_flow.gradients import MEASURES, _record
from implementations import get_spec, is_installed
from implementations.lowering import CONV, LINEAR, lower

ROOT = Path(__file__).resolve().parent.parent
ENGINES = ("torch", "keras-tensorflow") + (("keras-jax",) if is_installed("keras-jax") else ())


# -- the measure: what a rescale that keeps the function changes, in a real network ---------------------------


def _torch_figures(name: str, scale: dict[str, float]):
    """(measures, loss) of one PyTorch forward and backward of `name` in training mode, after multiplying the
    named layers' weights by the given factors."""
    torch = pytest.importorskip("torch")
    from bench.backends.torch_backend import loss_of
    from bench.studies.gradient_flow.gradients import torch_measures, torch_model, weight_layers

    model = torch_model(name, 32, 0).train()
    layers = weight_layers(name, 32)
    with torch.no_grad():
        for layer, factor in scale.items():
            model.get_submodule(layer).weight.mul_(factor)
    rng = np.random.default_rng(1)
    images = torch.from_numpy(rng.standard_normal((4, 3, 32, 32)).astype(np.float32))
    labels = torch.from_numpy(rng.integers(0, 10, 4))
    loss = loss_of(model(images), labels)
    loss.backward()
    measures = torch_measures([model.get_submodule(layer).weight for layer in layers])
    return dict(zip(MEASURES, measures)), float(loss.detach()), layers


def _as_run(figures: dict) -> dict:
    return {key: [list(values)] for key, values in figures.items()}


def test_behind_batch_norm_a_rescaled_weight_changes_its_gradient_but_not_the_judged_measure():
    """resnet8_cifar (BN after every convolution): conv1 x 8 leaves the loss, and every layer's ||g|| ||W||, as
    they were; conv1's ||g|| falls 8x and ||g|| / ||W|| 64x, so a raw first/last would change 8x."""
    before, loss, layers = _torch_figures("resnet8_cifar", {})
    after, scaled_loss, _ = _torch_figures("resnet8_cifar", {"conv1": 8.0})
    assert scaled_loss == pytest.approx(loss, rel=1e-5)
    np.testing.assert_allclose(sensitivity(_as_run(after), 0), sensitivity(_as_run(before), 0), rtol=1e-3)
    assert after["grad_norm"][0] == pytest.approx(before["grad_norm"][0] / 8, rel=1e-3)
    assert after["grad_to_weight"][0] == pytest.approx(before["grad_to_weight"][0] / 64, rel=1e-3)
    judged = first_to_last(sensitivity(_as_run(after), 0)), first_to_last(sensitivity(_as_run(before), 0))
    assert judged[0] == pytest.approx(judged[1], rel=1e-3)
    raw = first_to_last(after["grad_norm"]), first_to_last(before["grad_norm"])
    assert raw[0] == pytest.approx(raw[1] / 8, rel=1e-3)


def test_without_batch_norm_the_rescale_that_keeps_the_function_keeps_the_judged_measure():
    """plain8_cifar_nobn (bias-free convolutions, ReLU): conv1 x 4 and the next convolution x 1/4 keep the
    function; each layer's ||g|| ||W|| stays while the two gradients change 1/4 and 4x."""
    before, loss, layers = _torch_figures("plain8_cifar_nobn", {})
    after, scaled_loss, _ = _torch_figures("plain8_cifar_nobn", {"conv1": 4.0, "layer1.0.conv1": 0.25})
    assert layers[:2] == ["conv1", "layer1.0.conv1"]
    assert scaled_loss == pytest.approx(loss, rel=1e-5)
    np.testing.assert_allclose(sensitivity(_as_run(after), 0), sensitivity(_as_run(before), 0), rtol=1e-3)
    np.testing.assert_allclose(after["grad_norm"][:2], before["grad_norm"][:2] * np.array([0.25, 4.0]), rtol=1e-3)
    assert first_to_last(sensitivity(_as_run(after), 0)) == pytest.approx(
        first_to_last(sensitivity(_as_run(before), 0)), rel=1e-3
    )


# -- the report, on figures made up to show each case -----------------------------------------------------------

LAYERS = ["conv1", "layer1.0.conv1", "layer3.0.conv2", "fc"]
SIZES = [432, 2304, 36864, 640]


def _made_up(weight_norms, grad_norms, losses, lr=0.01) -> dict:
    """A run as an engine records it (through the engines' own _record), from per-step norms."""
    steps = []
    for w, g in zip(weight_norms, grad_norms):
        w, g, root = np.array(w, float), np.array(g, float), np.sqrt(SIZES)
        with np.errstate(invalid="ignore"):
            steps.append((w, g, w / root, g / root, g / w))
    return _record(LAYERS, SIZES, "float32", lr, losses, steps)


# conv1's first update is 0.01 x 8.54e6 / 2.59 = 33,000 times its weight; behind BN its grown weight's gradient
# is tiny, so the raw first/last after the step (0.0625 / 25) is 0.0025, which a raw reading calls vanishing.
BLOWN = _made_up([[2.59, 5.6, 8.0, 1.0], [85400.0, 5.6, 8.0, 1.1]], [[8.54e6, 1e3, 1.0, 0.5], [0.0625, 1.0, 25.0, 0.5]],
                 [2.29, 2.30])  # fmt: skip
STEADY = _made_up([[2.59, 5.6, 8.0, 1.0], [2.6, 5.6, 8.0, 1.0]], [[1.0, 1.0, 0.5, 0.5], [1.1, 1.0, 0.5, 0.5]],
                  [2.3, 2.3])  # fmt: skip
VANISHING = _made_up([[2.59, 5.6, 8.0, 1.0]] * 2, [[1e-4, 1e-2, 0.5, 0.5], [1e-4, 1e-2, 0.5, 0.5]], [2.3, 2.3])
# Keras on JAX's way of diverging: the loss stays finite while the gradients are NaN.
NAN_GRADIENTS = _made_up([[2.59, 5.6, 8.0, 1.0], [3e9, 1e10, math.inf, 1e10]],
                         [[1.0, 1.0, 0.5, 50.0], [math.nan, math.nan, math.nan, math.nan]], [3490.0, 2.31])  # fmt: skip
NAN_LOSS = _made_up(NAN_GRADIENTS["weight_norm"], NAN_GRADIENTS["grad_norm"], [3490.0, math.nan])


def _perturbed(run: dict, at_init: float, after: float) -> dict:
    """`run` as another engine would give it: gradient norms off by the given relative amounts."""
    grads = [
        [g * (1 + (at_init if step == 0 else after)) for g in layer] for step, layer in enumerate(run["grad_norm"])
    ]
    return _made_up(run["weight_norm"], grads, run["loss"])


def _study(results: dict[str, dict], steps: int = 1) -> dict:
    models = list(next(iter(results.values())))
    request = {"models": models, "engines": list(results), "batch_size": 32, "image_size": 32, "steps": steps,
               "lr_scale": 1.0, "seed": 0, "threads": 0}  # fmt: skip
    return {"request": request, "env": {"cpu_model": "test", "cpu_cores": 2},
            "results": [{"engine": e, "models": m} for e, m in results.items()]}  # fmt: skip


def _row(text: str, model: str, engine: str) -> list[str]:
    (line,) = [x for x in text.splitlines() if x.startswith(f"| {model} ") and f"| {engine} " in x]
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_records_hold_rms_ratio_and_the_first_update():
    run = BLOWN
    assert run["grad_rms"][0][2] == pytest.approx(1.0 / math.sqrt(36864))
    assert run["weight_rms"][1][0] == pytest.approx(85400.0 / math.sqrt(432))
    assert run["grad_to_weight"][0][0] == pytest.approx(8.54e6 / 2.59)
    assert run["first_update"][0] == pytest.approx(0.01 * 8.54e6 / 2.59)
    assert run["first_update_max"] == pytest.approx(32973, rel=1e-3)
    assert NAN_GRADIENTS["first_update_max"] == pytest.approx(0.01 * 50.0)  # fc's; step 0 is finite there


def test_a_blown_up_first_update_is_called_so_and_not_vanishing(tmp_path):
    assert first_to_last(BLOWN["grad_norm"][1]) < flow_report.VANISHED  # what a raw first/last would read
    assert state(BLOWN, 0) == "exploding" and state(BLOWN, 1) == "blown up"
    assert state(STEADY, 1) == "steady" and state(VANISHING, 0) == state(VANISHING, 1) == "vanishing"
    text = write_flow_report(_study({"torch": {"plain110_cifar": BLOWN, "resnet110_cifar": STEADY,
                                               "plain20_cifar_nobn": VANISHING}}), tmp_path).read_text()  # fmt: skip
    row = _row(text, "plain110_cifar", "torch")
    assert row[-1] == "blown up" and row[-3] == "33,000 (conv1)"
    (sentence,) = [x for x in text.splitlines() if x.startswith("Plain nets with BN:")]
    assert "the first update was larger than the weights at depth 110" in sentence
    assert "conv1's 33,000x its weight at depth 110 (‖W‖ 2.59 → 85,400, ‖g‖ 8,540,000 → 0.0625)" in sentence
    assert "not read as vanishing" in sentence and "while ‖g‖ alone gives 0.00250" in sentence
    assert "Vanishing (‖g‖‖W‖ first/last below 0.01) after 1 step: plain20_cifar_nobn." in text
    assert "Residual nets with BN: at initialisation the gradient is steady at depth 110; no first update" in text


def test_a_rescale_behind_bn_leaves_the_verdict_as_it_was():
    """The BN law (W x c, g / c) applied to a layer of made-up figures changes the raw first/last by 1/c, not the
    judged first/last nor the state at initialisation; the first update relative to the weight changes by 1/c^2,
    which is why the blow-up is judged on its own."""
    for c in (0.1, 7.0, 1e4):
        weights = [[w * (c if i == 0 else 1) for i, w in enumerate(step)] for step in STEADY["weight_norm"]]
        grads = [[g / (c if i == 0 else 1) for i, g in enumerate(step)] for step in STEADY["grad_norm"]]
        rescaled = _made_up(weights, grads, STEADY["loss"])
        assert state(rescaled, 0) == state(STEADY, 0) == "steady"
        for step in (0, 1):
            assert first_to_last(sensitivity(rescaled, step)) == pytest.approx(first_to_last(sensitivity(STEADY, step)))
        assert first_to_last(rescaled["grad_norm"][0]) == pytest.approx(first_to_last(STEADY["grad_norm"][0]) / c)
        assert rescaled["first_update"][0] == pytest.approx(STEADY["first_update"][0] / c**2)


def test_nan_or_inf_anywhere_is_diverged_in_every_engine_whatever_the_loss(tmp_path):
    assert state(NAN_GRADIENTS, 0) != "diverged" and state(NAN_GRADIENTS, 1) == "diverged"
    inf_weight = _made_up([[2.59, 5.6, 8.0, 1.0], [2.6, math.inf, 8.0, 1.0]], STEADY["grad_norm"], [2.3, 2.3])
    assert state(inf_weight, 1) == "diverged"
    text = write_flow_report(
        _study({"torch": {"resnet56_cifar_nobn": NAN_LOSS}, "keras-jax": {"resnet56_cifar_nobn": NAN_GRADIENTS}}),
        tmp_path,
    ).read_text()
    assert _row(text, "resnet56_cifar_nobn", "keras-jax")[-1] == "diverged"
    assert _row(text, "resnet56_cifar_nobn", "keras-jax")[5] == "3,490 → 2.31"  # its finite loss, and yet diverged
    assert _row(text, "resnet56_cifar_nobn", "torch")[-1] == "diverged"
    assert "resnet56_cifar_nobn: both diverged" in text
    assert "it diverged (NaN or inf) within 1 step at depth 56" in text


def test_the_engines_agreement_is_stated_at_each_point_in_time(tmp_path):
    torch_runs = {"plain110_cifar": BLOWN, "resnet110_cifar": STEADY, "plain20_cifar_nobn": VANISHING}
    tf_runs = {"plain110_cifar": _perturbed(BLOWN, 4e-4, 21.0), "resnet110_cifar": _perturbed(STEADY, 5e-4, 0.03),
               "plain20_cifar_nobn": _perturbed(VANISHING, 2e-4, 0.02)}  # fmt: skip
    text = write_flow_report(_study({"torch": torch_runs, "keras-tensorflow": tf_runs}), tmp_path).read_text()
    assert "- **at init**, keras-tensorflow: within 0.01 in 3 of 3 networks (median network 0.0004)" in text
    assert "- **after 1 step**, keras-tensorflow: within 0.01 in 0 of 3 networks (median network 0.03)" in text
    assert "plain110_cifar 22x" in text  # a factor where the difference is large
    assert "Where the first update blew up the weights (plain110_cifar) the worst layer differs by 22x;" in text
    assert (
        "So keras-tensorflow agrees with torch at init (median network 0.0004) and does not agree with torch after "
        "1 step (median network 0.03)." in text
    )
    assert "most where the first update blew up the weights" in text
    tf_runs_close = {n: _perturbed(r, 1e-4, 1e-3) for n, r in torch_runs.items()}
    text = write_flow_report(_study({"torch": torch_runs, "keras-tensorflow": tf_runs_close}), tmp_path).read_text()
    assert "and agrees with torch after 1 step (median network 0.001)" in text


def test_the_report_with_no_steps_judges_initialisation_only(tmp_path):
    runs = {n: _made_up(r["weight_norm"][:1], r["grad_norm"][:1], r["loss"][:1])
            for n, r in {"plain110_cifar": BLOWN, "resnet110_cifar": STEADY}.items()}  # fmt: skip
    text = write_flow_report(_study({"torch": runs}, steps=0), tmp_path).read_text()
    assert "after 0" not in text and "state at init" in text
    assert (
        "Plain nets with BN: at initialisation the gradient is exploding (growing toward the input) at depth 110."
        in text
    )


# -- the engines -----------------------------------------------------------------------------------------------


def _engines_run(request, tmp_path) -> dict:
    from bench.studies.profiling.run import run_engine

    results = {e: run_engine(e, "gradient_flow", asdict(request), tmp_path, 600) for e in ENGINES}
    assert all("error" not in r for r in results.values()), results
    return results


def test_every_engine_records_the_same_measures(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("tensorflow")
    from bench.studies.profiling.run import GradientFlowRequest

    request = GradientFlowRequest(models=("resnet8_cifar", "plain8_cifar_nobn"), engines=(), batch_size=2, steps=1)
    results = _engines_run(request, tmp_path)
    for name in request.models:
        weights = [layer for layer in lower(get_spec(name)) if layer.op in (CONV, LINEAR)]
        sizes = [layer.params - (layer.c_out if layer.bias else 0) for layer in weights]
        runs = [results[e]["models"][name] for e in ENGINES]
        for run in runs:
            assert run["layers"] == [layer.name for layer in weights] and run["sizes"] == sizes
            assert run["dtype"] == "float32" and run["learning_rate"] == recipe.learning_rate(1.0)
            assert all(len(run[key]) == 2 and len(run[key][0]) == len(sizes) for key in MEASURES)
            g, w = np.array(run["grad_norm"]), np.array(run["weight_norm"])
            assert (g > 0).all() and (w > 0).all()
            np.testing.assert_allclose(run["grad_rms"], g / np.sqrt(sizes), rtol=1e-6)
            np.testing.assert_allclose(run["weight_rms"], w / np.sqrt(sizes), rtol=1e-6)
            np.testing.assert_allclose(run["grad_to_weight"], g / w, rtol=1e-6)
            np.testing.assert_allclose(run["first_update"], run["learning_rate"] * g[0] / w[0], rtol=1e-6)
            assert run["first_update_max"] == max(run["first_update"])
        for other in runs[1:]:  # every engine against PyTorch: the same weights and data
            np.testing.assert_allclose(other["weight_norm"][0], runs[0]["weight_norm"][0], rtol=1e-6)
            np.testing.assert_allclose(other["grad_norm"][0], runs[0]["grad_norm"][0], rtol=1e-4)
            np.testing.assert_allclose(other["weight_norm"][1], runs[0]["weight_norm"][1], rtol=1e-5)
            np.testing.assert_allclose(other["grad_norm"][1], runs[0]["grad_norm"][1], rtol=1e-3)  # after one step


def test_a_blown_up_first_update_and_a_divergence_read_alike_in_every_engine(tmp_path):
    """At 1e7 x the learning rate: in resnet8_cifar (BN) the first update is thousands of times each weight, and
    the step-1 weight norms show it (behind BN the gradient is orthogonal to the weight, so the first update
    lr x g makes ||W1||^2 = ||W0||^2 + (lr ||g0||)^2); resnet8_cifar_nobn overflows to inf and NaN, which is
    diverged in every engine (Keras on JAX keeps a finite loss there)."""
    pytest.importorskip("torch")
    pytest.importorskip("tensorflow")
    from bench.studies.profiling.run import GradientFlowRequest

    request = GradientFlowRequest(models=("resnet8_cifar", "resnet8_cifar_nobn"), engines=(), batch_size=2, steps=3,
                                  lr_scale=1e7)  # fmt: skip
    results = _engines_run(request, tmp_path)
    for engine, result in results.items():
        blown, diverging = result["models"]["resnet8_cifar"], result["models"]["resnet8_cifar_nobn"]
        update = np.array(blown["first_update"][:-1])  # the convolutions, each behind BN
        assert update.min() > 100, engine
        expected = np.array(blown["weight_norm"][0][:-1]) * np.sqrt(1 + update**2)
        np.testing.assert_allclose(blown["weight_norm"][1][:-1], expected, rtol=1e-3, err_msg=engine)
        assert state(blown, 0) != "blown up" and state(blown, 1) == "blown up", engine
        assert state(diverging, 0) != "diverged" and state(diverging, 3) == "diverged", engine
    data = {"request": asdict(request), "env": {}, "results": list(results.values())}
    text = write_flow_report(data, tmp_path).read_text()
    for engine in ENGINES:  # after the blow-up the engines part ways (resnet8_cifar: blown up in some, NaN in others)
        assert _row(text, "resnet8_cifar_nobn", engine)[-1] == "diverged"
    assert (
        "Residual nets with BN: at initialisation the gradient is steady at depth 8; the first update was larger "
        "than the weights at depth 8: " in text
    )


# -- the command -----------------------------------------------------------------------------------------------


def test_gradient_flow_end_to_end_on_the_smallest_depth(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("tensorflow")
    out = tmp_path / "flow"
    command = [sys.executable, "-m", "bench", "gradient-flow", "--depths", "8", "--steps", "1", "--batch-size", "2",
               "--out", str(out)]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    text = (out / "gradient_flow.md").read_text()
    names = ("plain8_cifar", "resnet8_cifar", "plain8_cifar_nobn", "resnet8_cifar_nobn")
    for name in names:
        assert _row(text, name, "torch") and _row(text, name, "keras-tensorflow")
    assert "**plain, with BN**" in text and "He et al." in text and recipe.describe(1.0) in text
    assert "- **at init**, keras-tensorflow" in text and "- **after 1 step**, keras-tensorflow" in text
    for family in (
        "Plain nets with BN:",
        "Residual nets with BN:",
        "Plain nets without BN:",
        "Residual nets without BN:",
    ):
        assert f"\n{family} at initialisation the gradient is" in text
    with (out / "gradient_flow.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    layers = sum(1 for layer in lower(get_spec("resnet8_cifar")) if layer.op in (CONV, LINEAR))
    assert len(rows) == 2 * 4 * 2 * layers  # engines x networks x steps (init + 1) x layers
    first = next(r for r in rows if r["engine"] == "torch" and r["model"] == "resnet8_cifar" and r["step"] == "0")
    assert float(first["grad_rms"]) == pytest.approx(float(first["grad_norm"]) / math.sqrt(int(first["numel"])))
    assert float(first["first_update"]) == pytest.approx(recipe.learning_rate() * float(first["grad_to_weight"]))
    data = json.loads((out / "gradient_flow.json").read_text())
    assert data["request"]["steps"] == 1 and [r["engine"] for r in data["results"]] == ["torch", "keras-tensorflow"]
    assert (out / "gradient_flow.png").read_bytes()[:4] == b"\x89PNG"


def test_bad_gradient_flow_input_exits_2_naming_what_is_valid(capsys):
    from bench.commands.cli import main

    assert main(["gradient-flow", "--depths", "21"]) == 2
    assert "6n+2" in capsys.readouterr().err
