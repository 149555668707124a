"""Decode image bytes or files to uint8 arrays with PIL, optionally resized and centre-cropped."""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from itertools import islice

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".webp", ".tif", ".tiff")
POOL_THRESHOLD = 4000  # below this many images a process pool costs more than it saves


@dataclass(frozen=True)
class Geometry:
    """How to bring images to one size: shorter side to `resize`, then centre crop `crop`."""

    resize: int | None = None
    crop: int | None = None
    mode: str = "RGB"


# One item: (name used in error messages, bytes of the file or None to read `name` from disk).
Item = tuple[str, "bytes | None"]


def is_image_name(name: str) -> bool:
    """Whether a file name has an image extension we decode."""
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _resize_crop(im: Image.Image, geo: Geometry) -> Image.Image:
    if geo.resize is not None:
        w, h = im.size
        if min(w, h) != geo.resize:
            if w <= h:
                nw, nh = geo.resize, max(1, round(h * geo.resize / w))
            else:
                nw, nh = max(1, round(w * geo.resize / h)), geo.resize
            im = im.resize((nw, nh), Image.BILINEAR)
    if geo.crop is not None:
        w, h = im.size
        if w < geo.crop or h < geo.crop:
            raise DataError(f"image {w}x{h} is smaller than the crop {geo.crop}")
        left, top = round((w - geo.crop) / 2), round((h - geo.crop) / 2)
        im = im.crop((left, top, left + geo.crop, top + geo.crop))
    return im


def decode_image(name: str, data: bytes | None, geo: Geometry = Geometry()) -> np.ndarray:
    """Decode one image to an H x W x C uint8 array; DataError naming `name` when unreadable."""
    try:
        src = io.BytesIO(data) if data is not None else open(name, "rb")  # noqa: SIM115
        with src, Image.open(src) as im:
            im.load()
            out = _resize_crop(im.convert(geo.mode), geo)
            arr = np.asarray(out, dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
        raise DataError(f"cannot decode image {name}: {e}") from e
    return arr[:, :, None] if arr.ndim == 2 else arr


def _decode_chunk(items: Sequence[Item], geo: Geometry) -> np.ndarray:
    arrays = [decode_image(name, data, geo) for name, data in items]
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        first = arrays[0].shape
        odd = next(n for (n, _), a in zip(items, arrays, strict=True) if a.shape != first)
        raise DataError(
            f"images differ in size ({items[0][0]} is {first}, {odd} is not): "
            "pass size= to resize them"
        )
    return np.stack(arrays) if arrays else np.zeros((0, 0, 0, 0), np.uint8)


def _check_same_shape(parts: list[np.ndarray]) -> np.ndarray:
    shapes = {p.shape[1:] for p in parts if len(p)}
    if len(shapes) > 1:
        raise DataError(f"images differ in size ({sorted(shapes)}): pass size= to resize them")
    return np.concatenate(parts)


def decode_stream(items: Iterable[Item], geo: Geometry = Geometry(), workers: int | None = None,
                  chunk: int = 1000) -> np.ndarray:
    """Decode images while they are still being read (e.g. streamed from a tarball), in order.

    Below POOL_THRESHOLD images, or with one worker, decoding is serial; above, chunks go to a
    process pool as soon as they are complete, so reading overlaps decoding.
    """
    if workers is None:
        workers = min(2, os.cpu_count() or 1)
    it = iter(items)
    head = list(islice(it, POOL_THRESHOLD))
    if workers <= 1 or len(head) < POOL_THRESHOLD:
        return _decode_chunk(head + list(it), geo)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(_decode_chunk, head[i : i + chunk], geo)
                   for i in range(0, len(head), chunk)]
        while block := list(islice(it, chunk)):
            futures.append(pool.submit(_decode_chunk, block, geo))
        parts = [f.result() for f in futures]
    return _check_same_shape(parts)


def decode_many(items: Sequence[Item], geo: Geometry = Geometry(), workers: int | None = None
                ) -> np.ndarray:
    """Decode many images to one N x H x W x C uint8 array, with a process pool when it pays."""
    return decode_stream(items, geo, workers)


def to_nchw(images_nhwc: np.ndarray) -> np.ndarray:
    """N x H x W x C to a contiguous N x C x H x W array."""
    return np.ascontiguousarray(images_nhwc.transpose(0, 3, 1, 2))
