"""Captioned images as one-frame clips, for Make-A-Video's image stage (appearance from
captioned images before motion from video).

The layout, determinism, sharding, aspect buckets and robustness are those of
`VideoFolderDataset` (see `kinema.data.video_folder`): a folder with captions.csv /
captions.jsonl naming PNG / JPEG / WebP / ... files, batch `i` of rank `r` a pure function
of (seed, rank, world_size, i), unreadable files skipped, counted in `dataset.stats` and
warned about once. Each image is turned upright by its EXIF orientation, scaled with its
shorter side to `size` (Pillow, bicubic) and centre-cropped; a batch is a `CaptionedBatch`
whose `video` is [B, 3, 1, size, size] in [-1, 1], so the blocks that train on video train
on it unchanged.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .video_folder import CaptionedFolderDataset, MediaInfo, aspect_bucket, center_crop, check_file, scaled_size

# EXIF orientations that turn the picture a quarter turn (width and height swap)
_QUARTER_TURNS = (5, 6, 7, 8)
_EXIF_ORIENTATION = 0x0112


def probe_image(path: Path) -> tuple[int, int]:
    """(width, height) of an image as it is shown (after its EXIF orientation), from its header;
    ValueError with a short reason if it is not a readable image."""
    check_file(path)
    try:
        with Image.open(path) as im:
            width, height = im.size
            orientation = im.getexif().get(_EXIF_ORIENTATION, 1)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise ValueError(f"not a readable image: {str(err).splitlines()[0][:200] or type(err).__name__}") from None
    if not width or not height:
        raise ValueError("image has no pixels")
    return (height, width) if orientation in _QUARTER_TURNS else (width, height)


def read_image(path: Path, size: int) -> np.ndarray:
    """uint8 (size, size, 3): the image upright, shorter side scaled to `size`, centre-cropped."""
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            im = im.convert("RGB")
            w, h = scaled_size(im.width, im.height, size)
            im = im.resize((w, h), Image.Resampling.BICUBIC, reducing_gap=3.0)
            return center_crop(np.asarray(im), size)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise ValueError(f"cannot decode: {str(err).splitlines()[0][:200] or type(err).__name__}") from None


class CaptionedImageDataset(CaptionedFolderDataset):
    """Captioned images as clips of one frame: `dataset.batch(i)` is batch i (any order, any
    time); iterating yields batches `start`, `start + 1`, ... (Constructor: see
    `CaptionedFolderDataset`.)"""

    kind = "images"

    def _probe(self, file: Path, caption: str) -> MediaInfo:
        width, height = probe_image(file)
        return MediaInfo(path=file, caption=caption, width=width, height=height, bucket=aspect_bucket(width, height))

    def _load(self, info: MediaInfo, rng: np.random.Generator) -> tuple[np.ndarray, float]:
        return read_image(info.path, self.size)[None], 0.0
