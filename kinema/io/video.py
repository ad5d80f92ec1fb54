"""Video files in and out.

One in-memory type, `Video` (uint8 frames `(T, H, W, 3)` + fps), and one writer,
`VideoWriter`, that streams chunks of frames to a file, so a long film never has to sit in
memory as mp4, webm, npy or a PNG folder (a GIF and a frame strip gather their frames until
the writer closes). `write_video` is just a writer fed a whole clip; `read_video` reads
every format back (a frame strip only when kinema wrote it).

The format comes from the path:

| path                          | format                                                        |
| ----------------------------- | ------------------------------------------------------------- |
| `x.mp4`                       | H.264 (libx264, yuv420p, crf 15): lossy; H and W must be even  |
| `x.webm`                      | VP9 (libvpx-vp9, crf 20, constant quality): lossy              |
| `x.gif`                       | GIF, a palette per frame: exact for ≤ 256 colours per frame    |
|                               | and up to 100 fps; the fps rides in a GIF comment              |
| `x.npy`                       | raw uint8 `(T, H, W, 3)`: exact; fps is not stored (reads 8.0) |
| `x/`, `x` (no suffix), a dir  | a folder `frame_00000.png`, …: exact; fps is not stored        |
| `x.png`                       | a frame strip (contact sheet) for eyes; reads back exactly     |

Every write is atomic: the file or folder appears whole under its name, or not at all. A
PNG folder replaces an existing folder only if that holds nothing but frames (an earlier
PNG-folder video); any other folder, or a file, is refused with a ValueError.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import re
import struct
from contextlib import ExitStack
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, BinaryIO, Protocol

import numpy as np
from PIL import Image, PngImagePlugin

from kinema.fsutil import atomic_dir, atomic_path

if TYPE_CHECKING:
    import av
    from av.video.stream import VideoStream

DEFAULT_FPS = 8.0
SUPPORTED_FORMATS = (".mp4", ".webm", ".gif", ".npy", ".png", "folder of PNGs (no suffix or a directory)")

# Quality settings. crf 15 keeps flat-colour shapes within a few grey levels of the source;
# "fast" is a good speed/size trade for clips this small.
MP4_CRF = 15
MP4_PRESET = "fast"
WEBM_CRF = 20

# Frame strip layout.
STRIP_COLUMNS = 16
STRIP_SEPARATOR = 2  # pixels between tiles
STRIP_SEPARATOR_COLOUR = (255, 255, 255)
# Frames are upscaled (nearest) by the largest whole factor that keeps a tile's longer side
# within this many pixels; a frame already larger stays at 1x.
STRIP_MIN_TILE = 128
STRIP_METADATA_KEY = "kinema-strip"
_STRIP_COUNTS = ("frames", "height", "width", "columns", "scale", "separator")  # whole numbers in the layout

FRAME_NAME = "frame_{:05d}.png"
FRAME_PATTERN = re.compile(r"frame_(\d+)\.png")  # FRAME_NAME's files: a sixth digit appears at frame 100 000

# A GIF's delays are whole centiseconds, so 8 fps (12.5 cs) cannot be stored as delays;
# kinema writes the rate into the GIF's comment under this key, and reads it back.
GIF_FPS_KEY = "kinema_fps"


def _check_fps(fps: object, what: str = "fps") -> float:
    """`fps` as a float: any finite positive real number (int, float, Fraction, numpy), not a bool."""
    if isinstance(fps, bool) or not isinstance(fps, numbers.Real) or not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"{what} must be a positive number, got {fps!r}")
    return float(fps)


@dataclass
class Video:
    """A clip: uint8 RGB frames `(T, H, W, 3)` and the rate they play at."""

    frames: np.ndarray
    fps: float = DEFAULT_FPS

    def __post_init__(self) -> None:
        frames = self.frames
        if not isinstance(frames, np.ndarray):
            raise ValueError(f"Video frames must be a numpy array, got {type(frames).__name__}")
        if frames.dtype != np.uint8:
            raise ValueError(f"Video frames must be uint8, got {frames.dtype}; convert with (x * 255).round().clip(0, 255).astype(np.uint8)")
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"Video frames must have shape (T, H, W, 3), got {frames.shape}")
        if frames.shape[0] < 1 or frames.shape[1] < 1 or frames.shape[2] < 1:
            raise ValueError(f"Video needs at least one frame of at least 1x1 pixels, got shape {frames.shape}")
        self.fps = _check_fps(self.fps, "Video fps")

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        return int(self.frames.shape[1]), int(self.frames.shape[2])

    @property
    def duration(self) -> float:
        """Seconds of playback."""
        return self.num_frames / self.fps

    def __len__(self) -> int:
        return self.num_frames

    def save(self, path: str | os.PathLike) -> Path:
        """Write the clip; the format comes from the path (see the module docstring)."""
        return write_video(self, path)

    def strip(
        self,
        path: str | os.PathLike,
        *,
        every: int = 1,
        columns: int = STRIP_COLUMNS,
        scale: int | None = None,
    ) -> Path:
        """Write a contact sheet of every `every`-th frame to a `.png`."""
        return write_strip(self, path, every=every, columns=columns, scale=scale)

    @classmethod
    def concat(cls, videos: list[Video]) -> Video:
        """Join clips end to end; they must share size and fps."""
        if not videos:
            raise ValueError("Video.concat needs at least one video")
        first = videos[0]
        for v in videos[1:]:
            if v.size != first.size:
                raise ValueError(f"Video.concat needs clips of one size, got {first.size} and {v.size}")
            if not math.isclose(v.fps, first.fps):
                raise ValueError(f"Video.concat needs clips of one fps, got {first.fps} and {v.fps}")
        return cls(np.concatenate([v.frames for v in videos]), fps=first.fps)


# --------------------------------------------------------------------------- format


def _format_of(path: str | os.PathLike) -> str:
    """'mp4' | 'webm' | 'gif' | 'npy' | 'strip' | 'folder', or a ValueError naming the suffix."""
    text = os.fspath(path)
    p = Path(text)
    if text.endswith(("/", os.sep)) or p.is_dir() or p.suffix == "":
        return "folder"
    suffix = p.suffix.lower()
    formats = {".mp4": "mp4", ".webm": "webm", ".gif": "gif", ".npy": "npy", ".png": "strip"}
    if suffix not in formats:
        raise ValueError(f"unsupported video extension {suffix!r} in {text!r}; supported: {', '.join(SUPPORTED_FORMATS)}")
    return formats[suffix]


def _check_chunk(frames: np.ndarray) -> np.ndarray:
    """Accept (T, H, W, 3) or a single (H, W, 3) frame, uint8."""
    if not isinstance(frames, np.ndarray):
        raise ValueError(f"frames must be a numpy array, got {type(frames).__name__}")
    if frames.ndim == 3:
        frames = frames[None]
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 (T, H, W, 3) or (H, W, 3), got {frames.dtype} {frames.shape}")
    return np.ascontiguousarray(frames)


def stream_fps(stream: VideoStream) -> float:
    """Frames per second of a PyAV video stream, 0.0 when its header does not say.

    average_rate (frames over duration) is the rate the decoded frames play at, so it comes
    first. guessed_rate (FFmpeg's av_guess_frame_rate, mostly r_frame_rate: the lowest rate
    whose ticks every timestamp falls on) and base_rate stand in when there is no average;
    for constant-rate video they all agree, for variable-rate video only the average keeps
    the duration right."""
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else 0.0


def _av_rate(fps: float) -> Fraction:
    # NTSC-style rates (23.976...) become 24000/1001 rather than a huge fraction.
    return Fraction(fps).limit_denominator(1001)


# --------------------------------------------------------------------------- sinks
#
# A sink encodes frames into an already-reserved temporary path; VideoWriter owns the
# atomic rename. `close` finishes the file, `abort` releases handles without finishing.


class _Sink(Protocol):
    def write(self, frames: np.ndarray) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...


class _NpySink:
    """Raw frames streamed after a fixed-size header that is rewritten with T at close.

    The header is a valid `.npy` v1.0 header padded to a fixed 128 bytes, so rewriting it
    never moves the data and memory stays flat however long the film is."""

    HEADER_BYTES = 128

    def __init__(self, path: Path, height: int, width: int) -> None:
        self.height, self.width, self.count = height, width, 0
        self.file: BinaryIO = open(path, "wb")
        self.file.write(self._header(0))

    def _header(self, num_frames: int) -> bytes:
        magic = b"\x93NUMPY\x01\x00"
        body_len = self.HEADER_BYTES - len(magic) - 2
        shape = (num_frames, self.height, self.width, 3)
        body = "{'descr': '|u1', 'fortran_order': False, 'shape': %r, }" % (shape,)
        if len(body) + 1 > body_len:
            raise ValueError(f"video too large for a .npy header: {shape}")
        return magic + struct.pack("<H", body_len) + (body.ljust(body_len - 1) + "\n").encode("latin1")

    def write(self, frames: np.ndarray) -> None:
        self.file.write(memoryview(frames).cast("B"))
        self.count += len(frames)

    def close(self) -> None:
        self.file.seek(0)
        self.file.write(self._header(self.count))
        self.file.close()

    def abort(self) -> None:
        self.file.close()


class _FolderSink:
    """One lossless PNG per frame."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.count = folder, 0

    def write(self, frames: np.ndarray) -> None:
        for frame in frames:
            Image.fromarray(frame).save(self.folder / FRAME_NAME.format(self.count))
            self.count += 1

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


