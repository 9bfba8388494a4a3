"""Datasets: real files where they exist, batched augmentation, and one-line errors."""

import numpy as np
import pytest
import torch

from deepexp.config import DATASET_SCHEMAS, DataConfig, DatasetConfig
from deepexp.data import check_raw, load_splits, normalize, random_crop_flip, read_npz
from deepexp.errors import DataError
from conftest import needs_cifar, needs_mnist


def dataset(name, **kw):
    """The typed config of dataset `name` (its own schema where it has keys of its own)."""
    return DATASET_SCHEMAS.get(name, DatasetConfig)(name=name, augment=kw.pop("augment", False), **kw)


@needs_mnist
def test_mnist_split_is_seeded_disjoint_and_in_memory_uint8():
    a = load_splits(dataset("mnist"), DataConfig(), seed=0, val_fraction=0.1, subset=1000)
    b = load_splits(dataset("mnist"), DataConfig(), seed=0, val_fraction=0.1, subset=1000)
    c = load_splits(dataset("mnist"), DataConfig(), seed=1, val_fraction=0.1, subset=1000)
    assert a.sizes() == {"train": 900, "val": 100, "test": 10000}
    assert a.x_train.dtype == torch.uint8 and a.x_train.shape[1:] == (1, 28, 28)
    assert torch.equal(a.x_val, b.x_val) and not torch.equal(a.x_val, c.x_val)
    # no validation image is also a training image
    train_rows = {bytes(x.numpy()) for x in a.x_train}
    assert not any(bytes(x.numpy()) in train_rows for x in a.x_val)
    assert 0.10 < a.mean.item() < 0.16 and 0.28 < a.std.item() < 0.34  # MNIST's known statistics


@needs_cifar
def test_cifar10_falls_back_to_the_offline_subset():
    s = load_splits(dataset("cifar10", augment=True), DataConfig(), seed=0, val_fraction=0.1, subset=None)
    assert s.x_train.shape[1:] == (3, 32, 32) and s.num_classes == 10 and s.augment
    assert len(s.y_train) + len(s.y_val) in (5085, 50000)


