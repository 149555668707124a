"""Download dataset archives with a progress bar, check their md5, extract them safely."""

from __future__ import annotations

import hashlib
import os
import tarfile
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from ..errors import DataError


@dataclass(frozen=True)
class Resource:
    """One downloadable file: where it is, its md5, where it goes, whether to unpack it."""

    url: str
    md5: str
    filename: str
    extract: bool = True
    subdir: str = ""  # folder under the root to put (or extract) it in


_FMNIST = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
RESOURCES: dict[str, list[Resource]] = {
    "cifar10": [Resource("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                         "c58f30108f718f92721af3b95e74349a", "cifar-10-python.tar.gz")],
    "cifar100": [Resource("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                          "eb9058c3a382ffc7106e4002c42a8d85", "cifar-100-python.tar.gz")],
    "tinyimagenet": [Resource("http://cs231n.stanford.edu/tiny-imagenet-200.zip",
                              "90528d7ca1a48142e341f4ef8d21d0de", "tiny-imagenet-200.zip")],
    "fashion-mnist": [
        Resource(_FMNIST + f, md5, f, extract=False, subdir="fashion-mnist")
        for f, md5 in [
            ("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
            ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
            ("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
            ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
        ]
    ],
}


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    """Hex md5 of a file, read in chunks."""
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def download_url(url: str, dest: Path, md5: str | None = None, progress: bool = True) -> Path:
    """Fetch `url` to a temp file beside `dest`, check its md5, then move it into place."""
    if dest.is_file() and (md5 is None or md5sum(dest) == md5):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=dest.name, suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name,
                      disable=not progress) as bar:
                while block := resp.read(1 << 20):
                    out.write(block)
                    bar.update(len(block))
        if md5 is not None:
            got = md5sum(tmp)
            if got != md5:
                raise DataError(f"md5 mismatch for {url}: got {got}, expected {md5}")
        os.replace(tmp, dest)
    except OSError as e:
        raise DataError(f"download of {url} failed: {e}") from e
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _check_inside(dest: Path, names: list[str], archive: Path) -> None:
    base = dest.resolve()
    for name in names:
        target = (base / name).resolve()
        if target != base and base not in target.parents:
            raise DataError(f"archive {archive} has a member outside the target: {name}")


def extract_archive(archive: Path, dest: Path) -> None:
    """Unpack a .tar(.gz) or .zip into `dest`, refusing members that escape it."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                _check_inside(dest, zf.namelist(), archive)
                zf.extractall(dest)
            return
        with tarfile.open(archive, "r:*") as tf:
            members = tf.getmembers()
            _check_inside(dest, [m.name for m in members], archive)
            bad = [m.name for m in members if not (m.isfile() or m.isdir())]
            if bad:
                raise DataError(f"archive {archive} has links or devices: {bad[:3]}")
            tf.extractall(dest, members=members)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as e:
        raise DataError(f"cannot extract {archive}: {e!r}") from e


def download_dataset(
    name: str, root: Path, resources: list[Resource] | None = None, progress: bool = True
) -> Path:
    """Download (and unpack) every file of dataset `name` under `root`; returns `root`."""
    if resources is None:
        if name not in RESOURCES:
            raise DataError(f"no download known for {name!r}; known: {sorted(RESOURCES)}")
        resources = RESOURCES[name]
    for res in resources:
        folder = root / res.subdir if res.subdir else root
        path = download_url(res.url, folder / res.filename, res.md5, progress)
        if res.extract:
            extract_archive(path, folder)
    return root