class _AvSink:
    """mp4 / webm through PyAV, encoded frame by frame."""

    def __init__(self, path: Path, fmt: str, fps: float, height: int, width: int) -> None:
        if fmt == "mp4" and (height % 2 or width % 2):
            raise ValueError(
                f"H.264 (.mp4, yuv420p) needs even height and width, got {height}x{width}; "
                "crop or pad the frames, or save as .webm, .npy or a PNG folder"
            )
        import av  # PyAV (FFmpeg) loads only when a video file is written: training never needs it

        self.av, self.fmt = av, fmt
        self.container = av.open(str(path), mode="w", options={"movflags": "+faststart"} if fmt == "mp4" else {})
        try:
            rate = _av_rate(fps)
            if fmt == "mp4":
                stream = self.container.add_stream("libx264", rate=rate, options={"crf": str(MP4_CRF), "preset": MP4_PRESET})
                stream.pix_fmt = "yuv420p"
            elif fmt == "webm":
                # b=0 with a crf is libvpx's constant-quality mode; row-mt and cpu-used keep it quick.
                options = {"crf": str(WEBM_CRF), "b": "0", "deadline": "good", "cpu-used": "4", "row-mt": "1"}
                stream = self.container.add_stream("libvpx-vp9", rate=rate, options=options)
                stream.pix_fmt = "yuv420p"
            stream.width, stream.height = width, height
            self.stream, self.time_base, self.count = stream, Fraction(1) / rate, 0
        except Exception:
            self.container.close()
            raise

    def write(self, frames: np.ndarray) -> None:
        for frame in frames:
            av_frame = self.av.VideoFrame.from_ndarray(frame, format="rgb24")
            av_frame.pts, av_frame.time_base = self.count, self.time_base
            self.container.mux(self.stream.encode(av_frame))
            self.count += 1

    def close(self) -> None:
        self.container.mux(self.stream.encode(None))  # flush delayed frames
        self.container.close()

    def abort(self) -> None:
        try:
            self.container.close()
        except self.av.FFmpegError:
            pass  # the file is being thrown away; its trailer does not matter