def test_normalize_standardises_per_channel():
    x = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8)
    mean = x.float().div(255).mean((0, 2, 3))
    std = x.float().div(255).std((0, 2, 3))
    out = normalize(x, mean, std)
    assert torch.allclose(out.mean((0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(out.std((0, 2, 3)), torch.ones(3), atol=1e-3)


@pytest.mark.parametrize("h, w", [(32, 32), (20, 36), (36, 20)])
def test_random_crop_flip_is_a_padded_crop_with_optional_flip(h, w):
    """Each output image equals one of the 81 x 2 padded crops of its input, and many differ; square or not."""
    import torch.nn.functional as F

    x = torch.randint(1, 256, (48, 3, h, w), dtype=torch.uint8)
    out = random_crop_flip(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == torch.uint8
    padded = F.pad(x, (4, 4, 4, 4))
    seen = set()
    for i in range(len(x)):
        matches = [
            (dy, dx, f)
            for dy in range(9)
            for dx in range(9)
            for f in (False, True)
            if torch.equal(out[i], (padded[i].flip(-1) if f else padded[i])[:, dy : dy + h, dx : dx + w])
        ]
        assert matches, f"image {i} is not a padded crop of its input"
        seen.add(matches[0])
    assert len(seen) > 20 and {f for _, _, f in seen} == {False, True}


def test_random_crop_flip_is_reproducible_from_the_generator():
    x = torch.randint(0, 256, (32, 1, 28, 28), dtype=torch.uint8)
    a = random_crop_flip(x, torch.Generator().manual_seed(3))
    b = random_crop_flip(x, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_augmentation_gives_the_cpu_result_without_waiting_for_the_gpu():
    """The random numbers come from a CPU generator (the same crops on any device) and reach the GPU
    by a pinned, asynchronous copy: a plain copy would make every training step wait for the last."""
    x = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    expected = random_crop_flip(x, torch.Generator().manual_seed(3))
    on_gpu = x.cuda()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any synchronizing CUDA call raises
    try:
        out = random_crop_flip(on_gpu, torch.Generator().manual_seed(3))
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert torch.equal(out.cpu(), expected)


def test_missing_data_without_download_is_one_clear_line(tmp_path):
    with pytest.raises(DataError) as err:
        load_splits(dataset("mnist"), DataConfig(root=str(tmp_path), download=False), 0, 0.1, None)
    message = str(err.value)
    assert "\n" not in message and str(tmp_path) in message and "fix:" in message


class OfflineMNIST:
    """torchvision's MNIST without a network: download() makes the raw folder, then every mirror fails."""

    def __init__(self, root, train=True, download=False):
        import os

        os.makedirs(os.path.join(root, "MNIST", "raw"), exist_ok=True)
        raise RuntimeError(
            "Error downloading train-images-idx3-ubyte.gz:\n"
            "Tried https://ossci-datasets.s3.amazonaws.com/mnist/, got:\n"
            "<urlopen error [Errno -3] Temporary failure in name resolution>\n"
        )


def test_a_failed_download_names_its_cause_suggests_no_download_and_leaves_no_empty_folders(tmp_path, monkeypatch):
    from deepexp import data

    monkeypatch.setattr(data, "_torchvision_dataset", lambda name: OfflineMNIST)
    root = tmp_path / "new" / "data"
    with pytest.raises(DataError) as err:
        data.check_available(dataset("mnist"), DataConfig(root=str(root), download=True))
    message = str(err.value)
    assert (
        "download failed (Error downloading train-images-idx3-ubyte.gz: <urlopen error [Errno -3] Temporary failure in name resolution>)"
    ) in message
    assert message.endswith("or run once where the download can reach the network") and "allow the download" not in message
    assert list(tmp_path.iterdir()) == []  # new/, data/, MNIST/, raw/: every folder the attempt made is gone
    with pytest.raises(DataError) as err:  # with the download off, the fix is to allow it
        data.check_available(dataset("mnist"), DataConfig(root=str(root), download=False))
    assert "download is off (data.download=false)" in str(err.value) and str(err.value).endswith("(data.download=true)")


def write_npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def good_arrays(n=20):
    rng = np.random.default_rng(0)
    return dict(
        x_train=rng.integers(0, 255, (n, 8, 8, 3), dtype=np.uint8),
        y_train=np.arange(n) % 4,
        x_test=rng.integers(0, 255, (5, 8, 8, 3), dtype=np.uint8),
        y_test=np.arange(5) % 4,
    )


def test_npz_reads_keras_layout(tmp_path):
    raw = read_npz(write_npz(tmp_path / "ok.npz", **good_arrays()))
    assert raw.x_train.shape == (20, 3, 8, 8) and raw.y_train.dtype == torch.int64


@pytest.mark.parametrize(
    "shape, channels_last, expected",
    [
        ((6, 10), False, (1, 6, 10)),  # (N, H, W) grey
        ((6, 10, 3), True, (3, 6, 10)),  # (N, H, W, C), the documented layout
        ((6, 10, 4), True, (4, 6, 10)),  # RGBA keeps its 4 channels (it was read as 6 channels of 10 x 4)
        ((6, 10, 1), True, (1, 6, 10)),
        ((3, 6, 10), False, (3, 6, 10)),  # (N, C, H, W), where unambiguous
        ((4, 6, 10), False, (4, 6, 10)),
    ],
)
def test_npz_images_keep_their_channels_and_shape(tmp_path, shape, channels_last, expected):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (5, *shape), dtype=np.uint8)
    raw = read_npz(write_npz(tmp_path / "x.npz", x_train=x, y_train=np.arange(5) % 2, x_test=x, y_test=np.arange(5) % 2))
    assert tuple(raw.x_train.shape[1:]) == expected
    nchw = np.moveaxis(x, -1, 1) if channels_last else x.reshape(5, *expected)
    assert np.array_equal(raw.x_train.numpy(), nchw)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda a: a.pop("y_test"), "missing arrays"),
        (lambda a: a.update(x_train=a["x_train"].astype(np.float32)), "must be uint8"),
        (lambda a: a.update(y_train=a["y_train"][:-1]), "labels for x_train"),
        (lambda a: a.update(x_test=a["x_test"][:, :4]), "differ in shape"),
    ],
)
def test_npz_with_wrong_keys_or_shapes_is_rejected(tmp_path, change, message):
    arrays = good_arrays()
    change(arrays)
    with pytest.raises(DataError, match=message):
        check_raw("npz", read_npz(write_npz(tmp_path / "bad.npz", **arrays)))


def test_corrupt_npz_is_rejected(tmp_path):
    path = tmp_path / "corrupt.npz"
    path.write_bytes(b"not a zip file")
    with pytest.raises(DataError, match="cannot read"):
        read_npz(path)


@pytest.mark.skipif(
    not __import__("pathlib").Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz").exists()
    and not __import__("conftest").dataset_in_roots("FashionMNIST/raw"),
    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)",
)
def test_fashion_mnist_full_set_is_found():
    s = load_splits(dataset("fashion_mnist"), DataConfig(), seed=0, val_fraction=0.1, subset=None)
    assert s.sizes() == {"train": 54000, "val": 6000, "test": 10000} and s.num_classes == 10


