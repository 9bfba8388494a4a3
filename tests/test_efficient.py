"""Project 3: the efficient models, their counters, ONNX export, INT8, and `deepexp efficient`."""
from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

import onnx
import pytest
import torch
import torchvision

from deepexp.config import to_plain
from deepexp.deploy import Deployable, OnnxExporter, parity, session
from deepexp.measure import count_macs, count_params, torch_latency
from deepexp.models import create_model
from deepexp.models.efficient import depthwise_separable_block

from conftest import compose_train, needs_mnist, read_csv, run_cli

VARIANTS = ["dws_cnn", "bottleneck_cnn", "squeeze_cnn", "inception_cnn", "mobilenet_v2"]
README = Path(__file__).resolve().parents[1] / "README.md"


def build(name: str, **kw):
    """`name` with the options of configs/model/<name>.yaml (overridden by `kw`), CIFAR-shaped."""
    options = {k: v for k, v in to_plain(compose_train([f"model={name}"]).model).items() if k != "name"}
    return create_model(name, **{"in_channels": 3, "image_shape": (32, 32), "num_classes": 10, "act": "relu", **options, **kw})


# --- counters against published figures ----------------------------------------------------


def test_resnet18_counters_match_published_figures():
    model = torchvision.models.resnet18()
    assert count_params(model) == 11_689_512  # 11.69M
    assert count_macs(model, (3, 224, 224)) == pytest.approx(1.82e9, rel=0.01)  # 1.82 GMACs


def test_mobilenet_v2_counters_match_published_figures_and_torchvision():
    ours = create_model("mobilenet_v2", in_channels=3, image_shape=(224, 224), num_classes=1000, act="relu", width=1.0)
    assert count_params(ours) == count_params(torchvision.models.mobilenet_v2()) == 3_504_872  # 3.5M
    assert count_macs(ours, (3, 224, 224)) == pytest.approx(300e6, rel=0.01)  # about 300M MACs


def test_depthwise_separable_conv_has_the_expected_parameters_and_macs():
    c_in, c_out, size = 32, 64, 16
    block = depthwise_separable_block(c_in, c_out, torch.nn.ReLU, bn=False)
    assert count_params(block) == (9 * c_in + c_in) + (c_in * c_out + c_out)  # depthwise + pointwise, with biases
    assert count_macs(block, (c_in, size, size)) == size * size * (9 * c_in + c_in * c_out)
    standard = torch.nn.Conv2d(c_in, c_out, 3, padding=1)
    ratio = count_macs(standard, (c_in, size, size)) / count_macs(block, (c_in, size, size))
    assert ratio == pytest.approx(1 / (1 / c_out + 1 / 9))  # Howard et al. 2017, eq. 5


# --- the models --------------------------------------------------------------------------------


def test_baseline_is_one_to_three_million_parameters_and_every_variant_is_under_500k():
    assert 1_000_000 <= count_params(build("baseline_cnn")) <= 3_000_000
    for name in VARIANTS:
        assert count_params(build(name)) < 500_000, name


@pytest.mark.parametrize("name", ["baseline_cnn", *VARIANTS])
def test_width_multiplier_scales_parameters_roughly_quadratically(name):
    small, large = count_params(build(name, width=0.5)), count_params(build(name, width=1.0))
    assert 2.5 < large / small < 4.5


# --- export, latency -------------------------------------------------------------------------


def test_onnx_export_matches_pytorch_at_any_batch_size(tmp_path):
    torch.manual_seed(0)
    model = build("inception_cnn", width=0.25, act="swish").eval()
    deployable = Deployable(model, torch.tensor([0.5, 0.4, 0.3]), torch.tensor([0.2, 0.25, 0.3]))
    path = OnnxExporter().export(deployable, torch.rand(2, 3, 32, 32), tmp_path / "m.onnx")
    sess = session(path, threads=1)
    for batch in (1, 5):
        assert parity(deployable, sess, torch.rand(batch, 3, 32, 32)) < 1e-4
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]  # no temporary files left behind