def _palettize(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) uint8 indices and their (N, 3) RGB palette, N <= 256.

    Frames with at most 256 colours (the Shapes world: flat fills) get an exact palette;
    others are median-cut quantized without dithering, which keeps flat areas flat."""
    rgb = frame.astype(np.uint32)
    keys = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    colours, indices = np.unique(keys.ravel(), return_inverse=True)
    if len(colours) <= 256:
        r, g, b = colours >> 16, (colours >> 8) & 255, colours & 255
        rgb_palette = np.stack([r, g, b], axis=1)
        indices = indices.reshape(frame.shape[:2])
    else:
        quantized = Image.fromarray(frame).quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        indices = np.asarray(quantized)
        rgb_palette = np.asarray(quantized.getpalette("RGB"), dtype=np.uint32).reshape(-1, 3)
    return indices.astype(np.uint8), rgb_palette.astype(np.uint8)


class _GifSink:
    """GIF through Pillow, a palette per frame. Pillow writes a GIF in one call, so every
    (palettized, 1 byte per pixel) frame is kept until close: memory grows with the film.
    ffmpeg's streaming gif encoder was tried and decodes some palettes to wrong colours.

    Pillow merges a frame identical to the one before it into one longer frame, and delays
    are whole centiseconds; the fps in the comment lets `read_video` undo both."""

    def __init__(self, path: Path, fps: float) -> None:
        self.path, self.fps = path, fps
        self.images: list[Image.Image] = []

    def write(self, frames: np.ndarray) -> None:
        for frame in frames:
            indices, palette = _palettize(frame)
            image = Image.fromarray(indices, mode="P")
            image.putpalette(palette.ravel().tolist())
            self.images.append(image)

    def close(self) -> None:
        first, *rest = self.images
        # GIF delays are whole centiseconds: round the running clock, not each delay, so
        # 8 fps alternates 12 and 13 cs and keeps its average rate
        ticks = [round(i * 100 / self.fps) for i in range(len(self.images) + 1)]
        durations = [10 * (b - a) for a, b in zip(ticks, ticks[1:])]
        first.save(
            self.path, format="GIF", save_all=True, append_images=rest, duration=durations, loop=0, optimize=False, disposal=1,
            comment=json.dumps({GIF_FPS_KEY: self.fps}),
        )

    def abort(self) -> None:
        self.images.clear()


class _StripSink:
    """Accumulates frames, lays them out at close: the sheet's size depends on T, so a
    strip is the one format whose memory grows with length (it is meant for short clips)."""

    def __init__(self, path: Path, fps: float, every: int, columns: int, scale: int | None) -> None:
        self.path, self.fps, self.every, self.columns, self.scale = path, fps, every, columns, scale
        self.kept: list[np.ndarray] = []
        self.count = 0

    def write(self, frames: np.ndarray) -> None:
        for frame in frames:
            if self.count % self.every == 0:
                self.kept.append(frame)
            self.count += 1

    def close(self) -> None:
        _save_strip(np.stack(self.kept), self.path, fps=self.fps / self.every, columns=self.columns, scale=self.scale)

    def abort(self) -> None:
        self.kept.clear()


def _strip_layout(num_frames: int, height: int, width: int, columns: int, scale: int | None) -> tuple[int, int]:
    """(columns, scale) a strip of these frames is laid out with."""
    columns = max(1, min(columns, num_frames))
    if scale is None:
        scale = max(1, STRIP_MIN_TILE // max(height, width))
    return columns, scale


def _tile_size(layout: dict) -> tuple[int, int]:
    """(height, width) of one upscaled tile of a strip."""
    return layout["height"] * layout["scale"], layout["width"] * layout["scale"]


def _sheet_size(layout: dict) -> tuple[int, int]:
    """(height, width) of the sheet a strip layout needs."""
    (th, tw), sep = _tile_size(layout), layout["separator"]
    columns, rows = min(layout["columns"], layout["frames"]), math.ceil(layout["frames"] / layout["columns"])
    return rows * th + (rows - 1) * sep, columns * tw + (columns - 1) * sep


def _tile(sheet: np.ndarray, i: int, layout: dict) -> np.ndarray:
    """The view of frame i's tile in a strip sheet."""
    (th, tw), sep = _tile_size(layout), layout["separator"]
    r, c = divmod(i, layout["columns"])
    return sheet[r * (th + sep) : r * (th + sep) + th, c * (tw + sep) : c * (tw + sep) + tw]


