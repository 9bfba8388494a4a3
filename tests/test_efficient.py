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


def test_onnx_export_matches_pytorch_at_any_batch_size_and_leaves_the_model_in_training_mode(tmp_path):
    torch.manual_seed(0)
    model = build("inception_cnn", width=0.25, act="swish")  # in training mode, as a trainer holds it
    deployable = Deployable(model, torch.tensor([0.5, 0.4, 0.3]), torch.tensor([0.2, 0.25, 0.3]))
    path = OnnxExporter().export(deployable, torch.rand(2, 3, 32, 32), tmp_path / "m.onnx")
    sess = session(path, threads=1)
    for batch in (1, 5):
        assert parity(deployable, sess, torch.rand(batch, 3, 32, 32)) < 1e-4  # both sides in eval mode
    assert all(m.training for m in deployable.modules())  # exported and checked in eval mode, then given back as it was
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
        exporter.export(
            Deployable(build("dws_cnn", width=0.25), torch.rand(3), torch.rand(3)), example, tmp_path / "other.onnx", architecture="bottleneck_cnn"
        )
    assert not (tmp_path / "other.onnx").exists()


def test_latency_is_positive_with_the_recorded_threads():
    lat = torch_latency(build("dws_cnn", width=0.25), (3, 32, 32), batch=4, threads=1, min_run_time=0.05)
    assert lat.threads == 1 and lat.batch == 4 and lat.median_ms > 0 and lat.iqr_ms >= 0
    assert lat.images_per_s == pytest.approx(4000 / lat.median_ms)


# --- the command -------------------------------------------------------------------------------


