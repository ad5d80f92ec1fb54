"""Training data, addressed by batch index: `dataset.batch(i)` is the i-th batch of this rank,
a pure function of the seed, rank, world size and i, so a resumed run sees exactly the
batches an unbroken run would have.

| spec                                  | dataset                                                     |
| ------------------------------------- | ----------------------------------------------------------- |
| `"shapes"` (the default)              | `ShapesVideoDataset`: endless Shapes-world events           |
| a folder with captions.csv / .jsonl   | `VideoFolderDataset`: random clips of captioned real videos  |
| a `captions.csv` / `.jsonl` file      | the same, paths relative to the file's folder               |
| either, naming only image files       | `CaptionedImageDataset`: one-frame clips (Make-A-Video)      |

Every batch has `.video` [B, 3, T, H, W] in [-1, 1] and `.to(device)`; real data adds
`.captions`, the Shapes world `.specs`.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..world.spec import DEFAULT_SIZE, EVENT_FRAMES, FPS
from .images import CaptionedImageDataset
from .shapes import ShapesBatch, ShapesVideoDataset, to_model_range, to_uint8_frames
from .video_folder import (
    ASPECT_BUCKETS,
    CaptionedBatch,
    DataWarning,
    IMAGE_EXTENSIONS,
    VideoFolderDataset,
    aspect_bucket,
    read_captions,
)

__all__ = [
    "ASPECT_BUCKETS", "CaptionedBatch", "CaptionedImageDataset", "DataWarning", "ShapesBatch", "ShapesVideoDataset",
    "VideoFolderDataset", "aspect_bucket", "data_label", "is_image_dataset", "is_shapes", "load_dataset", "read_captions",
    "to_model_range", "to_uint8_frames",
]


def is_shapes(spec: str | os.PathLike) -> bool:
    """Whether a `--data` spec names the built-in Shapes world."""
    return str(spec).strip().lower() == "shapes"


def data_label(spec: str | os.PathLike) -> str:
    """What a model trained on `spec` records as `trained_on`: the Shapes world's version, or
    the real dataset's folder name (which turns off the Shapes-vocabulary warning)."""
    from ..pipelines import SHAPES_WORLD

    return SHAPES_WORLD if is_shapes(spec) else Path(spec).name


def is_image_dataset(path: str | os.PathLike) -> bool:
    """Whether every path in the dataset's caption file names an image (by its extension)."""
    rows = read_captions(path).rows
    return bool(rows) and all(Path(r.path).suffix.lower() in IMAGE_EXTENSIONS for r in rows)


def load_dataset(
    spec: str | os.PathLike = "shapes",
    *,
    batch_size: int = 8,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    size: int = DEFAULT_SIZE,
    frames: int = EVENT_FRAMES,
    fps: float = FPS,
    **options,
):
    """The dataset a spec names (see the module docstring). `options` go to the real-data
    datasets (e.g. `short="loop"`, `allow_empty_captions=True`). The Shapes world renders at
    its own 8 fps and is already different on every rank, so it ignores `fps` and `world_size`;
    image datasets ignore `frames` and `fps` (T = 1)."""
    if is_shapes(spec):
        if options:
            raise ValueError(f"the Shapes world takes no options {sorted(options)}")
        return ShapesVideoDataset(batch_size=batch_size, seed=seed, rank=rank, size=size, frames=frames)
    path = Path(spec)
    if not path.exists():
        raise FileNotFoundError(f"no dataset {str(spec)!r}: give 'shapes', a folder with captions.csv / captions.jsonl, or such a file")
    common = dict(batch_size=batch_size, seed=seed, rank=rank, world_size=world_size, size=size)
    if is_image_dataset(path):
        return CaptionedImageDataset(path, **common, **options)
    return VideoFolderDataset(path, **common, frames=frames, fps=fps, **options)