def _save_strip(frames: np.ndarray, path: Path, *, fps: float, columns: int, scale: int | None) -> None:
    t, h, w, _ = frames.shape
    columns, scale = _strip_layout(t, h, w, columns, scale)
    layout = {"frames": t, "height": h, "width": w, "columns": columns, "scale": scale, "separator": STRIP_SEPARATOR, "fps": fps}
    sheet = np.empty((*_sheet_size(layout), 3), np.uint8)
    sheet[:] = STRIP_SEPARATOR_COLOUR
    for i, frame in enumerate(frames):
        _tile(sheet, i, layout)[:] = frame.repeat(scale, axis=0).repeat(scale, axis=1)
    # The layout rides along in a text chunk so read_video can cut the tiles back out exactly.
    info = PngImagePlugin.PngInfo()
    info.add_text(STRIP_METADATA_KEY, json.dumps(layout))
    Image.fromarray(sheet).save(path, format="PNG", pnginfo=info)


# --------------------------------------------------------------------------- writer


class VideoWriter:
    """Stream frames to a video file chunk by chunk; the file appears only on success.

        with VideoWriter("film.mp4", fps=8) as writer:
            for chunk in chunks:          # each uint8 (T, H, W, 3)
                writer.write(chunk)

    mp4 / webm / npy / PNG folders keep memory flat however long the film; a GIF keeps every
    frame (1 byte per pixel) and a `.png` strip every tile until close, so their memory grows
    with the film. If the block raises, or nothing was written,
    nothing appears at `path` (an existing file there is left as it was)."""

    def __init__(
        self,
        path: str | os.PathLike,
        fps: float = DEFAULT_FPS,
        size: tuple[int, int] | None = None,
        *,
        strip_every: int = 1,
        strip_columns: int = STRIP_COLUMNS,
        strip_scale: int | None = None,
    ) -> None:
        self.format = _format_of(path)
        self.path = Path(path)
        fps = _check_fps(fps)
        if strip_every < 1 or strip_columns < 1 or (strip_scale is not None and strip_scale < 1):
            raise ValueError("strip_every, strip_columns and strip_scale must be at least 1")
        self.fps, self.size = fps, size
        self.strip_options = (strip_every, strip_columns, strip_scale)
        self.frames_written = 0
        if self.format == "folder":
            _check_folder_target(self.path)
        self._stack = ExitStack()
        enter = atomic_dir if self.format == "folder" else atomic_path
        self._tmp: Path = self._stack.enter_context(enter(self.path))
        self._sink: _Sink | None = None
        self._closed = False

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def _open_sink(self, height: int, width: int) -> _Sink:
        if self.format == "npy":
            return _NpySink(self._tmp, height, width)
        if self.format == "folder":
            return _FolderSink(self._tmp)
        if self.format == "strip":
            return _StripSink(self._tmp, self.fps, *self.strip_options)
        if self.format == "gif":
            return _GifSink(self._tmp, self.fps)
        return _AvSink(self._tmp, self.format, self.fps, height, width)

    def write(self, frames: np.ndarray) -> None:
        """Append uint8 frames `(T, H, W, 3)` (or one `(H, W, 3)` frame)."""
        if self._closed:
            raise ValueError(f"VideoWriter for {self.path} is closed")
        frames = _check_chunk(frames)
        if len(frames) == 0:
            return
        size = (int(frames.shape[1]), int(frames.shape[2]))
        if self.size is None:
            self.size = size
        elif tuple(self.size) != size:
            raise ValueError(f"frame size changed: writer is {tuple(self.size)}, chunk is {size}")
        if self._sink is None:
            self._sink = self._open_sink(*size)
        self._sink.write(frames)
        self.frames_written += len(frames)

    def close(self) -> Path:
        """Finish the file and move it into place; returns the final path."""
        if self._closed:
            return self.path
        if self._sink is None:
            self.abort()
            raise ValueError(f"no frames were written to {self.path}; nothing saved")
        try:
            self._sink.close()
            if self.format == "folder":
                _check_folder_target(self.path)  # again: a long film may have streamed for minutes
        except BaseException as err:
            self.abort(err)
            raise
        self._closed = True
        self._stack.close()  # the atomic rename
        return self.path

    def abort(self, err: BaseException | None = None) -> None:
        """Drop everything written so far; the target is left untouched."""
        if self._closed:
            return
        self._closed = True
        if self._sink is not None:
            self._sink.abort()
        # Feed an exception into the atomic context so it deletes the temp instead of renaming.
        err = err or RuntimeError("write aborted")
        self._stack.__exit__(type(err), err, err.__traceback__)