def test_models_of_one_architecture_share_a_trace_and_each_file_holds_its_own_weights(tmp_path):
    def trained_looking(seed: int) -> Deployable:  # BatchNorm statistics away from their defaults, as after training
        torch.manual_seed(seed)
        model = build("bottleneck_cnn", width=0.25)
        model.train()(torch.randn(64, 3, 32, 32))
        return Deployable(model, torch.rand(3), torch.rand(3) + 0.5).eval()

    first, second = trained_looking(0), trained_looking(1)
    exporter, example, images = OnnxExporter(), torch.rand(2, 3, 32, 32), torch.rand(5, 3, 32, 32)
    exporter.export(first, example, tmp_path / "first.onnx", architecture="bottleneck_cnn")
    exporter.export(second, example, tmp_path / "second.onnx", architecture="bottleneck_cnn")
    fresh = OnnxExporter().export(second, example, tmp_path / "fresh.onnx")
    # Each file computes its own model, not the one traced first; the reused trace is the graph a fresh export gives.
    assert parity(first, session(tmp_path / "first.onnx", threads=1), images) < 1e-4
    assert parity(second, session(tmp_path / "second.onnx", threads=1), images) < 1e-4
    assert parity(first, session(tmp_path / "second.onnx", threads=1), images) > 1e-2
    ops = lambda path: [node.op_type for node in onnx.load(path).graph.node]
    assert ops(tmp_path / "second.onnx") == ops(fresh)
    # A key reused for another architecture is refused rather than mixing two models' weights.
    with pytest.raises(ValueError, match="other parameters"):
        exporter.export(Deployable(build("dws_cnn", width=0.25), torch.rand(3), torch.rand(3)), example,
                        tmp_path / "other.onnx", architecture="bottleneck_cnn")
    assert not (tmp_path / "other.onnx").exists()


def test_latency_is_positive_with_the_recorded_threads():
    lat = torch_latency(build("dws_cnn", width=0.25), (3, 32, 32), batch=4, threads=1, min_run_time=0.05)
    assert lat.threads == 1 and lat.batch == 4 and lat.median_ms > 0 and lat.iqr_ms >= 0
    assert lat.images_per_s == pytest.approx(4000 / lat.median_ms)


# --- the command -------------------------------------------------------------------------------