def test_truncated_mnist_files_are_one_clear_line(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (raw / name).write_bytes(b"\x00\x00\x08\x03\x00\x00\x00\x05\x00\x00\x00\x1c")  # a header and no images
    with pytest.raises(DataError, match="unreadable") as err:
        load_splits(dataset("mnist"), DataConfig(root=str(tmp_path), download=False), 0, 0.1, None)
    assert "\n" not in str(err.value)


# --- MNIST-format files: found by any mirror's name, read by their content ----------------------


def idx_bytes(array: np.ndarray) -> bytes:
    """An idx file of unsigned bytes: magic 0x00000803 (dimension count last), big-endian sizes, data."""
    header = b"\x00\x00\x08" + bytes([array.ndim]) + b"".join(n.to_bytes(4, "big") for n in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx_folder(folder, names, compress, h=6, w=6):
    """Four idx files of a 3-class toy set (30 train, 9 test images of h x w) under `names` (split, kind -> file name)."""
    import gzip

    rng = np.random.default_rng(0)
    arrays = {
        ("train", "images"): rng.integers(0, 256, (30, h, w)),
        ("train", "labels"): np.arange(30) % 3,
        ("t10k", "images"): rng.integers(0, 256, (9, h, w)),
        ("t10k", "labels"): np.arange(9) % 3,
    }
    folder.mkdir(parents=True, exist_ok=True)
    for key, array in arrays.items():
        data = idx_bytes(array)
        (folder / names(*key)).write_bytes(gzip.compress(data) if compress else data)
    return arrays


IDX_LAYOUTS = {  # how mirrors name and pack the files; every one holds the same data
    "torchvision names, plain": (lambda split, kind: f"{split}-{kind}-idx{3 if kind == 'images' else 1}-ubyte", False),
    "original site names, gzipped": (lambda split, kind: f"{split}-{kind}-idx{3 if kind == 'images' else 1}-ubyte.gz", True),
    "plain data under .gz names": (lambda split, kind: f"{split}-{kind}-idx{3 if kind == 'images' else 1}-ubyte.gz", False),
    "gzipped data under plain names": (lambda split, kind: f"{split}-{kind}-idx{3 if kind == 'images' else 1}-ubyte", True),
    "dot spelling, plain": (lambda split, kind: f"{split}-{kind}.idx{3 if kind == 'images' else 1}-ubyte", False),
    "dot spelling, gzipped": (lambda split, kind: f"{split}-{kind}.idx{3 if kind == 'images' else 1}-ubyte.gz", True),
}


@pytest.mark.parametrize("layout", sorted(IDX_LAYOUTS))
def test_idx_files_are_read_by_content_under_every_mirror_name(tmp_path, layout):
    names, compress = IDX_LAYOUTS[layout]
    arrays = write_idx_folder(tmp_path / "MNIST" / "raw", names, compress)
    s = load_splits(dataset("mnist"), DataConfig(root=str(tmp_path), download=False), 0, 0.1, None)
    assert s.sizes() == {"train": 27, "val": 3, "test": 9}
    assert torch.equal(s.x_test[:, 0], torch.as_tensor(arrays[("t10k", "images")], dtype=torch.uint8))
    assert torch.equal(s.y_test, torch.as_tensor(arrays[("t10k", "labels")]))


def test_unreadable_idx_files_name_the_files_once(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    write_idx_folder(raw, IDX_LAYOUTS["torchvision names, plain"][0], compress=False)
    (raw / "t10k-labels-idx1-ubyte").write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(DataError) as err:
        load_splits(dataset("mnist"), DataConfig(root=str(tmp_path), download=False), 0, 0.1, None)
    assert str(err.value).startswith(f"MNIST idx files in {raw} are unreadable (") and "files files" not in str(err.value)


def test_mnist_named_gz_but_uncompressed_trains_through_the_cli(tmp_path):
    from conftest import run_cli

    write_idx_folder(tmp_path / "data" / "MNIST" / "raw", IDX_LAYOUTS["plain data under .gz names"][0], compress=False)
    out = run_cli(
        [
            "train",
            f"data.root={tmp_path / 'data'}",
            "data.download=false",
            "model.depth=1",
            "model.width=8",
            "epochs=1",
            "batch_size=9",
            "monitor.figure=false",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        tmp_path,
    )
    assert out.returncode == 0, out.stderr
    metrics = __import__("json").loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["data"]["test"] == 9


# --- non-square images -------------------------------------------------------------------------


def write_rect_npz(path, h=28, w=32):
    """A 3-class npz of h x w grey images (60 train, 12 test), as (N, H, W)."""
    rng = np.random.default_rng(0)
    return write_npz(
        path,
        x_train=rng.integers(0, 256, (60, h, w), dtype=np.uint8),
        y_train=np.arange(60) % 3,
        x_test=rng.integers(0, 256, (12, h, w), dtype=np.uint8),
        y_test=np.arange(12) % 3,
    )


def test_splits_carry_the_image_shape_of_non_square_data(tmp_path):
    s = load_splits(dataset("npz", path=str(write_rect_npz(tmp_path / "rect.npz"))), DataConfig(), 0, 0.1, None)
    assert s.image_shape == (28, 32) and s.input_shape == (1, 28, 32) and s.x_test.shape == (12, 1, 28, 32)
    synthetic = load_splits(
        dataset("synthetic", channels=2, image_shape=[12, 20], num_classes=4, train_size=40, test_size=8), DataConfig(), 0, 0.1, None
    )
    assert synthetic.input_shape == (2, 12, 20)


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_non_square_npz_trains_through_the_cli(tmp_path, model):
    from conftest import run_cli

    path = write_rect_npz(tmp_path / "rect.npz")
    options = ["model.depth=1", "model.width=8"] if model == "mlp" else ["model.width=4"]
    out = run_cli(
        [
            "train",
            "dataset=npz",
            f"dataset.path={path}",
            f"model={model}",
            *options,
            "epochs=1",
            "batch_size=18",
            "monitor.figure=false",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        tmp_path,
    )
    assert out.returncode == 0, out.stderr
    metrics = __import__("json").loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["data"]["image_shape"] == [28, 32] and metrics["data"]["test"] == 12


# --- classes: labels 0..K-1, each with training images -------------------------------------------


def npz_dataset(tmp_path, y_train, y_test, **kw):
    """An npz dataset of 4 x 4 grey images with these labels."""
    rng = np.random.default_rng(0)
    y_train, y_test = np.asarray(y_train), np.asarray(y_test)
    path = write_npz(
        tmp_path / "labels.npz",
        x_train=rng.integers(0, 256, (len(y_train), 4, 4), dtype=np.uint8),
        y_train=y_train,
        x_test=rng.integers(0, 256, (len(y_test), 4, 4), dtype=np.uint8),
        y_test=y_test,
    )
    return dataset("npz", path=str(path), **kw)


@pytest.mark.parametrize(
    "y_train, y_test, num_classes, message",
    [
        ([200] * 20, [0] * 5, None, "classes 0, 1, 2, 3, 4, 5 and 194 more of 0..200 have no training images (K=201, K inferred"),
        ([0, 1, 3] * 6, [0, 1, 3], None, "class 2 of 0..3 has no training images"),
        ([0, 1, 2] * 6, [0, 1, 2, 3], None, "test label 3 is a class no training image has (K=3"),
        ([0, 1, 2, 3] * 5, [0, 1], 3, "training label 3 is outside 0..K-1 (K=3, dataset.num_classes=3)"),
        ([0, 1] * 10, [0, 1, 2], 2, "test label 2 is outside 0..K-1 (K=2, dataset.num_classes=2)"),
        ([0, 1, 2, 3] * 5, [0, 1], 6, "classes 4, 5 of 0..5 have no training images (K=6, dataset.num_classes=6)"),
        ([-1, 0, 1] * 6, [0, 1], None, "training label -1 is negative"),
        ([0, 1] * 10, [0, -2], None, "test label -2 is negative"),
        ([0] * 20, [0] * 5, None, "a classifier needs at least 2 classes"),
    ],
)
def test_labels_that_are_not_the_classes_0_to_k_minus_1_are_refused(tmp_path, y_train, y_test, num_classes, message):
    with pytest.raises(DataError) as err:
        load_splits(npz_dataset(tmp_path, y_train, y_test, num_classes=num_classes), DataConfig(), 0, 0.1, None)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_k_is_the_datasets_whatever_the_subset_and_a_split_missing_a_class_warns(tmp_path):
    y_train = [0, 1] * 10 + [2] * 10  # the first 20 images have no class 2
    full = load_splits(npz_dataset(tmp_path, y_train, [0, 1, 2]), DataConfig(), 0, 0.1, None)
    assert full.num_classes == 3 and full.warnings == ()
    small = load_splits(npz_dataset(tmp_path, y_train, [0, 1, 2]), DataConfig(), 0, 0.1, 20)
    assert small.num_classes == 3 and len(small.warnings) == 1
    assert "the training split (18 images) has no images of class 2 of 3 (subset=20 leaves none" in small.warnings[0]
    given = load_splits(npz_dataset(tmp_path, y_train, [0, 1, 2], num_classes=3), DataConfig(), 0, 0.1, None)
    assert given.num_classes == 3


def test_badly_imbalanced_classes_warn_with_their_counts(tmp_path):
    s = load_splits(npz_dataset(tmp_path, [0] * 200 + [1] * 10, [0, 1]), DataConfig(), 0, 0.1, None)
    counts = torch.bincount(s.y_train).tolist()
    assert len(s.warnings) == 1 and s.warnings[0] == (
        f"npz: classes are imbalanced in the training split: class 0 has {counts[0]} images, class 1 {counts[1]} "
        f"({counts[0] / counts[1]:.0f}:1); accuracy mostly reflects the large classes"
    )
    mild = load_splits(npz_dataset(tmp_path, [0] * 80 + [1] * 20, [0, 1]), DataConfig(), 0, 0.1, None)
    assert mild.warnings == ()  # 4:1 is a skew, not a problem worth a line


def test_labels_outside_their_classes_stop_the_cli_before_training(tmp_path):
    from conftest import run_cli

    data = npz_dataset(tmp_path, [200] * 20, [0] * 5)
    run = tmp_path / "run"
    out = run_cli(["train", "dataset=npz", f"dataset.path={data.path}", "model.depth=1", "epochs=1", f"hydra.run.dir={run}"], tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "deepexp: npz: classes 0, 1, 2, 3, 4, 5 and 194 more of 0..200 have no training images (K=201, K inferred from the "
        "largest training label); labels must be the classes 0..K-1, each with training images"
    ]
    assert not (run / "metrics.json").exists() and not (run / "checkpoints").exists()


def test_a_subset_missing_a_class_trains_with_the_datasets_k_and_says_so(tmp_path):
    from conftest import run_cli

    data = npz_dataset(tmp_path, [0, 1] * 10 + [2] * 10, [0, 1, 2])
    run = tmp_path / "run"
    out = run_cli(
        [
            "train",
            "dataset=npz",
            f"dataset.path={data.path}",
            "subset=20",
            "model.depth=1",
            "model.width=8",
            "epochs=1",
            "batch_size=6",
            "monitor.figure=false",
            f"hydra.run.dir={run}",
        ],
        tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert "warning: npz: the training split (18 images) has no images of class 2 of 3" in out.stderr
    metrics = __import__("json").loads((run / "metrics.json").read_text())
    assert metrics["data"]["num_classes"] == 3 and metrics["data"]["train"] == 18


def test_images_too_small_for_a_models_pooling_are_one_line_through_the_cli(tmp_path):
    """cnn halves each side three times: a 6 px side is gone before the last pooling."""
    from conftest import run_cli

    path = write_rect_npz(tmp_path / "thin.npz", h=6, w=28)
    out = run_cli(["train", "dataset=npz", f"dataset.path={path}", "model=cnn", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("deepexp: model 'cnn' cannot take 6x28 images with 1 channel(s) (")
    assert lines[0].endswith("); use larger images or a model that downsamples less")
    assert not (tmp_path / "run" / "metrics.json").exists()


# --- one check of every loader's arrays, at load time ----------------------------------------------


def idx_folder_with(tmp_path, **replace):
    """The toy idx folder with some of its files ((split, kind) -> array) replaced."""
    folder = tmp_path / "data" / "MNIST" / "raw"
    names = IDX_LAYOUTS["torchvision names, plain"][0]
    write_idx_folder(folder, names, compress=False)
    for key, array in replace.items():
        (folder / names(*key.split("_"))).write_bytes(idx_bytes(array))
    return folder


@pytest.mark.parametrize(
    "replace, message",
    [
        ({"train_labels": np.zeros((30, 2))}, "train-labels-idx1-ubyte has a header of shape (30, 2); idx labels are (N,)"),
        ({"train_images": np.zeros((30, 1, 6, 6))}, "train-images-idx3-ubyte has a header of shape (30, 1, 6, 6); idx images are (N, H, W)"),
        ({"t10k_images": np.zeros((9, 8, 8))}, "mnist: training images (1, 6, 6) and test images (1, 8, 8) (C, H, W) differ in shape"),
        ({"t10k_labels": np.zeros(8)}, "mnist: 9 test images for 8 test labels"),
    ],
)
def test_idx_files_are_checked_at_load_time_as_npz_files_are(tmp_path, replace, message):
    folder = idx_folder_with(tmp_path, **replace)
    with pytest.raises(DataError) as err:
        load_splits(dataset("mnist"), DataConfig(root=str(tmp_path / "data"), download=False), 0, 0.1, None)
    assert message in str(err.value) and str(folder) in str(err.value)


@pytest.mark.parametrize(
    "arrays, message",
    [
        (dict(x_test=np.zeros((0, 4, 4), np.uint8), y_test=np.zeros(0, np.int64)), "npz: no test images (from "),
        (
            dict(x_train=np.zeros((20, 0, 12), np.uint8), x_test=np.zeros((5, 0, 12), np.uint8)),
            "npz: training images of shape (C, H, W) = (1, 0, 12) have no pixels (from ",
        ),
        (
            dict(y_train=np.array([0, 1] * 9 + [2, 10**12])),  # K from the largest label: refused without a K-sized count
            "npz: classes 3, 4, 5, 6, 7, 8 and 999999999991 more of 0..1000000000000 have no training images",
        ),
    ],
)
def test_npz_arrays_that_would_record_numbers_never_measured_are_refused_at_load(tmp_path, arrays, message):
    good = dict(x_train=np.zeros((20, 4, 4), np.uint8), y_train=np.arange(20) % 2, x_test=np.zeros((5, 4, 4), np.uint8), y_test=np.arange(5) % 2)
    path = write_npz(tmp_path / "odd.npz", **{**good, **arrays})
    with pytest.raises(DataError) as err:
        load_splits(dataset("npz", path=str(path)), DataConfig(), 0, 0.1, None)
    assert str(err.value).startswith(message)


@pytest.mark.parametrize("case", ["idx test images of another size", "npz without test images"])
def test_data_that_cannot_be_trained_and_tested_stops_the_cli_before_training(tmp_path, case):
    from conftest import run_cli

    if case.startswith("idx"):
        idx_folder_with(tmp_path, t10k_images=np.zeros((9, 8, 8)))
        data = [f"data.root={tmp_path / 'data'}", "data.download=false"]
    else:
        path = write_npz(
            tmp_path / "odd.npz",
            x_train=np.zeros((20, 4, 4), np.uint8),
            y_train=np.arange(20) % 2,
            x_test=np.zeros((0, 4, 4), np.uint8),
            y_test=np.zeros(0, np.int64),
        )
        data = ["dataset=npz", f"dataset.path={path}"]
    run = tmp_path / "run"
    out = run_cli(["train", *data, "model.depth=1", "model.width=8", "epochs=1", f"hydra.run.dir={run}"], tmp_path)
    errors = [line for line in out.stderr.splitlines() if not line.startswith("warning: load average")]  # (a busy test machine)
    assert out.returncode == 2 and len(errors) == 1, out.stderr
    assert ("differ in shape" if case.startswith("idx") else "no test images") in out.stderr
    assert not (run / "metrics.json").exists()


@pytest.mark.parametrize(
    "kept, missing", [("t10k", "train-images-idx3-ubyte, train-labels-idx1-ubyte"), ("train", "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte")]
)
def test_missing_idx_files_are_named_through_the_cli(tmp_path, kept, missing):
    from conftest import run_cli

    folder = idx_folder_with(tmp_path)
    for path in folder.iterdir():
        if not path.name.startswith(kept):
            path.unlink()
    out = run_cli(["train", f"data.root={tmp_path / 'data'}", "data.download=false", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert out.returncode == 2
    assert out.stderr.splitlines()[-1].startswith(f"deepexp: mnist: idx files {missing} (plain or .gz) not found in {folder}; download is off")
