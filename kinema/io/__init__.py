"""Video files in and out: mp4, webm, gif, npy, a folder of PNGs, and a PNG frame strip."""

from kinema.io.video import (
    DEFAULT_FPS,
    SUPPORTED_FORMATS,
    Video,
    VideoWriter,
    read_video,
    write_strip,
    write_video,
)

__all__ = [
    "DEFAULT_FPS",
    "SUPPORTED_FORMATS",
    "Video",
    "VideoWriter",
    "read_video",
    "write_strip",
    "write_video",
]