@pytest.mark.slow
def test_measure_only_mode_covers_every_model_without_training(tmp_path):
    out = tmp_path / "exp"
    result = run_cli(["efficient", "train=false", "width=0.25", "min_run_time=0.02", "calibration_images=32", "latency_batches=[1,4]",
                      "dataset=synthetic", f"hydra.run.dir={out}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = read_csv(out / "summary.csv")
    assert {(r["model"], r["runtime"]) for r in rows} == {
        (m, rt) for m in ["baseline_cnn", *VARIANTS] for rt in ("pytorch-fp32", "onnxruntime-fp32", "onnxruntime-int8")}
    for r in rows:
        assert float(r["latency_b1_ms"]) > 0 and float(r["latency_b4_ms"]) > 0 and r["test_acc_mean"] == ""
    size = {r["runtime"]: int(r["size_bytes"]) for r in rows if r["model"] == "baseline_cnn"}
    assert size["onnxruntime-int8"] < 0.5 * size["onnxruntime-fp32"]  # weights dominate: about 4x smaller
    # (for the 10K-parameter models at width 0.25, per-channel scales make the int8 file no smaller)
    assert not (out / "runs").exists() and not (out / "deploy").exists()
    assert (out / "plots" / "latency_vs_macs.png").is_file() and (out / "report.md").is_file()


@pytest.mark.slow
def test_measure_only_mode_times_non_square_images_at_their_own_shape(tmp_path):
    """Latency, MACs and the ONNX export use (C, H, W), not H x H: a 28 x 32 npz is measured at 28 x 32."""
    import numpy as np

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "rect.npz", x_train=rng.integers(0, 256, (40, 28, 32), dtype=np.uint8), y_train=np.arange(40) % 2,
             x_test=rng.integers(0, 256, (8, 28, 32), dtype=np.uint8), y_test=np.arange(8) % 2)
    out = tmp_path / "exp"
    result = run_cli(["efficient", "train=false", "models=[baseline_cnn,dws_cnn]", "width=0.25", "quantize=false", "min_run_time=0.01",
                      "latency_batches=[1]", "dataset=npz", f"dataset.path={tmp_path / 'rect.npz'}", f"hydra.run.dir={out}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    cost = json.loads((out / "models" / "dws_cnn" / "cost.json").read_text())
    assert cost["input"] == [1, 28, 32]
    model = build("dws_cnn", width=0.25, in_channels=1, image_shape=(28, 32), num_classes=2)
    assert cost["macs"] == count_macs(model, (1, 28, 32)) != count_macs(model, (1, 28, 28))
    assert all(float(r["latency_b1_ms"]) > 0 for r in read_csv(out / "summary.csv"))


@pytest.mark.slow
@needs_mnist
def test_quick_study_writes_every_file_and_int8_stays_close_to_fp32_on_real_data(tmp_path):
    # MNIST, so that two short epochs already give models well above chance whose INT8 copies can be compared.
    out = tmp_path / "exp"
    # Quarter width and batch 32: 2 epochs reach 0.8-0.9 test accuracy, each run in about half the time of 3 epochs at half width.
    args = ["efficient", "preset=quick", "dataset=mnist", "models=[dws_cnn,bottleneck_cnn]", "baseline=dws_cnn", "width=0.25",
            "subset=3000", "epochs=2", "batch_size=32", "lr=0.05", "min_run_time=0.02", "calibration_images=64",
            f"hydra.run.dir={out}"]
    result = run_cli(args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for name in ("summary.csv", "summary.md", "runs.csv", "report.md", "plots/accuracy_vs_latency.png",
                 "plots/accuracy_vs_macs.png", "plots/latency_vs_macs.png"):
        assert (out / name).is_file(), name
    runs, rows = read_csv(out / "runs.csv"), read_csv(out / "summary.csv")
    assert len(runs) == 4 and len(rows) == 6
    for run in runs:  # the same weights through ONNX give the same predictions; INT8 stays close
        metrics = json.loads((out / "runs" / f"{run['model']}-s{run['seed']}" / "metrics.json").read_text())
        assert float(run["test_acc"]) == metrics["test"]["acc"]
        assert float(run["parity_max_abs"]) < 1e-4
        assert float(run["test_acc"]) > 0.7  # learned something, so the comparisons below mean something
        assert abs(float(run["onnx_fp32_acc"]) - float(run["test_acc"])) <= 0.001  # float rounding may flip near-ties
        assert abs(float(run["onnx_int8_acc"]) - float(run["onnx_fp32_acc"])) < 0.02  # the stated INT8 tolerance
        assert float(run["int8_agreement"]) > 0.95
    for row in rows:  # means and stds are those of the per-run values
        key = {"pytorch-fp32": "test_acc", "onnxruntime-fp32": "onnx_fp32_acc", "onnxruntime-int8": "onnx_int8_acc"}[row["runtime"]]
        values = [float(r[key]) for r in runs if r["model"] == row["model"]]
        assert float(row["test_acc_mean"]) == pytest.approx(statistics.fmean(values))
        assert float(row["test_acc_std"]) == pytest.approx(statistics.stdev(values))
    info = json.loads(next((out / "deploy").glob("*.json")).read_text())
    assert (out / "deploy" / info["file"]).is_file() and info["output"]["classes"][3] == "3"
    report = (out / "report.md").read_text()
    assert "Recommended for deployment" in report and "Quick results are a first look" in report.split("## Limitations")[1]

    # The README's deployment example classifies a real test image with nothing but ONNX Runtime.
    from PIL import Image

    from deepexp.config import DataConfig, DatasetConfig
    from deepexp.data import data_roots, load_mnist

    raw = load_mnist(DatasetConfig(name="mnist", augment=False), data_roots(DataConfig()), download=False)()
    Image.fromarray(raw.x_test[0, 0].numpy()).save(tmp_path / "image.png")
    snippet = re.search(r"### Deploying a model.*?```python\n(.*?)```", README.read_text(), re.S).group(1)
    snippet = snippet.replace('Path("outputs/efficient/DATE/TIME/deploy")', f'Path({str(out / "deploy")!r})')
    snippet = snippet.replace('"image.png"', repr(str(tmp_path / "image.png")))
    printed = run_python(snippet, tmp_path)
    assert printed.strip() in info["output"]["classes"]

    # Running it again reuses every run and every export.
    files = [out / "models" / "dws_cnn" / "s0" / "export.json", out / "runs" / "dws_cnn-s0" / "metrics.json",
             out / "runs" / "bottleneck_cnn-s1" / "checkpoints" / "last.pt"]
    stamps = [f.stat().st_mtime_ns for f in files]
    again = run_cli(args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert [f.stat().st_mtime_ns for f in files] == stamps


def run_python(code: str, cwd: Path) -> str:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("args, message", [
    (["models=[baseline_cnn,nope]"], "models='nope' is not valid"),
    (["baseline=mobilenet_v2", "models=[dws_cnn]"], "baseline 'mobilenet_v2' must be one of models"),
    (["latency_batches=[0]"], "latency_batches must be positive"),
    (["width=-1"], "width must be in (0, 8]"),
])
def test_bad_study_input_is_one_line_and_exit_2(tmp_path, args, message):
    result = run_cli(["efficient", *args, f"hydra.run.dir={tmp_path / 'exp'}"], cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


# --- report sentences, from hand-built measurements --------------------------------------------


def measured_by_hand(batches, quantize):
    """Two models measured at `batches`: dws_cnn with half the baseline's parameters, a quarter of its MACs and
    4x its speed in both runtimes; INT8 1.5x faster than ONNX FP32, its files 3x smaller."""
    from deepexp.experiments.efficient import ORT_FP32, ORT_INT8, PYTORCH, Measured

    def cost(params, macs, ms):
        runtimes = {PYTORCH: ms, ORT_FP32: ms / 2, **({ORT_INT8: ms / 3} if quantize else {})}
        return {"settings": {"threads": 2}, "params": params, "macs": macs,
                "size_bytes": {PYTORCH: 4 * params, ORT_FP32: 4 * params, ORT_INT8: 4 * params // 3},
                "latency": {rt: {str(b): {"median_ms": t * b, "iqr_ms": 0.1, "images_per_s": 1000 / t} for b in batches}
                            for rt, t in runtimes.items()}}

    return [Measured("baseline_cnn", cost(1000, 4_000_000, 8.0)), Measured("dws_cnn", cost(500, 1_000_000, 2.0))]


@pytest.mark.parametrize("batches", [[1], [1, 32]])
def test_report_sentences_name_each_latency_batch_once(batches):
    from deepexp.config import compose_config, validate
    from deepexp.experiments.efficient import PYTORCH, findings, summary_rows, table

    study = validate(compose_config("efficient", ["models=[baseline_cnn,dws_cnn]", "train=false", f"latency_batches=[{','.join(map(str, batches))}]"]))
    measured = measured_by_hand(batches, study.quantize)
    rows = summary_rows(study, measured)
    lines = findings(study, rows, measured, None)
    dws = next(line for line in lines if line.startswith("**dws_cnn**"))
    int8 = next(line for line in lines if line.startswith("**INT8**"))
    header, _ = table(study, rows, [PYTORCH])
    if batches == [1]:
        assert dws == ("**dws_cnn**: 0.50x the parameters and 0.25x the MACs of baseline_cnn; speed (baseline latency / this latency) "
                       "4.00x at batch 1 in PyTorch, 4.00x in ONNX Runtime.")
        assert int8.endswith("latency speed-up over ONNX Runtime FP32 1.50-1.50x at batch 1 (median 1.50x).")
        assert [h for h in header if h.startswith("latency")] == ["latency b=1 ms (IQR)"]
    else:
        assert dws.endswith("speed (baseline latency / this latency) 4.00x at batch 1 and 4.00x at batch 32 in PyTorch, "
                            "4.00x and 4.00x in ONNX Runtime.")
        assert int8.endswith("1.50-1.50x at batch 1 (median 1.50x) and 1.50-1.50x at batch 32 (median 1.50x).")
        assert [h for h in header if h.startswith("latency")] == ["latency b=1 ms (IQR)", "latency b=32 ms (IQR)"]
