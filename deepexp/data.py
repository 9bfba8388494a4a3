"""Datasets as in-memory uint8 tensors, split once, normalised and augmented per batch.

Every dataset here fits in memory, so it is loaded once as uint8 (N, C, H, W)
tensors (moved to the GPU when training there), sliced per batch by index, and
normalised / augmented on whole batches: no DataLoader, no PIL, no per-image
Python in the training loop (the airbench recipe).

Where data comes from: `data.root`, else `$DEEPEXP_DATA`, else `./data`; then the
offline copy in `../shared/data` beside the checkout, if there is one. Missing
files are downloaded where the network allows; otherwise one line says what is
missing, where deepexp looked, and how to fix it.
"""

from __future__ import annotations

import contextlib
import gzip
import itertools
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .config import DataConfig, DatasetConfig
from .errors import DataError
from .registry import Registry

REPO_ROOT = Path(__file__).resolve().parents[1]
OFFLINE_COPY = REPO_ROOT.parent / "shared" / "data"  # the course machines' offline data
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")  # apt-get install dataset-fashion-mnist


@dataclass
class RawDataset:
    """Official train/test arrays, uint8 images (N, C, H, W) and int64 labels."""

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    source: str  # where the files were found, for the run's provenance


@dataclass
class Splits:
    """Train / validation / test tensors plus what the model and the batches need."""

    x_train: Tensor
    y_train: Tensor
    x_val: Tensor
    y_val: Tensor
    x_test: Tensor
    y_test: Tensor
    mean: Tensor  # per channel, in [0, 1] units, from the training split
    std: Tensor
    num_classes: int  # K: labels are 0..K-1 (count_classes)
    augment: bool
    source: str
    warnings: Tuple[str, ...] = ()  # what the run should say about its training split (split_warnings)

    @property
    def in_channels(self) -> int:
        return self.x_train.shape[1]

    @property
    def image_shape(self) -> Tuple[int, int]:
        """(H, W) of every image, in pixels; images need not be square."""
        return tuple(self.x_train.shape[2:])

    @property
    def input_shape(self) -> Tuple[int, int, int]:
        """(C, H, W) of one image: what a model, its MAC count and its latency are measured at."""
        return tuple(self.x_train.shape[1:])

    def sizes(self) -> dict:
        return {"train": len(self.y_train), "val": len(self.y_val), "test": len(self.y_test)}

    def to(self, device: torch.device) -> "Splits":
        moved = {k: getattr(self, k).to(device) for k in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test", "mean", "std")}
        return replace(self, **moved)


# Label names of the datasets that have them, for predictions a person reads.
CLASS_NAMES = {
    "mnist": [str(d) for d in range(10)],
    "fashion_mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"],
    "cifar10": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
}

# A dataset's loader finds its files (downloading them where allowed) and returns the function that
# reads them: `check_available` runs both, and the checks, before a command makes its output folder.
Reader = Callable[[], RawDataset]
Loader = Callable[[DatasetConfig, List[Path], bool], Reader]
DATASETS: Registry[Loader] = Registry("dataset")


def data_roots(data: DataConfig) -> List[Path]:
    """Folders searched for data, in order; downloads go to the first."""
    explicit = data.root or os.environ.get("DEEPEXP_DATA")
    if explicit:  # a root the user named is the only place looked in
        return [Path(explicit).expanduser()]
    return [Path("data")] + ([OFFLINE_COPY] if OFFLINE_COPY.is_dir() else [])