@pytest.mark.slow
def test_measure_only_mode_covers_every_model_without_training(tmp_path):
    out = tmp_path / "exp"
    result = run_cli(
        [
            "efficient",
            "train_models=false",
            "width=0.25",
            "min_run_time=0.02",
            "calibration_images=32",
            "latency_batches=[1,4]",
            "dataset=synthetic",
            f"hydra.run.dir={out}",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    rows = read_csv(out / "summary.csv")
    assert {(r["model"], r["runtime"]) for r in rows} == {
        (m, rt) for m in ["baseline_cnn", *VARIANTS] for rt in ("pytorch-fp32", "onnxruntime-fp32", "onnxruntime-int8")
    }
    for r in rows:
        assert float(r["latency_b1_ms"]) > 0 and float(r["latency_b4_ms"]) > 0 and r["test_acc_mean"] == ""
    size = {r["runtime"]: int(r["size_bytes"]) for r in rows if r["model"] == "baseline_cnn"}
    assert size["onnxruntime-int8"] < 0.5 * size["onnxruntime-fp32"]  # weights dominate: about 4x smaller
    # (for the 10K-parameter models at width 0.25, per-channel scales make the int8 file no smaller)
    assert not (out / "runs").exists() and not (out / "deploy").exists()
    assert (out / "plots" / "latency_vs_macs.png").is_file() and (out / "report.md").is_file()
    cost = json.loads((out / "models" / "dws_cnn" / "cost.json").read_text())  # every figure has its spread and its verdict
    figures = [fig for key in ("latency", "latency_1_thread") for by_batch in cost.get(key, {}).values() for fig in by_batch.values()]
    assert len(figures) == 6 * (2 if cost["settings"]["threads"] != 1 else 1)  # 3 runtimes x 2 batches, at 1 thread too
    assert all(fig["blocks"] >= 5 and fig["reliable"] == (not fig["problems"]) for fig in figures)
    assert len(cost["host"]["before"]["load_average"]) == 3 and cost["host"]["cores"] >= 1
    assert "## Measurement reliability" in (out / "report.md").read_text()


@pytest.mark.slow
def test_measure_only_mode_times_non_square_images_at_their_own_shape(tmp_path):
    """Latency, MACs and the ONNX export use (C, H, W), not H x H: a 28 x 32 npz is measured at 28 x 32."""
    import numpy as np

    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "rect.npz",
        x_train=rng.integers(0, 256, (40, 28, 32), dtype=np.uint8),
        y_train=np.arange(40) % 2,
        x_test=rng.integers(0, 256, (8, 28, 32), dtype=np.uint8),
        y_test=np.arange(8) % 2,
    )
    out = tmp_path / "exp"
    result = run_cli(
        [
            "efficient",
            "train_models=false",
            "models=[baseline_cnn,dws_cnn]",
            "width=0.25",
            "quantize=false",
            "min_run_time=0.01",
            "latency_batches=[1]",
            "dataset=npz",
            f"dataset.path={tmp_path / 'rect.npz'}",
            f"hydra.run.dir={out}",
        ],
        cwd=tmp_path,
    )
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
    args = [
        "efficient",
        "preset=quick",
        "dataset=mnist",
        "models=[dws_cnn,bottleneck_cnn]",
        "baseline=dws_cnn",
        "width=0.25",
        "subset=3000",
        "epochs=2",
        "batch_size=32",
        "lr=0.05",
        "min_run_time=0.02",
        "calibration_images=64",
        f"hydra.run.dir={out}",
    ]
    result = run_cli(args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for name in (
        "summary.csv",
        "summary.md",
        "runs.csv",
        "report.md",
        "plots/accuracy_vs_latency.png",
        "plots/accuracy_vs_macs.png",
        "plots/latency_vs_macs.png",
    ):
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
    deployed = next(r for r in runs if r["model"] == info["model"] and int(r["seed"]) == info["seed"])
    assert info["test_acc"]["onnx_fp32"] == float(deployed["onnx_fp32_acc"])  # the deployed seed's, not the mean
    report = (out / "report.md").read_text()
    assert "Recommended for deployment" in report and "Quick results are a first look" in report.split("## Limitations")[1]

    # The README's deployment example classifies a real test image with nothing but ONNX Runtime.
    from PIL import Image

    from deepexp.config import DataConfig, DatasetConfig
    from deepexp.data import data_roots, load_mnist

    raw = load_mnist(DatasetConfig(name="mnist", augment=False), data_roots(DataConfig()), download=False)()
    Image.fromarray(raw.x_test[0, 0].numpy()).save(tmp_path / "image.png")
    snippet = re.search(r"### Deploying a model.*?```python\n(.*?)```", README.read_text(), re.S).group(1)
    snippet = snippet.replace('Path("outputs/efficient/DATE/TIME/deploy")', f"Path({str(out / 'deploy')!r})")
    snippet = snippet.replace('"image.png"', repr(str(tmp_path / "image.png")))
    printed = run_python(snippet, tmp_path)
    assert printed.strip() in info["output"]["classes"]

    # Running it again reuses every run and every export.
    files = [
        out / "models" / "dws_cnn" / "s0" / "export.json",
        out / "runs" / "dws_cnn-s0" / "metrics.json",
        out / "runs" / "bottleneck_cnn-s1" / "checkpoints" / "last.pt",
    ]
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


@pytest.mark.parametrize(
    "args, message",
    [
        (["models=[baseline_cnn,nope]"], "models='nope' is not valid"),
        (["baseline=mobilenet_v2", "models=[dws_cnn]"], "baseline 'mobilenet_v2' must be one of models"),
        (["latency_batches=[0]"], "latency_batches must be positive"),
        (["width=-1"], "width must be in (0, 8]"),
    ],
)
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
        return {
            "settings": {"threads": 2},
            "params": params,
            "macs": macs,
            "size_bytes": {PYTORCH: 4 * params, ORT_FP32: 4 * params, ORT_INT8: 4 * params // 3},
            "latency": {
                rt: {str(b): {"median_ms": t * b, "iqr_ms": 0.1, "images_per_s": 1000 / t, "blocks": 10, "threads": 2} for b in batches}
                for rt, t in runtimes.items()
            },
        }

    return [Measured("baseline_cnn", cost(1000, 4_000_000, 8.0)), Measured("dws_cnn", cost(500, 1_000_000, 2.0))]


@pytest.mark.parametrize("batches", [[1], [1, 32]])
def test_report_sentences_name_each_latency_batch_once(batches):
    from deepexp.config import compose_config, validate
    from deepexp.experiments.efficient import PYTORCH, findings, summary_rows, table

    study = validate(
        compose_config("efficient", ["models=[baseline_cnn,dws_cnn]", "train_models=false", f"latency_batches=[{','.join(map(str, batches))}]"])
    )
    measured = measured_by_hand(batches, study.quantize)
    rows = summary_rows(study, measured)
    lines = findings(study, rows, measured, None)
    dws = next(line for line in lines if line.startswith("**dws_cnn**"))
    int8 = next(line for line in lines if line.startswith("**INT8**"))
    header, _ = table(study, rows, [PYTORCH])
    if batches == [1]:
        assert dws == (
            "**dws_cnn**: 0.50x the parameters and 0.25x the MACs of baseline_cnn; speed (baseline latency / this latency) "
            "4.00x at batch 1 in PyTorch, 4.00x in ONNX Runtime."
        )
        assert int8.endswith("latency speed-up over ONNX Runtime FP32 1.50-1.50x at batch 1 (median 1.50x).")
        assert [h for h in header if h.startswith("latency")] == ["latency b=1 ms (IQR)"]
    else:
        assert dws.endswith(
            "speed (baseline latency / this latency) 4.00x at batch 1 and 4.00x at batch 32 in PyTorch, 4.00x and 4.00x in ONNX Runtime."
        )
        assert int8.endswith("1.50-1.50x at batch 1 (median 1.50x) and 1.50-1.50x at batch 32 (median 1.50x).")
        assert [h for h in header if h.startswith("latency")] == ["latency b=1 ms (IQR)", "latency b=32 ms (IQR)"]


def costed(params: int, macs: int, pytorch_ms: float, ort_ms: float, *, blocks: int = 10, single_ms: float = None, load: float = 0.2) -> dict:
    """One model's cost.json at batch 1, timed with 2 threads and with 1 on a 2-core host whose 1-minute load average is
    `load` (none of it this process's): PyTorch `pytorch_ms` in `blocks` blocks (`single_ms` at 1 thread, default the
    same), ONNX Runtime FP32 `ort_ms` and INT8 two thirds of it, each IQR 5% of its median."""
    from deepexp.experiments.efficient import ORT_FP32, ORT_INT8, PYTORCH

    def fig(ms, threads, n=10):
        return {"median_ms": ms, "iqr_ms": 0.05 * ms, "blocks": n, "threads": threads, "images_per_s": 1000 / ms}

    def figures(threads, torch_ms, n):
        return {PYTORCH: {"1": fig(torch_ms, threads, n)}, ORT_FP32: {"1": fig(ort_ms, threads)}, ORT_INT8: {"1": fig(ort_ms * 2 / 3, threads)}}

    load_record = {"load_average": [load, load, load], "load_own": 0.0, "cores": 2, "cpus": 2}
    return {
        "settings": {"threads": 2},
        "input": [3, 32, 32],
        "params": params,
        "macs": macs,
        "size_bytes": {PYTORCH: 4 * params, ORT_FP32: 4 * params, ORT_INT8: params},
        "latency": figures(2, pytorch_ms, blocks),
        "latency_1_thread": figures(1, single_ms or pytorch_ms, 10),
        "host": {"name": "node", "cpu": "test CPU", "cores": 2, "cpus": 2, "before": load_record, "after": load_record},
    }


def study_of(models, *extra):
    from deepexp.config import compose_config, validate

    return validate(compose_config("efficient", [f"models=[{','.join(models)}]", "latency_batches=[1]", *extra]))


def test_contended_or_sparse_latencies_are_starred_named_and_explain_nothing():
    """The figures of a loaded machine: one timed block of 224 ms for baseline_cnn, 392 and 1,340 ms against 9 ms in
    ONNX Runtime, and 4.9 / 11.7 ms at one thread, with a load average of 3.3 on 2 cores."""
    from deepexp.experiments.efficient import Measured, findings, latency_title, reliability_lines, summary_rows, table, unreliable_warning

    models = ["baseline_cnn", "dws_cnn", "mobilenet_v2"]
    study = study_of(models, "train_models=false")
    measured = [
        Measured("baseline_cnn", costed(1_150_000, 153_000_000, 224.0, 9.0, blocks=1, single_ms=4.9, load=3.3)),
        Measured("dws_cnn", costed(140_000, 20_000_000, 392.0, 9.0, single_ms=11.7, load=3.3)),
        Measured("mobilenet_v2", costed(409_000, 10_000_000, 1340.0, 9.0, single_ms=11.7, load=3.3)),
    ]
    rows = summary_rows(study, measured)
    lines = findings(study, rows, measured, None)
    assert next(line for line in lines if line.startswith("**MACs against latency**")) == (
        "**MACs against latency**: 3 of 3 PyTorch latencies at batch 1 were not measured reliably, at 2 threads and at 1 "
        "(see Measurement reliability); no correlation or explanation is drawn from them."
    )
    assert not any("arithmetic" in line for line in lines)  # no explanation attached to these numbers
    assert "0.17x* at batch 1 in PyTorch, 1.00x* in ONNX Runtime" in next(line for line in lines if line.startswith("**mobilenet_v2**"))
    assert latency_title(rows, 1) == (
        "CPU latency against MACs at batch 1\n3 of 3 PyTorch figures not measured reliably (hollow): no correlation drawn"
    )
    _, body = table(study, rows, ["pytorch-fp32"])
    assert body[0][5:7] == ["224.00* (11.20)", "4.90*"]  # the configured threads (IQR), then 1 thread
    reliability = reliability_lines(measured)
    base = next(line for line in reliability if line.startswith("**baseline_cnn**"))
    assert base.startswith(
        "**baseline_cnn** (load average 3.30 before and 3.30 after the timings on 2 cores): 6 of 6 figures not "
        "measured reliably: pytorch-fp32 b=1, 2 threads: 1 timed block (fewer than 5: no spread), cores taken "
        "(other processes 3.3 threads + 2 threads timed on 2 cores), 45.7x slower with 2 threads than with 1 "
        "(beyond 2x: threads waiting for cores); "
    )
    assert "pytorch-fp32 b=1, 2 threads: cores taken" in reliability[2] and "44x slower than ONNX Runtime" in reliability[2]  # dws
    assert unreliable_warning("baseline_cnn", measured[0].cost) == (
        "warning: baseline_cnn: 6 of 6 latency figures not measured reliably (contention: load average 3.30 before and 3.30 "
        "after the timings on 2 cores; too few timed blocks or an IQR above 25% of the median); starred in the tables, "
        "report.md says why"
    )


def test_reliable_latencies_get_a_computed_title_and_an_explanation_only_where_the_numbers_show_it():
    from deepexp.experiments.efficient import Measured, findings, latency_title, summary_rows

    study = study_of(["baseline_cnn", "dws_cnn", "mobilenet_v2"], "train_models=false")

    def macs_line(dws_ms, load=0.2, single=None):
        measured = [
            Measured("baseline_cnn", costed(1_150_000, 150_000_000, 10.0, 2.0, load=load, single_ms=single and 10.0)),
            Measured("dws_cnn", costed(140_000, 20_000_000, dws_ms, 1.0, load=load, single_ms=single and dws_ms)),
            Measured("mobilenet_v2", costed(409_000, 10_000_000, 5.0, 1.0, load=load, single_ms=single and 5.0)),
        ]
        rows = summary_rows(study, measured)
        return latency_title(rows, 1), next(line for line in findings(study, rows, measured, None) if line.startswith("**MACs"))

    # Both cheaper designs gain less speed than their MAC cut (2.5x for 7.5x, 2x for 15x) and the baseline runs the most
    # MACs per second: the explanation fits the numbers.
    title, line = macs_line(4.0)
    assert title == "CPU latency against MACs at batch 1\nSpearman rho = +0.50 over 3 models (PyTorch, 2 threads)"
    assert line == (
        "**MACs against latency**: Spearman rho = +0.50 over 3 models (PyTorch, batch 1, 2 threads). Throughput ranges "
        "from 2.00 GMAC/s (mobilenet_v2) to 15.00 GMAC/s (baseline_cnn); 2 of the 2 designs with fewer MACs than "
        "baseline_cnn gain less speed than their MAC cut, as expected of depthwise and 1x1 convolutions, which do "
        "little arithmetic per byte moved: cutting MACs buys less time than it promises."
    )
    # dws_cnn 10x faster for a 7.5x MAC cut: no explanation of a rule the numbers break.
    title, line = macs_line(1.0)
    assert title == "CPU latency against MACs at batch 1\nSpearman rho = +0.50 over 3 models (PyTorch, 2 threads)"
    assert line.endswith("1 of the 2 designs with fewer MACs than baseline_cnn gain less speed than their MAC cut.")
    # Another process on one of the two cores: 2 timed threads wait, 1 does not; the finding rests on the 1-thread figures.
    title, line = macs_line(4.0, load=1.0, single=True)
    assert title.endswith("(PyTorch, 1 thread)") and line.startswith(
        "**MACs against latency**: Spearman rho = +0.50 over 3 models (PyTorch, batch 1, 1 thread)."
    )


def test_int8_that_changes_predictions_is_called_out_and_a_near_chance_deployment_says_so(tmp_path):
    from deepexp.experiments.efficient import ORT_INT8, Measured, findings, recommend, summary_rows

    study = study_of(["baseline_cnn", "dws_cnn", "mobilenet_v2"], "seeds=2")

    def seeds(name, fp32, int8, val, agreement):
        out = []
        for seed in range(2):
            folder = tmp_path / "models" / name / f"s{seed}"
            folder.mkdir(parents=True)
            (folder / "model.onnx").write_bytes(b"fp32")
            (folder / "model.int8.onnx").write_bytes(b"int8")
            out.append(
                {
                    "seed": seed,
                    "test_acc": fp32[seed],
                    "val_acc": val[seed],
                    "onnx_fp32_acc": fp32[seed],
                    "onnx_int8_acc": int8[seed],
                    "int8_agreement": agreement[seed],
                    "parity_max_abs": 1e-6,
                    "seconds": 1.0,
                    "folder": folder,
                    "onnx_fp32": "model.onnx",
                    "onnx_int8": "model.int8.onnx",
                    "mean": [0.5] * 3,
                    "std": [0.25] * 3,
                    "num_classes": 10,
                }
            )
        return out

    measured = [
        Measured(
            "baseline_cnn", costed(1_150_000, 150_000_000, 10.0, 4.0), seeds("baseline_cnn", [0.14, 0.15], [0.14, 0.15], [0.1, 0.1], [1.0, 1.0])
        ),
        Measured("dws_cnn", costed(140_000, 20_000_000, 4.0, 2.0), seeds("dws_cnn", [0.14, 0.145], [0.14, 0.145], [0.11, 0.13], [0.99, 0.98])),
        # the fastest INT8 file, but one that changes a third of the predictions
        Measured(
            "mobilenet_v2", costed(409_000, 10_000_000, 5.0, 1.5), seeds("mobilenet_v2", [0.14, 0.145], [0.14, 0.145], [0.1, 0.1], [0.62, 0.66])
        ),
    ]
    rows = summary_rows(study, measured)
    rec = recommend(study, rows, measured, tmp_path)
    assert (rec.model, rec.runtime, rec.seed["seed"]) == ("dws_cnn", ORT_INT8, 1)  # not mobilenet_v2's INT8; seed 1 on validation
    info = json.loads((tmp_path / "deploy" / "dws_cnn.json").read_text())
    assert info["seed"] == 1 and info["test_acc"]["onnx_int8"] == 0.145 and info["file"] == "dws_cnn.int8.onnx"
    assert info["test_acc_mean_over_seeds"] == {
        "runtime": ORT_INT8,
        "mean": pytest.approx(0.1425),
        "std": pytest.approx(0.0035355, rel=1e-4),
        "seeds": 2,
    }
    assert info["chance"] == 0.1 and info["cautions"] == ["its test accuracy 0.1450 is near chance (0.1000 for 10 classes): not usable as trained"]
    lines = findings(study, rows, measured, rec)
    assert (
        "**INT8 changes the predictions of mobilenet_v2**: mobilenet_v2's INT8 copy differs from FP32 on up to 38.0% of test images (more than 5%)"
    ) in next(line for line in lines if line.startswith("**INT8 changes"))
    line = next(line for line in lines if line.startswith("**Recommended"))
    assert "Deployed: seed 1, the highest validation accuracy, with test accuracy 0.1450 in onnxruntime-int8." in line
    assert line.endswith("**Caution**: its test accuracy 0.1450 is near chance (0.1000 for 10 classes): not usable as trained.")


def test_the_report_says_where_and_in_which_precision_the_runs_trained():
    """The wording every study's report uses (runner.hardware_line); TF32 is no float32 either."""
    from deepexp.experiments.efficient import training_setup

    caveat = "so the pytorch-fp32 accuracies are that precision's, and the onnxruntime-fp32 column is the float32 CPU accuracy of the same weights"
    cuda = {"device": "cuda:0", "gpu": "NVIDIA H200", "threads": 8}
    assert training_setup([{"config": {"amp": True}, "provenance": {**cuda, "amp_dtype": "bfloat16", "tf32": False}}]) == (
        f"trained and tested on cuda:0 (NVIDIA H200), amp bf16, 8 CPU threads; {caveat}"
    )
    assert training_setup([{"config": {"amp": True}, "provenance": cuda}]).startswith(
        "trained and tested on cuda:0 (NVIDIA H200), amp (dtype and TF32 use not recorded), 8 CPU threads; so the"
    )
    tf32 = {"device": "cuda:0", "gpu": "NVIDIA A100", "threads": 8, "amp_dtype": None, "tf32": True}
    assert training_setup([{"config": {"amp": False, "tf32": True}, "provenance": tf32}]) == (
        f"trained and tested on cuda:0 (NVIDIA A100), TF32, 8 CPU threads; {caveat}"
    )
    # amp=true has no effect on the CPU; a run resumed there after a GPU started it names both
    resumed = {
        "config": {"amp": True},
        "provenance": {
            "device": "cpu",
            "threads": 2,
            "amp_dtype": None,
            "tf32": False,
            "earlier_attempts": [{**cuda, "amp_dtype": "float16", "tf32": False}],
        },
    }
    assert training_setup([resumed]) == (
        "trained and tested on cpu, fp32, 2 CPU threads (1 run); cuda:0 (NVIDIA H200), amp fp16, "
        "8 CPU threads (1 run); so the pytorch-fp32 accuracies are those precisions', and the "
        "onnxruntime-fp32 column is the float32 CPU accuracy of the same weights"
    )
    plain = {**cuda, "amp_dtype": None, "tf32": False}
    assert training_setup([{"config": {"amp": False}, "provenance": plain}]) == "trained and tested on cuda:0 (NVIDIA H200), fp32, 8 CPU threads"


def test_the_int8_sentence_counts_the_latencies_behind_its_ratios_that_were_not_measured_reliably():
    from deepexp.config import compose_config, validate
    from deepexp.experiments.efficient import ORT_INT8, findings, summary_rows

    study = validate(compose_config("efficient", ["models=[baseline_cnn,dws_cnn]", "train_models=false", "latency_batches=[1]"]))
    measured = measured_by_hand([1], study.quantize)
    measured[1].cost["latency"][ORT_INT8]["1"]["blocks"] = 1  # one timed block: no spread, not reliable
    int8 = next(line for line in findings(study, summary_rows(study, measured), measured, None) if line.startswith("**INT8**"))
    assert int8.endswith("(median 1.50x) (1 of the 4 latencies behind these ratios was not measured reliably: see Measurement reliability).")


def test_measure_only_mode_checks_its_overrides_before_anything_is_written(tmp_path):
    out = run_cli(
        ["efficient", "train_models=false", "models=[baseline_cnn]", "overrides=['model.width=0.5']", f"hydra.run.dir={tmp_path / 'exp'}"], tmp_path
    )
    assert (out.returncode, out.stderr) == (
        2,
        "deepexp: overrides=[...]: 'model.width=0.5' sets model.width, which the study "
        "sets itself in every run; use the study's own width=... instead\n",
    )
    assert not (tmp_path / "exp").exists()
