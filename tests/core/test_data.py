"""Tests of pxprune.data on small files written here in each dataset's real on-disk format."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import SHARED_DATA
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from pxprune.data import (
    DataError,
    DatasetNotFoundError,
    ImageDataset,
    Loader,
    Resource,
    crop_flip,
    default_root,
    download_dataset,
    iterate_batches,
    limit_per_class,
    load_dataset,
    normalize,
    pruning_split,
    random_crop_flip,
)
from pxprune.data import download as download_mod
from pxprune.data import registry as registry_mod
from pxprune.data.cifar import read_pickle
from pxprune.data.idx import SYSTEM_FASHION_MNIST, read_idx

SHARED_TAR = SHARED_DATA / "cifar10-jpeg.tar.gz"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own empty decode cache and no inherited data root."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("PXPRUNE_CACHE", str(cache))
    monkeypatch.delenv("PXPRUNE_DATA", raising=False)
    return cache


# ---------------------------------------------------------------- writers in the real formats


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def write_cifar10(root: Path, per_batch: int = 6, seed: int = 0) -> dict[str, np.ndarray]:
    """cifar-10-batches-py with python-2 style byte keys; returns the arrays written."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = _rng(seed)
    out: dict[str, list[np.ndarray]] = {"train_x": [], "train_y": []}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        y = [int(v) for v in rng.integers(0, 10, per_batch)]
        with open(folder / name, "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"labels": y, b"data": x,
                         b"filenames": [b"x.png"] * per_batch}, f, protocol=2)
        if name == "test_batch":
            out["test_x"], out["test_y"] = [x], [np.array(y)]
        else:
            out["train_x"].append(x)
            out["train_y"].append(np.array(y))
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse",
             b"ship", b"truck"]
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": names, b"num_vis": 3072}, f, protocol=2)
    return {k: np.concatenate(v) for k, v in out.items()}