def load_splits(dataset: DatasetConfig, data: DataConfig, seed: int, val_fraction: float, subset: Optional[int]) -> Splits:
    """Load `dataset` and carve a seeded validation split from its (optionally truncated) training set.

    The classes are checked on the whole dataset (count_classes: a bad label raises DataError), so
    that K is the dataset's whatever `subset` is; the split trained on only warns (split_warnings)."""
    raw = check_raw(dataset.name, DATASETS.get(dataset.name)(dataset, data_roots(data), data.download)())
    num_classes = count_classes(dataset.name, raw.y_train, raw.y_test, dataset.num_classes)
    x, y = raw.x_train, raw.y_train
    if subset is not None:
        x, y = x[:subset], y[:subset]
    n_val = max(1, round(len(y) * val_fraction))
    if len(y) - n_val < 1:
        raise DataError(f"{dataset.name}: {len(y)} training images leave none after a {val_fraction} validation split")
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    val, train = order[:n_val], order[n_val:]
    x_train = x[train]
    pixels = x_train.to(torch.float64).div_(255).transpose(0, 1).reshape(x_train.shape[1], -1)
    return Splits(
        x_train=x_train,
        y_train=y[train],
        x_val=x[val],
        y_val=y[val],
        x_test=raw.x_test,
        y_test=raw.y_test,
        mean=pixels.mean(1).float(),
        std=pixels.std(1).clamp_min(1e-3).float(),
        num_classes=num_classes,
        augment=dataset.augment,
        source=raw.source,
        warnings=tuple(split_warnings(dataset.name, y[train], num_classes, subset)),
    )


def check_raw(name: str, raw: RawDataset) -> RawDataset:
    """The one check every loader's arrays pass at load time, before anything trains on them.

    Args:
        name: the dataset's registered name, for the message.
        raw: images uint8 (N, C, H, W) and labels int64 (N,), train and test.
    Returns `raw` unchanged.
    Raises DataError (naming `raw.source`) unless each split has images of that dtype and rank, one
    integer label per image and at least one image, every image has pixels (no axis of size 0), and
    training and test images have the same (C, H, W): a model built for one cannot take the other."""
    for split, x, y in (("training", raw.x_train, raw.y_train), ("test", raw.x_test, raw.y_test)):
        if x.dtype != torch.uint8 or x.ndim != 4:
            problem = f"{split} images must be uint8 (N, C, H, W), got {str(x.dtype).removeprefix('torch.')} {tuple(x.shape)}"
        elif y.ndim != 1 or y.dtype != torch.int64:
            problem = f"{split} labels must be one integer per image (N,), got {str(y.dtype).removeprefix('torch.')} {tuple(y.shape)}"
        elif len(x) != len(y):
            problem = f"{len(x)} {split} images for {len(y)} {split} labels"
        elif len(y) == 0:
            problem = f"no {split} images"
        elif 0 in x.shape[1:]:
            problem = f"{split} images of shape (C, H, W) = {tuple(x.shape[1:])} have no pixels"
        else:
            continue
        raise DataError(f"{name}: {problem} ({raw.source})")
    if raw.x_train.shape[1:] != raw.x_test.shape[1:]:
        raise DataError(
            f"{name}: training images {tuple(raw.x_train.shape[1:])} and test images {tuple(raw.x_test.shape[1:])} "
            f"(C, H, W) differ in shape ({raw.source})"
        )
    return raw


def check_available(dataset: DatasetConfig, data: DataConfig) -> None:
    """Find the files of `dataset` where `load_splits` would, downloading them where `data.download`
    allows, then read them and check their arrays and labels as `load_splits` does (check_raw,
    count_classes), so that data a run would refuse is refused before a command makes its folder.
    Raises DataError (one line: what is missing or wrong, where deepexp looked, how to fix it), having
    left no folder the attempt made."""
    raw = check_raw(dataset.name, DATASETS.get(dataset.name)(dataset, data_roots(data), data.download)())
    count_classes(dataset.name, raw.y_train, raw.y_test, dataset.num_classes)


# --- classes ---------------------------------------------------------------------------------

# Largest over smallest class in the training split (the imbalance ratio) above which a run warns. A
# judgement, not a standard: at 10:1 a model that never predicts the small class still gets over 90% of
# that pair's images right, so accuracy no longer shows whether the small class was learned.
IMBALANCE_WARNING = 10.0