def _check_folder_target(path: Path) -> None:
    """Refuse a PNG-folder target that is not ours to replace: a file, or a folder holding
    anything but frames a previous PNG-folder video wrote (the swap removes the old folder
    whole, so `-o ~/Videos` must not get that far)."""
    if not path.exists():
        return
    if not path.is_dir():
        raise ValueError(f"{path} is a file, not a folder: a PNG-folder video needs a new folder, or give a video file name such as {path}.mp4")
    others = sorted(p.name for p in path.iterdir() if not (FRAME_PATTERN.fullmatch(p.name) and p.is_file() and not p.is_symlink()))
    if others:
        shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
        raise ValueError(
            f"{path} is a folder that holds other things than PNG frames ({shown}); a PNG-folder video "
            f"replaces only a folder of {FRAME_NAME.format(0)}, ... files: give a new folder, or a file such as {path / 'out.mp4'}"
        )


def write_video(video: Video, path: str | os.PathLike) -> Path:
    """Write `video` to `path` atomically; the format comes from the extension."""
    if not isinstance(video, Video):
        raise ValueError(f"write_video expects a kinema.io.Video, got {type(video).__name__}")
    with VideoWriter(path, fps=video.fps, size=video.size) as writer:
        writer.write(video.frames)
    return Path(path)


