"""The training study (`python -m bench train`): its data, its batches, its arithmetic, and the same training in
PyTorch and Keras on TensorFlow on a tiny run through the backends' own steps (bench/studies/)."""

import json

import numpy as np
import pytest

from bench.commands.cli import main
from bench.studies.training import data as train_data
from bench.studies.training.data import Batches, DataError, epoch_order, load_cifar10, write_cifar_archive
from bench.studies.training.report import (
    agreement,
    chance_outside_spread,
    compare_depths,
    mean_agreement,
    spread,
    steady_throughput,
    time_to_accuracy,
    verdicts,
)

pytest.importorskip("sklearn", reason="the digits data set needs scikit-learn")


@pytest.fixture(scope="module")
def digits():
    return train_data.load_digits()


def test_digits_are_the_1797_images_split_once_at_32_px_in_3_channels(digits):
    assert digits.train_images.shape == (1297, 3, 32, 32) and digits.held_images.shape == (500, 3, 32, 32)
    assert digits.train_images.dtype == np.float32 and digits.train_labels.dtype == np.int64
    assert set(digits.train_labels) == set(range(10)) and set(digits.held_labels) == set(range(10))
    assert np.array_equal(digits.train_images[:, 0], digits.train_images[:, 2])  # grey copied to 3 channels
    block = digits.train_images[7, 0, 8:12, 12:16]
    assert np.all(block == block[0, 0])  # each 8 x 8 pixel became a 4 x 4 block
    assert abs(digits.train_images.mean()) < 1e-4 and abs(digits.train_images.std() - 1) < 1e-3
    assert train_data.load_digits().digest() == digits.digest()  # the same split in every worker
    assert not digits.augment


def test_a_cifar_archive_in_the_python_format_is_read_in_its_layout(tmp_path):
    rng = np.random.default_rng(0)
    images = {name: rng.integers(0, 256, (3, 3072), dtype=np.uint8) for name in train_data.CIFAR_MEMBERS}
    labels = {name: list(rng.integers(0, 10, 3)) for name in train_data.CIFAR_MEMBERS}
    data = load_cifar10(write_cifar_archive(tmp_path / "cifar-10-python.tar.gz", images, labels))
    assert data.train_images.shape == (15, 3, 32, 32) and data.held_images.shape == (3, 3, 32, 32)
    assert list(data.train_labels) == sum((labels[f"data_batch_{i}"] for i in range(1, 6)), [])
    assert list(data.held_labels) == labels["test_batch"] and data.augment
    raw = np.concatenate([images[f"data_batch_{i}"] for i in range(1, 6)]).astype(np.float64) / 255
    # row layout: 1,024 red, then green, then blue bytes, each row-major 32 x 32; normalised per channel
    red = raw[:, :1024].reshape(15, 32, 32)
    expected = (red[4, 5, 6] - red.mean()) / red.std()
    assert data.train_images[4, 0, 5, 6] == pytest.approx(expected, rel=1e-4)
    blue = raw[:, 2048:].reshape(15, 32, 32)
    assert data.train_images[9, 2, 31, 0] == pytest.approx((blue[9, 31, 0] - blue.mean()) / blue.std(), rel=1e-4)


def test_a_damaged_cifar_archive_is_refused_with_what_it_lacks(tmp_path):
    images = {"data_batch_1": np.zeros((2, 3072), np.uint8)}
    path = write_cifar_archive(tmp_path / "partial.tar.gz", images, {"data_batch_1": [0, 1]})
    with pytest.raises(DataError, match="no data_batch_2"):
        load_cifar10(path)
    wrong = {name: np.zeros((2, 100), np.uint8) for name in train_data.CIFAR_MEMBERS}
    path = write_cifar_archive(tmp_path / "wrong.tar.gz", wrong, {name: [0, 1] for name in wrong})
    with pytest.raises(DataError, match="not \\(N, 3072\\)"):
        load_cifar10(path)
    (tmp_path / "text.tar.gz").write_text("not an archive")
    with pytest.raises(DataError, match="not a tar archive"):
        load_cifar10(tmp_path / "text.tar.gz")
    with pytest.raises(DataError, match="not a file"):
        load_cifar10(tmp_path / "missing.tar.gz")