def _listed(values: List[int], most: int = 6, total: Optional[int] = None) -> str:
    """The first `most` of `values` and how many more there are (`total` of them in all; default len(values))."""
    total = len(values) if total is None else total
    shown = ", ".join(str(v) for v in values[:most])
    return shown + (f" and {total - most} more" if total > most else "")


def count_classes(name: str, y_train: Tensor, y_test: Tensor, num_classes: Optional[int]) -> int:
    """K, the number of classes of a dataset, checked against its labels.

    Args:
        y_train, y_test: int64 labels (N,) of the whole training and test sets.
        num_classes: K as given (`dataset.num_classes`); None infers it as the largest training label + 1.
    Returns K.
    Raises DataError unless every label lies in 0..K-1, each of the K classes has training images,
    every test label is therefore a training class, and K >= 2.
    """
    if len(y_train) == 0:
        raise DataError(f"{name}: no training images")
    for split, y in (("training", y_train), ("test", y_test)):
        if len(y) and int(y.min()) < 0:
            raise DataError(f"{name}: {split} label {int(y.min())} is negative; labels must be the classes 0..K-1")
    k = num_classes if num_classes is not None else int(y_train.max()) + 1
    source = f"dataset.num_classes={k}" if num_classes is not None else "K inferred from the largest training label"
    for split, y in (("training", y_train), ("test", y_test)):
        if len(y) and int(y.max()) >= k:
            what = "outside 0..K-1" if num_classes is not None else "a class no training image has"
            raise DataError(f"{name}: {split} label {int(y.max())} is {what} (K={k}, {source}); labels must be the classes 0..K-1")
    # From the labels present, not bincount(minlength=K): K comes from the data, and one label of 10**12 would
    # ask bincount for 8 TB of counters; this costs at most N + 6 steps whatever K is.
    present = set(torch.unique(y_train).tolist())
    if len(present) < k:
        first = list(itertools.islice((c for c in range(k) if c not in present), 6))
        n_missing = k - len(present)
        raise DataError(
            f"{name}: class{'es' if n_missing > 1 else ''} {_listed(first, total=n_missing)} of 0..{k - 1} "
            f"{'have' if n_missing > 1 else 'has'} no training images (K={k}, {source}); "
            f"labels must be the classes 0..K-1, each with training images"
        )
    if k < 2:
        raise DataError(f"{name}: every training label is 0; a classifier needs at least 2 classes")
    return k


def split_warnings(name: str, y: Tensor, num_classes: int, subset: Optional[int]) -> List[str]:
    """What to tell the user about the labels (N,) a run trains on: classes the split lacks (a small
    `subset` can miss some; the test set still counts them), and an imbalance ratio over IMBALANCE_WARNING."""
    counts = torch.bincount(y, minlength=num_classes)
    out = []
    missing = (counts == 0).nonzero().flatten().tolist()
    if missing:
        cause = f"subset={subset} leaves" if subset is not None else "it has"
        out.append(
            f"{name}: the training split ({len(y)} images) has no images of class{'es' if len(missing) > 1 else ''} {_listed(missing)} of "
            f"{num_classes} ({cause} none after the validation split); the test set still counts them"
        )
    present = counts[counts > 0]
    large, small = int(present.max()), int(present.min())
    if large > IMBALANCE_WARNING * small:
        biggest, smallest = int(counts.argmax()), int(torch.where(counts > 0, counts, large + 1).argmin())
        out.append(
            f"{name}: classes are imbalanced in the training split: class {biggest} has {large} images, class {smallest} "
            f"{small} ({large / small:.0f}:1); accuracy mostly reflects the large classes"
        )
    return out


# --- per-batch transforms (run on the training device) -------------------------------