def write_strip(
    video: Video,
    path: str | os.PathLike,
    *,
    every: int = 1,
    columns: int = STRIP_COLUMNS,
    scale: int | None = None,
) -> Path:
    """A contact sheet of every `every`-th frame, `columns` per row, tiles upscaled by
    `scale` (default: the largest whole factor that keeps a tile within 128 px, at least 1),
    2 px white separators."""
    if Path(path).suffix.lower() != ".png":
        raise ValueError(f"a frame strip is a .png file, got {os.fspath(path)!r}")
    with VideoWriter(path, fps=video.fps, strip_every=every, strip_columns=columns, strip_scale=scale) as writer:
        writer.write(video.frames)
    return Path(path)


# --------------------------------------------------------------------------- reading


def read_video(path: str | os.PathLike) -> Video:
    """Read any format `write_video` writes. Missing path → FileNotFoundError; a file that
    cannot be decoded → ValueError with a one-line reason."""
    fmt = _format_of(path)
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no video at {path}")
    if fmt == "npy":
        return _read_npy(path)
    if fmt == "folder":
        return _read_folder(path)
    if fmt == "strip":
        return _read_strip(path)
    return _read_av(path)


def _read_npy(path: Path) -> Video:
    try:
        frames = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise ValueError(f"cannot read {path} as .npy: {err}") from None
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"{path} holds {frames.dtype} {frames.shape}; a video .npy is uint8 (T, H, W, 3)")
    return Video(frames)


def _read_folder(path: Path) -> Video:
    numbered = sorted((int(m[1]), f) for f in path.glob("frame_*.png") if (m := FRAME_PATTERN.fullmatch(f.name)))
    if not numbered:
        raise ValueError(f"no frames named like {FRAME_NAME.format(0)} in folder {path}")
    frames = []
    for _, f in numbered:
        try:
            with Image.open(f) as im:
                frames.append(np.asarray(im.convert("RGB")))
        except (OSError, ValueError) as err:
            raise ValueError(f"cannot read frame {f}: {err}") from None
    if len({fr.shape for fr in frames}) > 1:
        raise ValueError(f"frames in {path} differ in size: {sorted({fr.shape[:2] for fr in frames})}")
    return Video(np.stack(frames))


def _read_strip(path: Path) -> Video:
    try:
        with Image.open(path) as im:
            layout_text = im.info.get(STRIP_METADATA_KEY)
            sheet = np.asarray(im.convert("RGB"))
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read {path} as PNG: {err}") from None
    if layout_text is None:
        raise ValueError(
            f"{path} is not a kinema frame strip (no layout metadata); a single .png is read only "
            "when kinema wrote it — for a folder of frames pass the folder"
        )
    layout = _strip_layout_of(layout_text, sheet.shape, path)
    # nearest upscale: any pixel of a tile's block is the original
    frames = [_tile(sheet, i, layout)[:: layout["scale"], :: layout["scale"]] for i in range(layout["frames"])]
    return Video(np.stack(frames), fps=layout["fps"])