def test_batches_are_fixed_by_the_seed_and_cover_the_epoch_once(digits):
    first = [y for _, y in Batches(digits, 16, seed=3).epoch(1)]
    again = [y for _, y in Batches(digits, 16, seed=3).epoch(1)]
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True)) and len(first) == 1297 // 16
    other = [y for _, y in Batches(digits, 16, seed=4).epoch(1)]
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))
    order = np.concatenate(epoch_order(1297, 16, 3, 1))
    assert len(set(order)) == len(order) == 1296  # no image twice; the last partial batch dropped
    assert not np.array_equal(order, np.concatenate(epoch_order(1297, 16, 3, 2)))  # a new order each epoch


def test_augmented_batches_are_the_same_for_a_seed_and_crop_and_flip(tmp_path):
    rng = np.random.default_rng(1)
    images = {name: rng.integers(0, 256, (4, 3072), dtype=np.uint8) for name in train_data.CIFAR_MEMBERS}
    data = load_cifar10(write_cifar_archive(tmp_path / "c.tar.gz", images, {n: [0, 1, 2, 3] for n in images}))
    a = [x for x, _ in Batches(data, 4, seed=0).epoch(1)]
    b = [x for x, _ in Batches(data, 4, seed=0).epoch(1)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    index = epoch_order(20, 4, 0, 1)[0]
    assert not np.array_equal(a[0], data.train_images[index])  # cropped or flipped
    assert a[0].shape == (4, 3, 32, 32)


def _run(seed, errors, held=None, wall=10.0, steps=10, batch=8):
    epochs = []
    for i, error in enumerate(errors):
        epochs.append({"epoch": i + 1, "steps": steps, "images": (i + 1) * steps * batch, "train_error": error,
                       "held_error": (held or errors)[i], "train_loss": error, "wall_s": wall,
                       "cumulative_wall_s": (i + 1) * wall, "data_s": 1.0})  # fmt: skip
    return {"seed": seed, "epochs": epochs, "first_step_s": 2.0}


def test_time_to_accuracy_is_the_first_epoch_that_reaches_it():
    run = _run(0, [0.5, 0.2, 0.1, 0.03])
    assert time_to_accuracy(run, "train_error", 0.8) == {"epoch": 2, "images": 160, "wall_s": 20.0}
    assert time_to_accuracy(run, "train_error", 0.9)["epoch"] == 3  # exactly 90%: reached
    assert time_to_accuracy(run, "train_error", 0.99) is None
    assert time_to_accuracy(run, "held_error", 0.5) == {"epoch": 1, "images": 80, "wall_s": 10.0}
    assert spread([1.0, 2.0, 3.0]) == {"mean": 2.0, "sd": 1.0, "min": 1.0, "max": 3.0, "n": 3}
    # 4 epochs of 10 steps of 8 images in 40 s, the first step (2 s) and its batch left out
    assert steady_throughput(run, 8) == pytest.approx((320 - 8) / 38)


def test_agreement_and_verdicts_follow_from_the_figures():
    reference = [_run(0, [0.8, 0.5]), _run(1, [0.7, 0.3]), _run(2, [0.9, 0.4])]
    close = [_run(0, [0.82, 0.45]), _run(1, [0.7, 0.31]), _run(2, [0.88, 0.4])]
    result = agreement(reference, close, "train_loss")
    assert result["max_deviation"] == pytest.approx(0.05) and result["epoch"] == 2
    assert result["spread_there"] == pytest.approx(0.2) and result["within"]
    far = [_run(0, [0.3, 0.5]), _run(1, [0.7, 0.3]), _run(2, [0.9, 0.4])]
    assert not agreement(reference, far, "train_loss")["within"]  # 0.5 at epoch 1 against a spread of 0.2
    # The mean curves: far's seed 0 is 0.5 off, its mean (0.633) 0.167 below the reference's (0.8): within 0.2.
    means = mean_agreement(reference, far, "train_loss")
    assert means["max_deviation"] == pytest.approx(0.8 - (0.3 + 0.7 + 0.9) / 3) and means["within"]
    shifted = [_run(s, [e + 0.25 for e in errors]) for s, errors in ((0, [0.8, 0.5]), (1, [0.7, 0.3]), (2, [0.9, 0.4]))]
    assert not mean_agreement(reference, shifted, "train_loss")["within"]  # every run 0.25 off: beyond 0.2
    assert compare_depths([0.1, 0.2], [0.3, 0.4]) == "worse"
    assert compare_depths([0.3, 0.4], [0.1, 0.2]) == "better"
    assert compare_depths([0.1, 0.3], [0.2, 0.4]) == "within the seed spread"
    grouped = {"plain20_cifar": [_run(0, [0.5, 0.1]), _run(1, [0.4, 0.12])],
               "plain56_cifar": [_run(0, [0.9, 0.5]), _run(1, [0.8, 0.4])],
               "resnet20_cifar": [_run(0, [0.5, 0.1]), _run(1, [0.4, 0.12])],
               "resnet56_cifar": [_run(0, [0.3, 0.11]), _run(1, [0.45, 0.05])]}  # fmt: skip
    found = verdicts(grouped, ("plain", "resnet"))
    assert (found["plain"]["final"], found["plain"]["throughout"]) == ("worse", "worse")
    assert found["resnet"]["final"] == "within the seed spread" and found["resnet"]["deep"] == "resnet56_cifar"


def test_the_mean_curve_tests_own_failure_rate_falls_with_the_seeds():
    """Two engines that train alike, by simulation: with 3 seeds the difference of the means leaves the
    reference's range at an epoch in about 14% of draws (a textbook order statistic: the difference's sd is
    0.82 of one run's, the expected range of 3 normals 1.69 of it), with 5 about 2%."""
    three, five = chance_outside_spread(3), chance_outside_spread(5)
    assert three == pytest.approx(0.143, abs=0.01) and five == pytest.approx(0.018, abs=0.005)
    assert chance_outside_spread(2) > three > chance_outside_spread(4) > five


def test_bad_input_exits_2_naming_the_choices(capsys):
    assert main(["train", "--depths", "21"]) == 2
    assert "6n+2" in capsys.readouterr().err
    assert main(["train", "--frameworks", "mxnet"]) == 2
    assert "valid frameworks" in capsys.readouterr().err
    assert main(["train", "--seeds", "0"]) == 2
    assert "at least 2" in capsys.readouterr().err
    assert main(["train", "--kinds", "dense"]) == 2
    assert "plain and/or resnet" in capsys.readouterr().err


def test_pytorch_and_keras_train_alike_on_a_tiny_run(tmp_path):
    """ResNet-8 on 32 digits, 2 seeds, 2 epochs of 4 steps, through the backends' own steps in both engines'
    workers (side by side): the same initial weights and batches, the same first loss, close curves after."""
    pytest.importorskip("torch")
    pytest.importorskip("tensorflow")
    out = tmp_path / "run"
    code = main(["train", "--depths", "8", "--kinds", "resnet", "--seeds", "0,1", "--epochs", "2", "--batch-size",
                 "8", "--train-images", "32", "--eval-train", "32", "--synthetic-windows", "0", "--float64-reference", "--out", str(out)])  # fmt: skip
    assert code == 0
    data = json.loads((out / "training.json").read_text())
    results = {r["engine"]: r for r in data["results"]}
    assert set(results) == {"torch", "keras-tensorflow"} and not any("error" in r for r in results.values())
    for seed in (0, 1):
        torch_run, keras_run = (next(r for r in results[e]["runs"] if r["seed"] == seed) for e in results)
        assert torch_run["initial_weights"] == keras_run["initial_weights"]
        assert torch_run["batch_digests"] == keras_run["batch_digests"]
        a, b = np.concatenate(torch_run["step_losses"]), np.concatenate(keras_run["step_losses"])
        assert len(a) == len(b) == 8
        assert abs(a[0] - b[0]) < 1e-4 * abs(a[0])  # the same weights on the same batch
        assert np.max(np.abs(a - b)) < 0.05, (a, b)
        assert [e["images"] for e in torch_run["epochs"]] == [32, 64]
    assert results["torch"]["runs"][0]["initial_weights"] != results["torch"]["runs"][1]["initial_weights"]
    (control,) = results["torch"]["float64_runs"]  # the first seed again, in float64, from the same weights
    assert (
        control["dtype"] == "float64" and control["initial_weights"] == results["torch"]["runs"][0]["initial_weights"]
    )
    assert abs(control["step_losses"][0][0] - results["torch"]["runs"][0]["step_losses"][0][0]) < 1e-4
    report = (out / "training.md").read_text()
    assert "## The same training in every engine" in report and "torch float64 (control)" in report
    assert (out / "training.png").stat().st_size > 0 and len((out / "training.csv").read_text().splitlines()) == 9