def write_cifar100(root: Path, n: int = 12) -> dict[str, np.ndarray]:
    """cifar-100-python: train, test, meta with fine and coarse labels."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = _rng(1)
    out = {}
    for split in ("train", "test"):
        x = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        fine = [int(v) for v in rng.integers(0, 100, n)]
        with open(folder / split, "wb") as f:
            pickle.dump({b"data": x, b"fine_labels": fine, b"coarse_labels": [0] * n}, f,
                        protocol=2)
        out[split] = (x, np.array(fine))
    with open(folder / "meta", "wb") as f:
        pickle.dump({b"fine_label_names": [f"c{i:02d}".encode() for i in range(100)],
                     b"coarse_label_names": [b"x"] * 20}, f, protocol=2)
    return out


def _jpeg_bytes(arr: np.ndarray, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _flat(color: tuple[int, int, int], size: int = 32) -> np.ndarray:
    return np.broadcast_to(np.array(color, np.uint8), (size, size, 3)).copy()


COLORS = {"cat": (200, 30, 40), "airplane": (20, 120, 220), "dog": (90, 200, 60)}


def write_jpeg_tar(path: Path, counts: dict[str, int] | None = None,
                   bad_member: str | None = None, reverse: bool = False) -> None:
    """A tarball laid out like cifar10-jpeg.tar.gz: test/<class>/NNNN.jpg then train/..."""
    counts = counts or {"train": 4, "test": 2}
    entries = []
    for split in ("test", "train"):
        for cls, color in COLORS.items():
            for i in range(counts[split]):
                name = f"{split}/{cls}/{i:04d}.jpg"
                shade = tuple(max(0, v - 12 * i) for v in color)  # image i is a bit darker
                data = b"not a jpeg" if name == bad_member else _jpeg_bytes(_flat(shade))
                entries.append((name, data))
    with tarfile.open(path, "w:gz") as tf:
        for name, data in reversed(entries) if reverse else entries:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


def write_idx(path: Path, arr: np.ndarray, compress: bool) -> None:
    """An unsigned-byte IDX file (optionally gzipped)."""
    header = bytes([0, 0, 8, arr.ndim]) + np.array(arr.shape, ">u4").tobytes()
    data = header + arr.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


# ---------------------------------------------------------------- CIFAR pickles


def test_cifar10_pickle_round_trip(tmp_path: Path) -> None:
    ref = write_cifar10(tmp_path)
    tr = load_dataset("cifar10", "train", root=tmp_path)
    te = load_dataset("cifar10", "test", root=tmp_path)
    assert tr.name == "CIFAR-10" and len(tr) == 30 and len(te) == 6
    assert tr.images.dtype == torch.uint8 and tr.images.shape == (30, 3, 32, 32)
    assert torch.equal(tr.images.reshape(30, -1), torch.from_numpy(ref["train_x"]))
    assert torch.equal(tr.labels, torch.from_numpy(ref["train_y"]).long())
    assert torch.equal(te.images.reshape(6, -1), torch.from_numpy(ref["test_x"]))
    # the row layout is R plane, G plane, B plane, each row-major
    assert int(tr.images[0, 1, 0, 2]) == int(ref["train_x"][0, 1024 + 2])
    assert tr.classes[3] == "cat" and tr.mean == pytest.approx((0.4914, 0.4822, 0.4465))


def test_cifar100_fine_labels(tmp_path: Path) -> None:
    ref = write_cifar100(tmp_path)
    te = load_dataset("cifar100", "test", root=tmp_path)
    assert te.name == "CIFAR-100" and len(te.classes) == 100 and te.classes[7] == "c07"
    assert torch.equal(te.images.reshape(12, -1), torch.from_numpy(ref["test"][0]))
    assert te.labels.tolist() == ref["test"][1].tolist()


def test_truncated_pickle_names_file(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    p = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    p.write_bytes(p.read_bytes()[:500])
    with pytest.raises(DataError, match="data_batch_3"):
        load_dataset("cifar10", "train", root=tmp_path)


def test_pickle_with_code_is_refused(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self):  # noqa: ANN204
            return (os.system, ("true",))

    p = tmp_path / "evil"
    p.write_bytes(pickle.dumps({b"data": Evil()}))
    with pytest.raises(DataError, match="evil"):
        read_pickle(p)


# ---------------------------------------------------------------- JPEG tarball


def test_jpeg_tar_round_trip_and_cifar10_fallback(tmp_path: Path) -> None:
    write_jpeg_tar(tmp_path / "cifar10-jpeg.tar.gz")
    tr = load_dataset("cifar10", "train", root=tmp_path)  # no pickle folder: JPEG copy
    assert tr.name == "CIFAR-10 (JPEG copy)"
    assert tr.classes == ["airplane", "cat", "dog"]  # sorted folder names
    assert tr.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    for i, cls in enumerate(tr.classes):
        img = tr.images[tr.labels == i].int()
        ref = torch.tensor([[max(0, v - 12 * k) for v in COLORS[cls]] for k in range(4)])
        assert (img - ref.view(4, 3, 1, 1)).abs().max() <= 3  # flat colours: JPEG within 3
    te = load_dataset("cifar10-jpeg", "test", root=tmp_path)
    assert len(te) == 6 and te.labels.tolist() == [0, 0, 1, 1, 2, 2]


def test_jpeg_tar_order_does_not_depend_on_member_order(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    write_jpeg_tar(tmp_path / "a" / "cifar10-jpeg.tar.gz")
    write_jpeg_tar(tmp_path / "b" / "cifar10-jpeg.tar.gz", reverse=True)
    a = load_dataset("cifar10-jpeg", "train", root=tmp_path / "a", cache=False)
    b = load_dataset("cifar10-jpeg", "train", root=tmp_path / "b", cache=False)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert a.images[:4, 0, 0, 0].tolist() == sorted(a.images[:4, 0, 0, 0].tolist(), reverse=True)


def test_jpeg_tar_cache_hit_and_invalidation(tmp_path: Path, _isolated_cache: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    tar = tmp_path / "cifar10-jpeg.tar.gz"
    write_jpeg_tar(tar)
    first = load_dataset("cifar10-jpeg", "train", root=tmp_path)
    cached = list((_isolated_cache / "decoded").glob("cifar10-jpeg-*.npz"))
    assert len(cached) == 1

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("decoded again instead of using the cache")

    monkeypatch.setattr(registry_mod, "load_image_tar", boom)
    again = load_dataset("cifar10-jpeg", "train", root=tmp_path)
    assert torch.equal(first.images, again.images) and torch.equal(first.labels, again.labels)
    assert again.classes == first.classes
    # a changed source file (size/mtime) is a cache miss
    write_jpeg_tar(tar, counts={"train": 5, "test": 2})
    os.utime(tar, ns=(time.time_ns(), time.time_ns() + 10**9))
    with pytest.raises(AssertionError, match="decoded again"):
        load_dataset("cifar10-jpeg", "train", root=tmp_path)


def test_corrupt_cache_entry_is_rebuilt(tmp_path: Path, _isolated_cache: Path) -> None:
    write_jpeg_tar(tmp_path / "cifar10-jpeg.tar.gz")
    first = load_dataset("cifar10-jpeg", "test", root=tmp_path)
    (entry,) = (_isolated_cache / "decoded").glob("*.npz")
    entry.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="unreadable cache"):
        again = load_dataset("cifar10-jpeg", "test", root=tmp_path)
    assert torch.equal(first.images, again.images)


def test_truncated_tarball_names_file(tmp_path: Path) -> None:
    tar = tmp_path / "cifar10-jpeg.tar.gz"
    write_jpeg_tar(tar)
    tar.write_bytes(tar.read_bytes()[: tar.stat().st_size // 2])
    with pytest.raises(DataError, match="cifar10-jpeg.tar.gz"):
        load_dataset("cifar10-jpeg", "train", root=tmp_path, cache=False)


def test_unreadable_jpeg_in_tarball_names_member(tmp_path: Path) -> None:
    write_jpeg_tar(tmp_path / "cifar10-jpeg.tar.gz", bad_member="train/dog/0002.jpg")
    with pytest.raises(DataError, match="train/dog/0002.jpg"):
        load_dataset("cifar10-jpeg", "train", root=tmp_path)


def test_missing_cifar10_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="download=True") as e:
        load_dataset("cifar10", "train", root=tmp_path)
    assert "PXPRUNE_DATA" in str(e.value) and "cifar-10-batches-py" in str(e.value)


@pytest.mark.skipif(not SHARED_TAR.is_file(), reason="shared CIFAR-10 JPEG copy not present")
def test_shared_tarball_first_entries_decode() -> None:
    from pxprune.data.decode import decode_image

    got = []
    with tarfile.open(SHARED_TAR, "r|gz") as tf:
        for m in tf:
            if m.isfile():
                got.append((m.name, decode_image(m.name, tf.extractfile(m).read())))
            if len(got) == 5:
                break
    assert [n for n, _ in got][0] == "test/airplane/0000.jpg"
    for _, arr in got:
        assert arr.shape == (32, 32, 3) and arr.dtype == np.uint8 and 20 < arr.mean() < 240


# ---------------------------------------------------------------- image folders


def _write_folder(root: Path, sizes: dict[str, tuple[int, int]] | None = None) -> dict:
    """train/<class>/*.png and test/<class>/*.png with known random pixels."""
    rng = _rng(3)
    ref: dict[tuple[str, str], list[np.ndarray]] = {}
    for split, n in (("train", 3), ("test", 2)):
        for cls in ("zebra", "ant"):
            d = root / split / cls
            d.mkdir(parents=True)
            h, w = (sizes or {}).get(cls, (16, 16))
            for i in range(n):
                arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                (d / f"{i:03d}.png").write_bytes(_png_bytes(arr))
                ref.setdefault((split, cls), []).append(arr)
    return ref


def test_imagefolder_png_exact(tmp_path: Path) -> None:
    ref = _write_folder(tmp_path / "folder")
    ds = load_dataset(f"imagefolder:{tmp_path / 'folder'}", "train")
    assert ds.classes == ["ant", "zebra"] and ds.labels.tolist() == [0, 0, 0, 1, 1, 1]
    want = np.stack(ref[("train", "ant")] + ref[("train", "zebra")]).transpose(0, 3, 1, 2)
    assert torch.equal(ds.images, torch.from_numpy(want))
    te = load_dataset("imagefolder:folder", "test", root=tmp_path)  # relative to the root
    assert len(te) == 4 and te.image_shape == (3, 16, 16)


def test_imagefolder_resize_and_size_mismatch(tmp_path: Path) -> None:
    _write_folder(tmp_path / "f", sizes={"ant": (20, 30), "zebra": (16, 16)})
    with pytest.raises(DataError, match="size="):
        load_dataset(f"imagefolder:{tmp_path / 'f'}", "train")
    ds = load_dataset(f"imagefolder:{tmp_path / 'f'}", "train", size=8)
    assert ds.images.shape == (6, 3, 8, 8)
    lim = load_dataset(f"imagefolder:{tmp_path / 'f'}", "train", size=8, max_per_class=1)
    assert lim.labels.tolist() == [0, 1]
    assert torch.equal(lim.images, ds.images[[0, 3]])


def test_imagefolder_unreadable_png_names_file(tmp_path: Path) -> None:
    _write_folder(tmp_path / "f")
    bad = tmp_path / "f" / "train" / "ant" / "001.png"
    bad.write_bytes(bad.read_bytes()[:40])
    with pytest.raises(DataError, match="001.png"):
        load_dataset(f"imagefolder:{tmp_path / 'f'}", "train")


def test_imagenet_resize_center_crop(tmp_path: Path) -> None:
    for split in ("train", "val"):
        for wnid, color in (("n01", (250, 0, 0)), ("n02", (0, 0, 250))):
            d = tmp_path / "imagenet" / split / wnid
            d.mkdir(parents=True)
            arr = _flat(color, 40)[:30]  # 30 x 40, flat colour
            arr[:, :4] = 0  # a dark left border the centre crop must remove
            (d / "a.png").write_bytes(_png_bytes(arr))
    ds = load_dataset("imagenet", "test", root=tmp_path, size=16)
    assert ds.name == "ImageNet" and ds.images.shape == (2, 3, 16, 16)
    # shorter side 30 -> round(16*256/224) = 18, width 24; the 4 dark columns become ~2.4
    assert ds.images[0, 0].min() >= 240 and ds.images[1, 2].min() >= 240


# ---------------------------------------------------------------- Tiny-ImageNet


def test_tinyimagenet_layout(tmp_path: Path) -> None:
    folder = tmp_path / "tiny-imagenet-200"
    wnids = ["n09", "n01", "n05"]  # wnids.txt is not sorted; labels follow sorted order
    colors = {"n01": (250, 10, 10), "n05": (10, 250, 10), "n09": (10, 10, 250)}
    (folder / "val" / "images").mkdir(parents=True)
    (folder / "wnids.txt").write_text("\n".join(wnids) + "\n")
    for w in wnids:
        d = folder / "train" / w / "images"
        d.mkdir(parents=True)
        for i in range(3):
            (d / f"{w}_{i}.JPEG").write_bytes(_jpeg_bytes(_flat(colors[w], 64)))
        (folder / "train" / w / f"{w}_boxes.txt").write_text("")
    lines = []
    for i, w in enumerate(["n05", "n09", "n01", "n05"]):
        (folder / "val" / "images" / f"val_{i}.JPEG").write_bytes(
            _jpeg_bytes(_flat(colors[w], 64)))
        lines.append(f"val_{i}.JPEG\t{w}\t0\t0\t63\t63")
    (folder / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")

    tr = load_dataset("tinyimagenet", "train", root=tmp_path)
    assert tr.classes == ["n01", "n05", "n09"] and tr.images.shape == (9, 3, 64, 64)
    assert tr.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    te = load_dataset("tinyimagenet", "test", root=tmp_path)
    assert te.labels.tolist() == [0, 1, 1, 2]
    for img, lab in zip(te.images, te.labels, strict=True):
        ref = torch.tensor(colors[te.classes[int(lab)]]).view(3, 1, 1)
        assert (img.int() - ref).abs().max() <= 3
    (folder / "val" / "images" / "val_3.JPEG").unlink()
    with pytest.raises(DataError, match="val_annotations.txt"):
        load_dataset("tinyimagenet", "test", root=tmp_path)


# ---------------------------------------------------------------- Fashion-MNIST / IDX


@pytest.mark.parametrize("compress", [False, True])
def test_fashion_mnist_idx_round_trip(tmp_path: Path, compress: bool) -> None:
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    rng = _rng(4)
    ext = ".gz" if compress else ""
    imgs = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    labs = rng.integers(0, 10, 7).astype(np.uint8)
    for prefix in ("train", "t10k"):
        write_idx(folder / f"{prefix}-images-idx3-ubyte{ext}", imgs, compress)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{ext}", labs, compress)
    ds = load_dataset("fashion-mnist", "test", root=tmp_path)
    assert ds.images.shape == (7, 1, 28, 28) and ds.classes[9] == "Ankle boot"
    assert torch.equal(ds.images[:, 0], torch.from_numpy(imgs))
    assert ds.labels.tolist() == labs.tolist() and ds.mean == (0.2860,)


def test_idx_bad_magic_and_truncation(tmp_path: Path) -> None:
    good = tmp_path / "good-idx3-ubyte"
    write_idx(good, np.zeros((2, 3, 3), np.uint8), compress=False)
    bad = tmp_path / "bad-idx3-ubyte"
    bad.write_bytes(b"\x00\x00\x0d\x03" + good.read_bytes()[4:])  # float type code
    with pytest.raises(DataError, match="bad-idx3-ubyte"):
        read_idx(bad)
    short = tmp_path / "short-idx3-ubyte"
    short.write_bytes(good.read_bytes()[:-5])
    with pytest.raises(DataError, match="short-idx3-ubyte.*13 data bytes"):
        read_idx(short)
    gz = tmp_path / "trunc-idx3-ubyte.gz"
    gz.write_bytes(gzip.compress(good.read_bytes())[:-10])
    with pytest.raises(DataError, match="trunc-idx3-ubyte.gz"):
        read_idx(gz)


@pytest.mark.skipif(not (SYSTEM_FASHION_MNIST / "t10k-labels-idx1-ubyte.gz").is_file(),
                    reason="Debian package dataset-fashion-mnist not installed")
def test_system_fashion_mnist(tmp_path: Path) -> None:
    te = load_dataset("fashion-mnist", "test", root=tmp_path)
    assert te.images.shape == (10000, 1, 28, 28)
    assert te.class_counts().tolist() == [1000] * 10


# ---------------------------------------------------------------- downloads through file://


def _cifar10_archive(tmp_path: Path) -> tuple[Path, str, dict[str, np.ndarray]]:
    src = tmp_path / "src"
    ref = write_cifar10(src, per_batch=3)
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(src / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    return archive, hashlib.md5(archive.read_bytes()).hexdigest(), ref


def test_download_file_url_md5_extract(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive, md5, ref = _cifar10_archive(tmp_path)
    root = tmp_path / "root"
    res = Resource(archive.as_uri(), md5, "cifar-10-python.tar.gz")
    monkeypatch.setitem(download_mod.RESOURCES, "cifar10", [res])
    ds = load_dataset("cifar10", "test", root=root, download=True)
    assert ds.name == "CIFAR-10" and (root / "cifar-10-python.tar.gz").is_file()
    assert torch.equal(ds.images.reshape(3, -1), torch.from_numpy(ref["test_x"]))


def test_download_md5_mismatch_leaves_nothing(tmp_path: Path) -> None:
    archive, _, _ = _cifar10_archive(tmp_path)
    root = tmp_path / "root"
    res = Resource(archive.as_uri(), "0" * 32, "cifar-10-python.tar.gz")
    with pytest.raises(DataError, match="md5 mismatch"):
        download_dataset("cifar10", root, resources=[res], progress=False)
    assert list(root.iterdir()) == []


def test_download_plain_file_into_subdir(tmp_path: Path) -> None:
    src = tmp_path / "t10k-labels-idx1-ubyte.gz"
    write_idx(src, np.arange(10, dtype=np.uint8), compress=True)
    res = Resource(src.as_uri(), hashlib.md5(src.read_bytes()).hexdigest(), src.name,
                   extract=False, subdir="fashion-mnist")
    download_dataset("fashion-mnist", tmp_path / "root", resources=[res], progress=False)
    got = read_idx(tmp_path / "root" / "fashion-mnist" / src.name)
    assert got.tolist() == list(range(10))


def test_download_refuses_escaping_members(tmp_path: Path) -> None:
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 2
        tf.addfile(info, io.BytesIO(b"hi"))
    res = Resource(archive.as_uri(), hashlib.md5(archive.read_bytes()).hexdigest(), "e.tar.gz")
    with pytest.raises(DataError, match="outside"):
        download_dataset("x", tmp_path / "root", resources=[res], progress=False)
    assert not (tmp_path / "escaped.txt").exists()


# ---------------------------------------------------------------- roots


def test_default_root_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PXPRUNE_DATA", str(tmp_path / "env"))
    assert default_root() == tmp_path / "env"
    monkeypatch.delenv("PXPRUNE_DATA")
    (tmp_path / "shared" / "data").mkdir(parents=True)
    (tmp_path / "main").mkdir()
    monkeypatch.chdir(tmp_path / "main")
    assert default_root() == tmp_path / "shared" / "data"
    monkeypatch.chdir(tmp_path)
    assert default_root() == Path.home() / ".cache" / "pxprune" / "data"


# ---------------------------------------------------------------- splits


def _toy(n_per_class: list[int], hw: int = 4) -> ImageDataset:
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(n_per_class)])
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    labels = labels[perm]
    n = len(labels)
    images = torch.arange(n, dtype=torch.int64).view(n, 1, 1, 1).expand(n, 3, hw, hw)
    return ImageDataset((images % 256).to(torch.uint8).contiguous(), labels,
                        [f"k{c}" for c in range(len(n_per_class))],
                        (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), "toy")


def test_pruning_split_balanced_and_seeded() -> None:
    ds = _toy([30, 25, 40])
    x, y = pruning_split(ds, per_class=10, seed=0)
    assert x.dtype == torch.uint8 and x.shape == (30, 3, 4, 4)
    assert y.tolist() == [0] * 10 + [1] * 10 + [2] * 10
    idx = x[:, 0, 0, 0].long()  # each image stores its own index
    assert len(set(idx.tolist())) == 30 and torch.equal(ds.labels[idx], y)
    x2, _ = pruning_split(ds, per_class=10, seed=0)
    x3, _ = pruning_split(ds, per_class=10, seed=1)
    assert torch.equal(x, x2) and not torch.equal(x, x3)
    assert pruning_split(ds, per_class=25)[1].bincount().tolist() == [25, 25, 25]


def test_pruning_split_short_class_error() -> None:
    with pytest.raises(DataError, match=r"class 1 'k1' has 8 examples.*needs 10"):
        pruning_split(_toy([12, 8, 15]), per_class=10)


def test_limit_per_class_first_n_in_order() -> None:
    ds = _toy([6, 5, 7])
    sub = limit_per_class(ds, 3)
    assert sub.class_counts().tolist() == [3, 3, 3]
    kept = sub.images[:, 0, 0, 0].long()
    assert kept.tolist() == sorted(kept.tolist())  # dataset order kept
    for c in range(3):
        first = torch.nonzero(ds.labels == c).flatten()[:3]
        assert set(first.tolist()) == set(kept[sub.labels == c].tolist())
    off = limit_per_class(ds, 2, offset=3)
    assert set(off.images[:, 0, 0, 0].tolist()).isdisjoint(kept.tolist())
    with pytest.raises(DataError, match="'k1' has 5"):
        limit_per_class(ds, 4, offset=2)
    assert limit_per_class(ds, 6, strict=False).class_counts().tolist() == [6, 5, 6]


# ---------------------------------------------------------------- augmentation


def test_flip_is_exact_mirror_and_crop_is_shifted_window() -> None:
    x = torch.randint(1, 256, (5, 3, 8, 8), dtype=torch.uint8)
    n = x.shape[0]
    zeros = torch.zeros(n, dtype=torch.long)
    mirrored = crop_flip(x, zeros, zeros, torch.ones(n, dtype=torch.bool), padding=0)
    assert torch.equal(mirrored, x.flip(-1))
    # top=1, left=6 in padded coordinates with padding 4: shift down 3 rows, left by 2 columns
    out = crop_flip(x, torch.full((n,), 1), torch.full((n,), 6), torch.zeros(n).bool(), 4)
    assert torch.equal(out[:, :, :3], torch.zeros_like(out[:, :, :3]))
    assert torch.equal(out[:, :, :, 6:], torch.zeros_like(out[:, :, :, 6:]))
    assert torch.equal(out[:, :, 3:, :6], x[:, :, :5, 2:])


def test_random_crop_flip_matches_reference_and_is_seeded() -> None:
    x = torch.rand(16, 3, 10, 10)
    g = torch.Generator().manual_seed(5)
    out = random_crop_flip(x, padding=4, generator=g)
    g = torch.Generator().manual_seed(5)
    top = torch.randint(0, 9, (16,), generator=g)
    left = torch.randint(0, 9, (16,), generator=g)
    flip = torch.randint(0, 2, (16,), generator=g).bool()
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    for i in range(16):  # reference, one sample at a time
        win = padded[i, :, top[i] : top[i] + 10, left[i] : left[i] + 10]
        assert torch.equal(out[i], win.flip(-1) if flip[i] else win)
    assert out.dtype == x.dtype and flip.any() and not flip.all()
    again = random_crop_flip(x, 4, torch.Generator().manual_seed(5))
    assert torch.equal(out, again)
    assert not torch.equal(out, random_crop_flip(x, 4, torch.Generator().manual_seed(6)))


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 4), h=st.integers(1, 7), w=st.integers(1, 7), pad=st.integers(0, 3),
       seed=st.integers(0, 2**31))
def test_crop_flip_property(n: int, h: int, w: int, pad: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(1, 256, (n, 2, h, w), generator=g, dtype=torch.uint8)
    top = torch.randint(0, 2 * pad + 1, (n,), generator=g)
    left = torch.randint(0, 2 * pad + 1, (n,), generator=g)
    flip = torch.randint(0, 2, (n,), generator=g).bool()
    out = crop_flip(x, top, left, flip, pad)
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    for i in range(n):
        win = padded[i, :, top[i] : top[i] + h, left[i] : left[i] + w]
        assert torch.equal(out[i], win.flip(-1) if flip[i] else win)
    # pixels kept are a subset of the input's, the rest are zero padding
    assert int((out > 0).sum()) <= int((x > 0).sum())


def test_dataset_subset_and_normalization() -> None:
    ds = _toy([3, 3])
    sub = ds.subset([4, 0])
    assert sub.images[:, 0, 0, 0].tolist() == [4, 0]
    assert sub.labels.tolist() == ds.labels[[4, 0]].tolist()
    assert sub.classes == ds.classes and sub.name == "toy"
    assert ds.with_normalization((0.1,) * 3, (0.2,) * 3).mean == (0.1, 0.1, 0.1)
    with pytest.raises(DataError, match="labels outside"):
        ImageDataset(ds.images, ds.labels + 5, ds.classes, ds.mean, ds.std, "bad")


def test_normalize_values() -> None:
    x = torch.tensor([0, 255], dtype=torch.uint8).view(1, 1, 1, 2).expand(1, 3, 1, 2)
    out = normalize(x, (0.5, 0.25, 0.0), (0.5, 0.25, 2.0))
    assert out.dtype == torch.float32
    assert out[0, :, 0, 0].tolist() == pytest.approx([-1.0, -1.0, 0.0])
    assert out[0, :, 0, 1].tolist() == pytest.approx([1.0, 3.0, 0.5])


# ---------------------------------------------------------------- batches


def _ids(x: torch.Tensor, ds: ImageDataset) -> list[int]:
    """Recover the stored example index from normalised (unaugmented) batches."""
    pix = x[:, 0, 0, 0] * ds.std[0] + ds.mean[0]
    return torch.round(pix * 255).long().tolist()


def test_iterate_batches_covers_epoch_and_resumes_exactly() -> None:
    ds = _toy([20, 20, 10])  # 50 examples, ids 0..49
    ep2 = list(iterate_batches(ds, 16, shuffle=True, seed=3, epoch=2))
    assert [len(y) for _, y in ep2] == [16, 16, 16, 2]
    ids = sum((_ids(x, ds) for x, _ in ep2), [])
    assert sorted(ids) == list(range(50)) and ids != list(range(50))
    for x, y in ep2:
        assert torch.equal(ds.labels[_ids(x, ds)], y)
    # same epoch after iterating earlier epochs: identical; other epoch: different order
    for e in range(2):
        list(iterate_batches(ds, 16, seed=3, epoch=e, augment=True))
    again = list(iterate_batches(ds, 16, seed=3, epoch=2))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(ep2, again, strict=True))
    ep1_ids = sum((_ids(x, ds) for x, _ in iterate_batches(ds, 16, seed=3, epoch=1)), [])
    assert ep1_ids != ids
    # mid-epoch resume gives the same remaining batches, augmentation included
    full = list(iterate_batches(ds, 16, seed=3, epoch=2, augment=True))
    tail = list(iterate_batches(ds, 16, seed=3, epoch=2, augment=True, start_batch=2))
    assert len(tail) == 2
    assert all(torch.equal(a[0], b[0]) for a, b in zip(full[2:], tail, strict=True))
    assert not torch.equal(full[0][0], ep2[0][0])  # augmentation did change the images


def test_loader_len_drop_last_and_no_shuffle() -> None:
    ds = _toy([20, 20, 10])
    loader = Loader(ds, 16, shuffle=False, drop_last=True)
    assert len(loader) == 3
    batches = list(loader)
    assert len(batches) == 3 and _ids(batches[0][0], ds) == list(range(16))
    shuffled = Loader(ds, 16, seed=1)
    shuffled.set_epoch(4)
    a = [x for x, _ in shuffled]
    b = [x for x, _ in iterate_batches(ds, 16, seed=1, epoch=4)]
    assert len(shuffled) == 4 and all(torch.equal(p, q) for p, q in zip(a, b, strict=True))
    assert batches[0][0].dtype == torch.float32 and batches[0][1].dtype == torch.int64


# ---------------------------------------------------------------- the full shared copy


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_TAR.is_file(), reason="shared CIFAR-10 JPEG copy not present")
def test_full_shared_cifar10_decode_and_cached_load() -> None:
    root = SHARED_TAR.parent
    t0 = time.perf_counter()
    tr = load_dataset("cifar10", "train", root=root)
    t1 = time.perf_counter()
    tr2 = load_dataset("cifar10", "train", root=root)
    t2 = time.perf_counter()
    print(f"first decode {t1 - t0:.2f} s, cached load {t2 - t1:.2f} s")
    assert tr.name == "CIFAR-10 (JPEG copy)" and tr.images.shape == (50000, 3, 32, 32)
    assert tr.class_counts().tolist() == [5000] * 10 and torch.equal(tr.images, tr2.images)
    mean = (tr.images.double() / 255).mean(dim=(0, 2, 3))
    assert mean.tolist() == pytest.approx([0.4914, 0.4822, 0.4465], abs=0.01)
    te = load_dataset("cifar10", "test", root=root)
    assert te.class_counts().tolist() == [1000] * 10
    assert t2 - t1 < 5.0


def test_process_pool_decode_matches_serial(monkeypatch: pytest.MonkeyPatch) -> None:
    from pxprune.data import decode

    monkeypatch.setattr(decode, "POOL_THRESHOLD", 1)
    rng = _rng(7)
    arrays = [rng.integers(0, 256, (6, 5, 3), dtype=np.uint8) for _ in range(40)]
    items = [(f"img{i}.png", _png_bytes(a)) for i, a in enumerate(arrays)]
    pooled = decode.decode_many(items, workers=2)
    assert np.array_equal(pooled, np.stack(arrays))
    items[23] = ("img23.png", b"\x89PNG broken")
    with pytest.raises(DataError, match="img23.png"):
        decode.decode_many(items, workers=2)


def test_printing_a_dataset_summarises_it_instead_of_dumping_pixels():
    from helpers import synthetic

    text = repr(synthetic(40, 0))
    assert text == "ImageDataset('synthetic': 40 images of 3x8x8 uint8, 4 classes [c0, c1, c2, c3])"