def _strip_layout_of(text: str, sheet_shape: tuple[int, ...], path: Path) -> dict:
    """The layout a strip's metadata records, checked against the sheet it came with."""

    def broken(reason: str) -> ValueError:
        return ValueError(f"{path} has broken kinema frame strip metadata ({reason}); write the strip again with Video.strip")

    try:
        layout = json.loads(text)
    except json.JSONDecodeError:
        raise broken("not JSON") from None
    if not isinstance(layout, dict):
        raise broken("not a JSON object")
    if missing := [k for k in (*_STRIP_COUNTS, "fps") if k not in layout]:
        raise broken(f"no {', '.join(missing)}")
    least = {"separator": 0}  # every other count is at least 1
    if bad := [k for k in _STRIP_COUNTS if type(layout[k]) is not int or layout[k] < least.get(k, 1)]:
        raise broken(f"{', '.join(bad)} must be whole numbers of at least 1 (separator 0)")
    try:
        layout["fps"] = _check_fps(layout["fps"])
    except ValueError as err:
        raise broken(str(err)) from None
    if any(need > have for need, have in zip(_sheet_size(layout), sheet_shape)):
        raise broken(f"its tiles do not fit the {sheet_shape[1]}x{sheet_shape[0]} image")
    return layout


def _read_av(path: Path) -> Video:
    """mp4 / webm / gif through PyAV. A GIF frame lasts its own delay: it is repeated to fill
    that time at a constant rate (`_gif_repeats`), which brings back the frames Pillow merged."""
    import av

    try:
        with av.open(str(path), mode="r") as container:
            if not container.streams.video:
                raise ValueError(f"{path} has no video stream")
            stream = container.streams.video[0]
            is_gif = container.format.name == "gif"
            frames, delays = [], []
            for frame in container.decode(stream):
                frames.append(frame.to_ndarray(format="rgb24"))
                if is_gif:
                    delays.append(frame_seconds(frame))
            fps = _gif_fps(container.metadata.get("comment"), delays) if is_gif else (stream_fps(stream) or DEFAULT_FPS)
    except av.FFmpegError as err:
        reason = getattr(err, "strerror", None) or str(err)
        raise ValueError(f"cannot decode {path}: {reason}") from None
    if not frames:
        raise ValueError(f"{path} has no decodable video frames")
    if is_gif:
        return Video(np.repeat(np.stack(frames), _gif_repeats(delays, fps), axis=0), fps=fps)
    return Video(np.stack(frames), fps=fps)


# --------------------------------------------------------------------------- GIF timing
#
# GIF has no frame rate: each frame has a delay in whole centiseconds. read_video turns that
# into a constant-rate clip, and the datasets probe a GIF through the same two functions.


def frame_seconds(frame_or_packet: av.VideoFrame | av.Packet) -> float:
    """Seconds a decoded frame (or its packet) stays on screen by its own duration: a GIF
    frame's delay; 0.0 when it records none."""
    duration, time_base = frame_or_packet.duration, frame_or_packet.time_base
    return float(duration * time_base) if duration and time_base else 0.0


def _gif_fps(comment: str | bytes | None, delays: list[float]) -> float:
    """The rate a GIF is read at: the one kinema recorded in its comment, else the rate of its
    shortest frame (`delays` in seconds), so that every frame shows at least once."""
    try:
        return _check_fps(json.loads(comment)[GIF_FPS_KEY])
    except (TypeError, ValueError, KeyError, IndexError):  # no comment, or not kinema's
        shortest = min((d for d in delays if d > 0), default=0.0)
        return 1.0 / shortest if shortest else DEFAULT_FPS


def _gif_repeats(delays: list[float], fps: float) -> np.ndarray:
    """How many frames at `fps` each GIF frame (delays in seconds) stays on screen, at least one.

    The running clock is rounded, not each delay: kinema's writer rounds its clock to whole
    centiseconds, which moves a frame's start by under half a frame when fps is below 100,
    so rounding the clock back to frames at `fps` lands every frame on its own index, however
    many frames one delay merged."""
    clock = np.round(np.concatenate([[0.0], np.cumsum(delays)]) * fps)
    return np.maximum(np.diff(clock), 1).astype(np.int64)


def probe_gif(path: str | os.PathLike) -> tuple[float, int]:
    """(fps, number of frames) `read_video` gives a GIF, from its frame delays alone (nothing
    is decoded). Raises what `av.open` and demuxing raise for a broken file."""
    import av

    with av.open(os.fspath(path), mode="r") as container:
        stream = container.streams.video[0]
        delays = [frame_seconds(packet) for packet in container.demux(stream) if packet.size]  # the last, empty, packet flushes
        fps = _gif_fps(container.metadata.get("comment"), delays)
    return fps, int(_gif_repeats(delays, fps).sum())
