"""Deployment: ONNX export with a parity check, INT8 quantization and ONNX Runtime inference.

An exported model is self-contained: it takes float images in [0, 1], shape
(batch, C, H, W) with any batch size, and applies the training set's per-channel
normalisation itself, so a deployment needs only ONNX Runtime and the image
(README, "Deploying a model"). INT8 models are ONNX Runtime's post-training
static quantization in QDQ format: per-channel symmetric int8 weights, uint8
activations with ranges calibrated (min/max) on training images.

Nothing here changes the caller's model: exports work on a CPU copy where the model
lives on another device, PyTorch's side of a parity check runs where the model is,
and every module's train/eval mode is restored afterwards.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Dict, Hashable, Iterator, Optional, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from .config import first_line
from .errors import ConfigError
from .measure import Latency, evaluating, model_device, on_cpu, time_call

INPUT, OUTPUT = "image", "logits"


class Deployable(nn.Module):
    """`model` behind its input normalisation: [0, 1] images (batch, C, H, W) in, logits (batch, classes) out.

    `mean` and `std` (C,) are the training set's per-channel statistics; they are kept on the model's device."""

    def __init__(self, model: nn.Module, mean: Tensor, std: Tensor):
        super().__init__()
        self.model = model
        device = model_device(model)
        # Not plain "mean"/"std": the exporter names a global-pooling node's output "mean", and an unoptimized
        # graph holding both is invalid.
        self.register_buffer("input_mean", mean.detach().float().to(device).view(1, -1, 1, 1).clone())
        self.register_buffer("input_std", std.detach().float().to(device).view(1, -1, 1, 1).clone())

    def forward(self, x: Tensor) -> Tensor:
        return self.model((x - self.input_mean) / self.input_std)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporter and quantizer print progress lines and warnings; a study keeps its own output."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        previous = logging.root.manager.disable
        logging.disable(logging.WARNING)
        try:
            yield
        finally:
            logging.disable(previous)


def _temp_beside(path: Path) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(tmp)


class OnnxExporter:
    """ONNX export of Deployables with a dynamic batch dimension, each file written atomically.

    Tracing a model (torch.export, then translation to ONNX) takes 1.5-6 s for the efficient study's
    models on a 2-core CPU, and it is the same work for every set of weights. Models that share an
    architecture and input shape, such as the seeds of one study model, pass one `architecture` key:
    the first is traced, and the others put their weights into that trace (`ONNXProgram.apply_weights`)
    and are saved in 0.1-0.5 s. Each file is the optimized copy of the trace; the trace itself stays
    unoptimized, since optimization folds weights (BatchNorm into the convolutions) under names no
    state dict has.
    """

    def __init__(self) -> None:
        self._traces: Dict[Hashable, Tuple[torch.onnx.ONNXProgram, Dict[str, Tuple[int, ...]]]] = {}

    def export(self, model: Deployable, example: Tensor, path: Path, architecture: Optional[Hashable] = None) -> Path:
        """Write `model` (eval mode) as ONNX to `path`; `example` is an input batch (N, C, H, W) for the trace.

        Raises:
            ValueError: `architecture` was traced for a model with other parameter names or shapes.
        """
        from onnxscript import ir  # the exporter's own graph library (onnx_ir)

        model = on_cpu(model)
        state = model.state_dict()
        shapes = {name: tuple(value.shape) for name, value in state.items()}
        with _quiet(), evaluating(model):
            if architecture in self._traces:
                trace, traced_shapes = self._traces[architecture]
                if shapes != traced_shapes:  # a wrong key would leave another model's weights in the file
                    raise ValueError(f"architecture {architecture!r} was traced for a model with other parameters")
                trace.apply_weights({name: value for name, value in state.items() if name in trace.model.graph.initializers})
            else:
                trace = torch.onnx.export(
                    model,
                    (example.cpu(),),
                    None,
                    input_names=[INPUT],
                    output_names=[OUTPUT],
                    dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=65536)},),
                    dynamo=True,
                    verbose=False,
                    optimize=False,
                )
                if architecture is not None:
                    self._traces[architecture] = (trace, shapes)
            program = torch.onnx.ONNXProgram(ir.from_proto(trace.model_proto), None)  # a copy to optimize
            program.optimize()
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = _temp_beside(path)
            try:
                program.save(str(tmp))
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
        return path


def session(path: Path, threads: int):
    """An ONNX Runtime CPU session with a fixed intra-op thread count."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ConfigError(f"{path}: not a loadable ONNX model ({first_line(exc)})") from None


def run_onnx(sess, images: np.ndarray) -> np.ndarray:
    return sess.run([OUTPUT], {INPUT: images})[0]


@torch.no_grad()
def parity(model: Deployable, sess, images: Tensor) -> float:
    """Largest absolute difference between PyTorch (eval mode, on the model's device) and ONNX Runtime logits
    on `images` (N, C, H, W) in [0, 1]."""
    with evaluating(model):
        expected = model(images.to(model_device(model))).float().cpu().numpy()
    return float(np.abs(run_onnx(sess, images.detach().cpu().float().numpy()) - expected).max())


class _Calibration:
    """onnxruntime.quantization.CalibrationDataReader over a fixed set of images."""

    def __init__(self, images: np.ndarray, batch: int = 32):
        self._batches = iter([{INPUT: images[i : i + batch]} for i in range(0, len(images), batch)])

    def get_next(self) -> Optional[Dict[str, np.ndarray]]:
        return next(self._batches, None)

    def rewind(self) -> None:  # not needed for min/max calibration, part of the reader API
        pass


def quantize_int8(fp32_path: Path, int8_path: Path, calibration: np.ndarray) -> Path:
    """Static INT8 (QDQ, per-channel weights) from an FP32 ONNX file; written atomically."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre, tmp = _temp_beside(int8_path), _temp_beside(int8_path)
    try:
        with _quiet():
            quant_pre_process(str(fp32_path), str(pre))  # shape inference + graph fusions (BatchNorm into conv)
            quantize_static(
                str(pre),
                str(tmp),
                _Calibration(calibration),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
            )
        os.replace(tmp, int8_path)
    finally:
        pre.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)
        for leftover in int8_path.parent.glob(f".{int8_path.name}.*"):  # calibration scratch files
            leftover.unlink(missing_ok=True)
    return int8_path


def onnx_predictions(sess, images: Tensor, batch: int = 256) -> np.ndarray:
    """Predicted class (N,) of every uint8 (N, C, H, W) image, on any device."""
    out = [run_onnx(sess, (images[i : i + batch].cpu().float() / 255).numpy()).argmax(1) for i in range(0, len(images), batch)]
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def onnx_latency(sess, input_shape: Tuple[int, int, int], batch: int, threads: int, min_run_time: float) -> Latency:
    """ONNX Runtime latency of `sess` on a float32 batch (batch, C, H, W), with (C, H, W) = `input_shape` (the
    exported model's fixed image shape); `min_run_time` in seconds."""
    x = np.random.default_rng(0).random((batch, *input_shape), dtype=np.float32)
    return time_call(lambda: run_onnx(sess, x), batch, threads, min_run_time)