def normalize(x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """uint8 (N, C, H, W) -> float, per-channel standardised."""
    scale = (1.0 / (255.0 * std)).view(1, -1, 1, 1)
    shift = (mean / std).view(1, -1, 1, 1)
    # In place on the fresh float copy: on the CPU 2x faster than addcmul with broadcast
    # operands (scripts/bench_data_path.py), equal to it within one rounding.
    return x.float().mul_(scale).sub_(shift)


def take(x: Tensor, idx: Tensor) -> Tensor:
    """`x[idx]` for a batch of indices: index_select copies whole rows, on the CPU 9-24x faster
    than advanced indexing for a batch of images (scripts/bench_data_path.py)."""
    return x.index_select(0, idx)


def random_crop_flip(x: Tensor, generator: torch.Generator, padding: int = 4) -> Tensor:
    """Random crop with zero padding and random horizontal flip, for a whole batch at once.

    The random numbers come from a CPU generator (so runs are reproducible on any
    device) and index the padded batch in one gather.
    """
    n, _, h, w = x.shape
    shifts = torch.randint(0, 2 * padding + 1, (2, n), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    if x.is_cuda:  # pinned and asynchronous: a copy from pageable memory would wait for the GPU, every step
        shifts, flip = (t.pin_memory().to(x.device, non_blocking=True) for t in (shifts, flip))
    padded = F.pad(x, (padding,) * 4)
    rows = (shifts[0, :, None] + torch.arange(h, device=x.device)).view(n, 1, h, 1)
    cols = torch.arange(w, device=x.device).expand(n, w)
    cols = torch.where(flip[:, None], cols.flip(1), cols) + shifts[1, :, None]
    index = torch.arange(n, device=x.device).view(n, 1, 1, 1)
    channels = torch.arange(x.shape[1], device=x.device).view(1, -1, 1, 1)
    return padded[index, channels, rows, cols.view(n, 1, 1, w)]


# --- loaders ---------------------------------------------------------------------------


CHANNEL_COUNTS = (1, 3, 4)  # grey, RGB, RGBA: the sizes a channel axis has


def _nchw(images: np.ndarray | Tensor) -> Tensor:
    """uint8 (N, H, W), (N, H, W, C) or (N, C, H, W) -> (N, C, H, W) contiguous tensor.

    A 4-d array is read as channels-first only where its axis 1 has a channel count (1, 3 or 4)
    and its last axis has not; otherwise as the documented Keras layout (N, H, W, C), so that an
    RGBA (N, H, W, 4) array keeps its 4 channels."""
    t = torch.as_tensor(np.array(images)) if isinstance(images, np.ndarray) else images
    if t.ndim == 3:
        t = t.unsqueeze(1)
    elif t.ndim == 4 and not (t.shape[1] in CHANNEL_COUNTS and t.shape[-1] not in CHANNEL_COUNTS):
        t = t.permute(0, 3, 1, 2)
    return t.contiguous()


def _missing(name: str, looked: List[Path], what: str, download_error: Optional[str], put: str) -> DataError:
    """The one line for data that is neither on disk nor downloadable.

    download_error: why the download failed; None where it was not tried (data.download=false).
    put: how to provide the files by hand ("put ... in a folder and pass data.root=FOLDER")."""
    where = ", ".join(str(p) for p in looked)
    if download_error is None:
        tried, other = "download is off (data.download=false)", "or allow the download (data.download=true)"
    else:
        tried, other = f"download failed ({download_error})", "or run once where the download can reach the network"
    return DataError(f"{name}: {what} not found in {where}; {tried}; fix: {put}, {other}")


def _download_error(exc: BaseException) -> str:
    """Why a download failed, in one line. torchvision's message starts "Error downloading FILE:" and
    ends with each mirror's error ("<urlopen error [Errno -3] Temporary failure in name resolution>"):
    the first line alone names no cause."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    first, cause = lines[0].rstrip(":"), lines[-1]
    return first if cause == lines[0] else f"{first}: {cause}"


def _torchvision(cls, roots: List[Path]) -> Optional[Tuple[object, object, Path]]:
    """Load a torchvision dataset from the first root that has it (no download)."""
    for root in roots:
        try:
            return cls(str(root), train=True, download=False), cls(str(root), train=False, download=False), root
        except RuntimeError:  # torchvision's "Dataset not found"
            continue
        except (OSError, ValueError, EOFError) as exc:  # present but truncated or corrupt
            raise DataError(
                f"{cls.__name__} files in {root} are unreadable ({type(exc).__name__}: {exc}); fix: delete them to re-download, or replace them"
            ) from None
    return None


def _download(cls_name: str, root: Path, folders: List[Path]) -> Optional[str]:
    """Download torchvision's `cls_name` dataset into `root`; None when it worked, else why not (one line).

    `folders`: those the download creates (deepest first; `root` and its parents are added). A failed
    download removes the ones it created that are still empty, so that no empty data folder is left."""
    made = [d for d in [*folders, root, *root.parents] if not d.exists()]
    try:
        cls = _torchvision_dataset(cls_name)
        root.mkdir(parents=True, exist_ok=True)
        cls(str(root), train=True, download=True), cls(str(root), train=False, download=True)
        return None
    except Exception as exc:  # no network, refused, partial file ...
        for folder in made:  # deepest first
            with contextlib.suppress(OSError):  # not empty (a partial file): left for the next attempt
                folder.rmdir()
        return _download_error(exc)


def _torchvision_dataset(name: str):
    # Imported only to download (or for a full CIFAR-10 folder): importing torchvision costs
    # about 2 s, more than a short training run, and the idx files need none of it.
    import torchvision.datasets

    return getattr(torchvision.datasets, name)


def _from_torchvision_arrays(train, test, root: Path, label: str) -> RawDataset:
    return RawDataset(
        _nchw(train.data), torch.as_tensor(train.targets).long(), _nchw(test.data), torch.as_tensor(test.targets).long(), f"{label} in {root}"
    )


def _mnist_like(cls_name: str, name: str, roots: List[Path], download: bool, extra: Optional[Path] = None) -> Reader:
    """MNIST-format data: torchvision's folder layout (ROOT/MNIST/raw/*-ubyte) in the first root that
    has it, else the folder `extra`, else torchvision's download into the first root's layout."""
    label = f"{cls_name} idx files"
    found = next(
        (folder for folder in [*(r / cls_name / "raw" for r in roots), *([extra] if extra else [])] if find_idx_files(folder) is not None), None
    )
    if found is None:
        raw = roots[0] / cls_name / "raw"
        error = _download(cls_name, roots[0], [raw, raw.parent]) if download else None
        if download and error is None and find_idx_files(raw) is not None:
            found, label = raw, f"{cls_name} idx files (downloaded)"
        else:
            looked = [r / cls_name / "raw" for r in roots]
            absent = missing_idx_files(next((f for f in looked if f.is_dir()), looked[0]))
            raise _missing(
                name,
                looked,
                f"idx file{'s' if len(absent) > 1 else ''} {', '.join(absent)} (plain or .gz)",
                error,
                f"put {cls_name}/raw/*-ubyte in a folder and pass data.root=FOLDER (or set DEEPEXP_DATA)",
            )
    if extra is not None and found == extra:
        label = f"Debian dataset-{name.replace('_', '-')} idx files"
    return lambda: read_idx_folder(found, label)


# The four files of an MNIST-format dataset, each under the names mirrors use: torchvision's
# `train-images-idx3-ubyte` and the original site's `train-images.idx3-ubyte`, either one plain or gzipped.
IDX_FILES = [(split, kind, idx) for split in ("train", "t10k") for kind, idx in (("images", "idx3"), ("labels", "idx1"))]
GZIP_MAGIC = b"\x1f\x8b"  # RFC 1952: every gzip member starts with these two bytes


def idx_names(split: str, kind: str, idx: str) -> List[str]:
    """The file names one idx file is found under, in the order they are looked for."""
    names = [f"{split}-{kind}-{idx}-ubyte", f"{split}-{kind}.{idx}-ubyte"]
    return names + [f"{name}.gz" for name in names]


def find_idx_files(folder: Path) -> Optional[List[Path]]:
    """The four MNIST-format files in `folder` (train images, train labels, test images, test labels;
    any spelling of `idx_names`), or None where any is missing."""
    files = []
    for split, kind, idx in IDX_FILES:
        found = next((folder / name for name in idx_names(split, kind, idx) if (folder / name).is_file()), None)
        if found is None:
            return None
        files.append(found)
    return files


def missing_idx_files(folder: Path) -> List[str]:
    """The idx files `folder` lacks under every spelling of `idx_names`, each named by its first spelling."""
    return [idx_names(*key)[0] for key in IDX_FILES if not any((folder / n).is_file() for n in idx_names(*key))]


def read_idx_folder(folder: Path, label: str) -> Optional[RawDataset]:
    """The four MNIST-format files in `folder` (any spelling of `idx_names`); None where any is missing.

    Raises DataError where all four are there but one is unreadable (truncated, corrupt, not idx data)."""
    files = find_idx_files(folder)
    if files is None:
        return None
    try:
        xtr, ytr, xte, yte = arrays = [read_idx(f) for f in files]
        for (_, kind, _), path, array in zip(IDX_FILES, files, arrays):
            rank, layout = (3, "(N, H, W)") if kind == "images" else (1, "(N,)")
            if array.ndim != rank:
                raise ValueError(f"{path.name} has a header of shape {array.shape}; idx {kind} are {layout}")
    except (OSError, ValueError, EOFError, IndexError) as exc:  # truncated, corrupt, not idx at all
        raise DataError(
            f"{label} in {folder} are unreadable ({type(exc).__name__}: {exc}); fix: delete them to re-download, or replace them"
        ) from None
    return RawDataset(_nchw(xtr), torch.from_numpy(ytr.astype(np.int64)), _nchw(xte), torch.from_numpy(yte.astype(np.int64)), f"{label} in {folder}")


def read_idx(path: Path) -> np.ndarray:
    """Read an idx file (the MNIST format: a 4-byte magic with the dimension count, then big-endian
    sizes, then uint8 data), gzipped or not: compression is told by the content's first bytes, not the name.

    Returns an array of the header's shape, e.g. (N, H, W) images or (N,) labels, dtype uint8.
    Raises ValueError (not idx data of unsigned bytes, or a data size that differs from the header's
    shape), OSError or EOFError (a corrupt or truncated gzip stream)."""
    data = path.read_bytes()
    if data[:2] == GZIP_MAGIC:
        data = gzip.decompress(data)
    if len(data) < 4 or data[:3] != b"\x00\x00\x08":
        raise ValueError(f"{path.name} is not an idx file of unsigned bytes")
    ndim = data[3]
    offset = 4 + 4 * ndim
    if len(data) < offset:
        raise ValueError(f"{path.name} ends inside its header")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if len(data) - offset != int(np.prod(shape)):
        raise ValueError(f"{path.name} holds {len(data) - offset} bytes of data for a header shape {shape}")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(shape)


@DATASETS.register("mnist")
def load_mnist(cfg: DatasetConfig, roots: List[Path], download: bool) -> Reader:
    return _mnist_like("MNIST", "mnist", roots, download)


@DATASETS.register("fashion_mnist")
def load_fashion_mnist(cfg: DatasetConfig, roots: List[Path], download: bool) -> Reader:
    return _mnist_like("FashionMNIST", "fashion_mnist", roots, download, extra=DEBIAN_FASHION_MNIST)


CIFAR_SUBSET = "cifar10-subset.npz"
CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]  # what torchvision reads


@DATASETS.register("cifar10")
def load_cifar10(cfg: DatasetConfig, roots: List[Path], download: bool) -> Reader:
    """The full CIFAR-10 where it is on disk, else the offline subset npz, else a download."""

    def full(root: Path, label: str) -> Reader:
        def read() -> RawDataset:
            found = _torchvision(_torchvision_dataset("CIFAR10"), [root])
            if found is None:  # torchvision's checksums failed
                raise DataError(
                    f"cifar10: the files in {root / CIFAR_FOLDER} are corrupt (checksums differ); fix: delete them to re-download, or replace them"
                )
            return _from_torchvision_arrays(*found, label=label)

        return read

    present = next((root for root in roots if all((root / CIFAR_FOLDER / f).is_file() for f in CIFAR_FILES)), None)
    if present is not None:
        return full(present, "torchvision CIFAR10")
    subset = next((root / CIFAR_SUBSET for root in roots if (root / CIFAR_SUBSET).exists()), None)
    if subset is not None:

        def read_subset() -> RawDataset:
            raw = read_npz(subset)
            return replace(raw, source=f"CIFAR-10 subset ({len(raw.y_train)} train / {len(raw.y_test)} test images) {raw.source}")

        return read_subset
    error = _download("CIFAR10", roots[0], []) if download else None
    if download and error is None:
        return full(roots[0], "torchvision CIFAR10 (downloaded)")
    raise _missing(
        "cifar10", roots, f"{CIFAR_FOLDER} (or {CIFAR_SUBSET})", error, "pass data.root=FOLDER (or set DEEPEXP_DATA) to a folder holding either"
    )


def read_npz(path: Path) -> RawDataset:
    """Keras-style arrays x_train, y_train, x_test, y_test; checked so mistakes fail with one line."""
    try:
        with np.load(path) as f:
            arrays = {k: f[k] for k in f.files}
    except Exception as exc:
        raise DataError(f"{path}: cannot read as .npz ({type(exc).__name__}: {exc})") from None
    missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in arrays]
    if missing:
        raise DataError(f"{path}: missing arrays {missing}; an npz dataset needs x_train, y_train, x_test, y_test (found {sorted(arrays)})")
    out = {}
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"].reshape(-1) if arrays[f"y_{split}"].ndim == 2 else arrays[f"y_{split}"]
        if x.dtype != np.uint8 or x.ndim not in (3, 4):
            raise DataError(f"{path}: x_{split} must be uint8 images (N, H, W) or (N, H, W, C), got {x.dtype} {x.shape}")
        if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"{path}: y_{split} must be N integer labels for x_{split}'s {len(x)} images, got {y.dtype} {arrays[f'y_{split}'].shape}")
        out[split] = (_nchw(x), torch.as_tensor(y.astype(np.int64)))
    (xtr, ytr), (xte, yte) = out["train"], out["test"]
    return RawDataset(xtr, ytr, xte, yte, f"from {path}")  # shapes and sizes: check_raw, as for every loader


@DATASETS.register("npz")
def load_npz(cfg: DatasetConfig, roots: List[Path], download: bool) -> Reader:
    if not cfg.path:
        raise DataError("dataset=npz needs dataset.path=FILE.npz")
    path = Path(cfg.path).expanduser()
    candidates = [path] if path.is_absolute() else [path] + [root / path for root in roots]
    for candidate in candidates:
        if candidate.is_file():
            return lambda: read_npz(candidate)
    raise DataError(f"npz: {cfg.path} not found (looked in {', '.join(str(c.parent) for c in candidates)}); fix: dataset.path=/absolute/path.npz")


@DATASETS.register("synthetic")
def load_synthetic(cfg: DatasetConfig, roots: List[Path], download: bool) -> Reader:
    """Random uint8 images (N, channels, *image_shape) with random labels 0..num_classes-1, fixed by seed 0
    (the run seed never changes the data); there are no files to find."""

    def make_all() -> RawDataset:
        g = torch.Generator().manual_seed(0)
        shape = (cfg.channels, *cfg.image_shape)

        def make(n: int) -> Tuple[Tensor, Tensor]:
            return torch.randint(0, 256, (n, *shape), generator=g, dtype=torch.uint8), torch.randint(0, cfg.num_classes, (n,), generator=g)

        (xtr, ytr), (xte, yte) = make(cfg.train_size), make(cfg.test_size)
        return RawDataset(xtr, ytr, xte, yte, "synthetic random images")

    return make_all
