"""Captioned real videos (WebVid style) as an exactly resumable, sharded training set.

A dataset is a folder of media files and one caption file whose paths are relative to it:

    clips/captions.csv     path,caption                      (a header row; more columns are ignored)
                           dogs/0001.mp4,"a dog runs on a beach"
    clips/captions.jsonl   {"path": "dogs/0001.mp4", "caption": "a dog runs on a beach"}

Every file is probed once, at construction (its header only: size, rate, duration; no
frame is decoded), and sorted into a *bucket*: its aspect ratio (the nearest of
`ASPECT_BUCKETS`, read with the pixel aspect ratio) and whether it is long enough for one
clip of `frames` frames at `fps`. A batch draws from one bucket, so its clips are
homogeneous: the same source shape (it matters once outputs are not square crops) and
never a mix of whole clips and looped short ones.

Determinism and sharding: batch `i` of rank `r` is a pure function of
(seed, rank, world_size, i), whatever batches the process drew before. Epoch `e` shuffles
each bucket with `default_rng([seed, e, bucket])`, gives rank `r` the slice
`[r::world_size]`, and cuts it into batches; the epoch's batches are then ordered by
`default_rng([seed, e])`. Clip `j` of the batch has generators of its own: one for the
order its replacements are tried in, and one per file tried for the clip's start time. So
a resumed run sees exactly the batches of an unbroken one. A bucket whose size is not a
multiple of world_size x batch_size is topped up with more shuffles of itself, so some of
its videos appear more than once in an epoch, on one rank or on several; otherwise no two
ranks share a video within an epoch.

Clips: `frames` timestamps `start + k / fps` are read from the stream's own clock (the frame
on screen at each time), so a 30 fps source and a 24 fps one both give true 8 fps motion;
a source slower than `fps` repeats frames. Decoding seeks to the key frame before `start`
and stops after the last frame needed: a long video is never read whole. Each frame is
scaled (shorter side to `size`, box-filtered by PyAV's swscale) and centre-cropped to
`size` x `size`, then mapped to the float `[-1, 1]` `[B, 3, T, H, W]` of the Shapes world.

Videos shorter than a clip are skipped by default (`short="skip"`, counted in
`stats["skipped_too_short"]`): a looped clip shows a jump cut and a padded one a frozen
tail, and both teach the model motion that does not happen. `short="loop"` or
`short="pad"` keeps them, in buckets of their own.

Robustness: a file that is missing, empty, not a video, or fails while decoding is skipped
and counted, with one warning the first time it fails; its place in the batch goes to
another video of the same bucket, or when none of those decodes, to one of the same length
kind (whole or short clip) from another bucket, then to any (chosen deterministically, so
batches stay pure functions of their index). The one exception: a file that decodes at some
clip starts and fails at others (cut short behind a whole header) is skipped from its first
failure on, so batches after that depend on whether this process saw it fail. If no file
is usable the constructor raises a ValueError that says why.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np
import torch

from ..batch import Batch
from ..io.video import frame_seconds, probe_gif, stream_fps
from ..world.spec import DEFAULT_SIZE, EVENT_FRAMES, FPS
from .shapes import to_model_range

if TYPE_CHECKING:
    from av.container import InputContainer
    from av.video.frame import VideoFrame
    from av.video.stream import VideoStream

CAPTION_FILES = ("captions.csv", "captions.jsonl")
VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".mov", ".avi", ".m4v", ".gif", ".mpg", ".mpeg", ".ts", ".flv", ".ogv")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")

# Source aspect ratios (width / height) a video is snapped to, nearest in log scale.
ASPECT_BUCKETS: dict[str, float] = {
    "9:16": 9 / 16, "3:4": 3 / 4, "1:1": 1.0, "4:3": 4 / 3, "3:2": 3 / 2, "16:9": 16 / 9, "21:9": 21 / 9,
}
SHORT_POLICIES = ("skip", "loop", "pad")
# The counters every dataset reports in `dataset.stats` (more appear as they happen: looped, padded).
STAT_KEYS = (
    "usable", "clips_served", "batches_served", "skipped_unreadable", "skipped_too_short", "skipped_no_caption",
    "failed_decoding", "caption_rows_malformed",
)
# Files of its own bucket tried in place of a clip that fails, before files of other buckets.
MAX_REPLACEMENTS = 64
# What a clip slot's generators are seeded with after (seed, rank, batch index, slot): the
# order replacements are tried in, or a clip start for the file tried at a given attempt.
_ORDER, _START = 0, 1


class DataWarning(UserWarning):
    """A media file was skipped (shown once per file)."""


def aspect_bucket(width: float, height: float) -> str:
    """The name of the `ASPECT_BUCKETS` entry nearest to width / height."""
    ratio = math.log(width / height)
    return min(ASPECT_BUCKETS, key=lambda name: abs(math.log(ASPECT_BUCKETS[name]) - ratio))


# --------------------------------------------------------------------------- captions


@dataclass
class CaptionRow:
    path: str  # as written in the caption file (relative to the root)
    caption: str
    line: int  # 1-based line in the caption file, for messages


@dataclass
class CaptionFile:
    root: Path  # the folder the paths are relative to
    file: Path
    rows: list[CaptionRow]
    malformed: list[int]  # lines that could not be read as a row (no path)


def find_caption_file(path: str | os.PathLike) -> Path:
    """The caption file for a folder (captions.csv or captions.jsonl in it) or the file itself."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such dataset folder or caption file: {path}")
    if path.is_dir():
        for name in CAPTION_FILES:
            if (path / name).is_file():
                return path / name
        raise ValueError(f"no captions file in {path}: add captions.csv (header 'path,caption') or captions.jsonl ({{\"path\": ..., \"caption\": ...}} per line)")
    if path.suffix.lower() not in (".csv", ".jsonl"):
        raise ValueError(f"{path} is not a caption file: give a folder, a .csv (header 'path,caption') or a .jsonl")
    return path


def read_captions(path: str | os.PathLike) -> CaptionFile:
    """Read a dataset's caption file. A row without a path is counted as malformed; a row with an
    empty caption is kept (the dataset decides what to do with it)."""
    file = find_caption_file(path)
    try:
        text = file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"cannot read caption file {file}: {err}") from None
    rows, malformed = [], []
    if file.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        fields = [f.strip().lower() for f in reader.fieldnames or []]
        if "path" not in fields or "caption" not in fields:
            raise ValueError(f"{file} needs a header row with columns 'path' and 'caption', got {reader.fieldnames}")
        reader.fieldnames = fields
        for record in reader:
            line = reader.line_num
            p = (record.get("path") or "").strip()
            if not p:
                malformed.append(line)
                continue
            rows.append(CaptionRow(p, (record.get("caption") or "").strip(), line))
    else:
        # read_text has made every line end "\n"; splitlines would also cut at U+2028 / U+0085,
        # which json.dumps(ensure_ascii=False) leaves raw inside strings
        for line, raw in enumerate(text.split("\n"), start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except json.JSONDecodeError:
                malformed.append(line)
                continue
            p = record.get("path") if isinstance(record, dict) else None
            if not isinstance(p, str) or not p.strip():
                malformed.append(line)
                continue
            caption = record.get("caption")
            rows.append(CaptionRow(p.strip(), caption.strip() if isinstance(caption, str) else "", line))
    return CaptionFile(file.parent, file, rows, malformed)


# --------------------------------------------------------------------------- probing


@dataclass
class MediaInfo:
    """What the header of one usable file says."""

    path: Path
    caption: str
    width: int  # display width (stored width x pixel aspect ratio)
    height: int
    fps: float = 0.0  # the stream's own rate (0 for images)
    duration: float = 0.0  # seconds (0 for images)
    bucket: str = ""  # aspect bucket name
    long_enough: bool = True

    @property
    def bucket_key(self) -> tuple[str, bool]:
        return (self.bucket, self.long_enough)


def _open(path: Path):
    import av

    return av.open(str(path), mode="r")


def _av_errors() -> tuple[type[BaseException], ...]:
    import av

    return (av.FFmpegError, OSError, ValueError, IndexError, ZeroDivisionError, EOFError, RuntimeError)


def check_file(path: Path) -> None:
    """ValueError with a short reason if `path` cannot be a media file at all."""
    if not path.exists():
        raise ValueError("missing file")
    if path.is_dir():
        raise ValueError("is a folder")
    if path.stat().st_size == 0:
        raise ValueError("empty file (0 bytes)")


def probe_video(path: Path) -> dict[str, Any]:
    """Header facts of a video file: width, height (display), fps, duration, stored size. Raises
    ValueError with a short reason when the file is not a usable video."""
    check_file(path)
    try:
        with _open(path) as container:
            stream = container.streams.video[0] if container.streams.video else None
            if stream is not None:
                width, height = stream.codec_context.width, stream.codec_context.height
                sar = stream.sample_aspect_ratio
                fps, duration = _stream_timing(container, stream, path)
    except _av_errors() as err:
        raise ValueError(f"cannot decode: {_reason(err)}") from None
    if stream is None:
        raise ValueError("no video stream")
    if not width or not height:
        raise ValueError("no frame size in the header")
    if not fps or not math.isfinite(fps):
        raise ValueError("no frame rate in the header")
    if not duration or duration <= 0 or not math.isfinite(duration):
        raise ValueError("no duration in the header")
    display_width = width * float(sar) if sar and float(sar) > 0 else width
    return {"width": max(1, round(display_width)), "height": height, "stored": (width, height), "fps": fps, "duration": duration}


def _stream_timing(container: InputContainer, stream: VideoStream, path: Path) -> tuple[float, float]:
    """(fps, seconds) of a video stream, as `kinema.io.read_video` would time it."""
    if container.format.name == "gif":  # no rate, a delay per frame: read_video's GIF timing
        fps, count = probe_gif(path)
        return fps, count / fps
    fps = stream_fps(stream)
    if stream.duration and stream.time_base:
        return fps, float(stream.duration * stream.time_base)
    if container.duration:
        return fps, container.duration / 1_000_000  # AV_TIME_BASE
    if stream.frames and fps:
        return fps, stream.frames / fps
    return fps, 0.0


def _reason(err: BaseException) -> str:
    text = getattr(err, "strerror", None) or str(err).strip() or type(err).__name__
    return text.splitlines()[0][:200]


def clip_span(frames: int, fps: float) -> float:
    """Seconds from the first to the last timestamp of a clip."""
    return (frames - 1) / fps


def is_long_enough(duration: float, source_fps: float, frames: int, fps: float) -> bool:
    """Whether a clip's last timestamp falls on a frame of the source (the last frame is on
    screen from duration - 1/source_fps)."""
    return duration - 1.0 / source_fps - clip_span(frames, fps) >= -1e-6


# --------------------------------------------------------------------------- batches


@dataclass
class CaptionedBatch(Batch):
    video: torch.Tensor  # [B, 3, T, H, W] float in [-1, 1]
    captions: list[str]
    index: int  # the batch index it was drawn for
    sources: list[tuple[str, float]] = field(default_factory=list)  # (path relative to root, start second) per clip


class CaptionedFolderDataset:
    """What captioned videos and captioned images share: captions, probing, buckets, the
    deterministic sharded batch plan, skipping and counting bad files. Subclasses say how to
    probe one file (`_probe`) and how to load one clip (`_load`)."""

    kind = "media"

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        batch_size: int = 8,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        size: int = DEFAULT_SIZE,
        allow_empty_captions: bool = False,
        start: int = 0,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size), got rank {rank} of world_size {world_size}")
        if size < 1:
            raise ValueError(f"size must be a positive number of pixels, got {size}")
        self.batch_size, self.seed, self.rank, self.world_size, self.size = batch_size, seed, rank, world_size, size
        self.allow_empty_captions = allow_empty_captions
        self.start = start
        self.stats: Counter[str] = Counter(dict.fromkeys(STAT_KEYS, 0))
        self.failures: dict[str, str] = {}  # relative path -> reason, for every file skipped
        self._warned: set[str] = set()

        captions = read_captions(path)
        self.root, self.caption_file = captions.root, captions.file
        self.stats["caption_rows_malformed"] = len(captions.malformed)
        records: list[MediaInfo] = []
        for row in captions.rows:
            if not row.caption and not allow_empty_captions:
                self.stats["skipped_no_caption"] += 1
                continue
            file = self.root / row.path
            try:
                info = self._probe(file, row.caption)
            except ValueError as err:
                self._fail(row.path, str(err))
                continue
            if info.long_enough or self._keeps_short:
                records.append(info)
            else:
                self.stats["skipped_too_short"] += 1
        if not records:
            raise ValueError(
                f"no usable {self.kind} in {path}: {self.stats['skipped_unreadable']} unreadable, "
                f"{self.stats['skipped_too_short']} too short, {self.stats['skipped_no_caption']} without a caption "
                f"(of {len(captions.rows)} rows in {captions.file.name})"
            )
        self.records = records
        buckets: dict[tuple[str, bool], list[int]] = {}
        for i, r in enumerate(records):
            buckets.setdefault(r.bucket_key, []).append(i)
        self.bucket_keys = sorted(buckets, key=lambda k: (k[0], not k[1]))
        self.buckets = [np.array(buckets[k]) for k in self.bucket_keys]
        self._long_enough = np.array([r.long_enough for r in records])
        self.stats["usable"] = len(records)
        # Each rank gets ceil(m / (world_size * batch_size)) batches of a bucket of m files per
        # epoch, the same count on every rank so ranks stay in step.
        self._batches_per_bucket = [max(1, math.ceil(len(b) / (world_size * batch_size))) for b in self.buckets]
        self.batches_per_epoch = sum(self._batches_per_bucket)
        self._plans: dict[int, list[tuple[int, np.ndarray]]] = {}

    # subclasses --------------------------------------------------------------

    _keeps_short = False

    def _probe(self, file: Path, caption: str) -> MediaInfo:
        raise NotImplementedError

    def _load(self, info: MediaInfo, rng: np.random.Generator) -> tuple[np.ndarray, float]:
        """uint8 frames (T, size, size, 3) of one clip and its start second; ValueError if unreadable."""
        raise NotImplementedError

    # bookkeeping -------------------------------------------------------------

    def _relative(self, file: Path) -> str:
        try:
            return str(file.relative_to(self.root))
        except ValueError:
            return str(file)

    def _fail(self, name: str, reason: str, counter: str = "skipped_unreadable") -> None:
        self.stats[counter] += 1
        self.failures[name] = reason
        if name not in self._warned:
            self._warned.add(name)
            warnings.warn(f"skipping {self.root / name}: {reason}", DataWarning, stacklevel=3)

    # the plan ----------------------------------------------------------------

    def epoch_plan(self, epoch: int) -> list[tuple[int, np.ndarray]]:
        """This rank's batches of one epoch: (bucket number, record indices) each."""
        plan = self._plans.get(epoch)
        if plan is None:
            plan = []
            per_rank = []
            for b, (members, count) in enumerate(zip(self.buckets, self._batches_per_bucket)):
                rng = np.random.default_rng([self.seed, epoch, b])
                need = count * self.world_size * self.batch_size
                # whole permutations until every rank has its batches (a small bucket repeats)
                order = np.concatenate([rng.permutation(members) for _ in range(math.ceil(need / len(members)))])[:need]
                mine = order[self.rank :: self.world_size]
                per_rank += [(b, mine[k * self.batch_size : (k + 1) * self.batch_size]) for k in range(count)]
            order = np.random.default_rng([self.seed, epoch]).permutation(len(per_rank))
            plan = [per_rank[k] for k in order]
            if len(self._plans) > 4:
                self._plans.clear()
            self._plans[epoch] = plan
        return plan

    def batch(self, index: int) -> CaptionedBatch:
        if index < 0:
            raise ValueError(f"batch index must be >= 0, got {index}")
        epoch, position = divmod(index, self.batches_per_epoch)
        bucket, members = self.epoch_plan(epoch)[position]
        clips, captions, sources = [], [], []
        for slot, record in enumerate(members):
            frames, start, info = self._clip(index, slot, int(record), bucket)
            clips.append(frames)
            captions.append(info.caption)
            sources.append((self._relative(info.path), start))
        self.stats["clips_served"] += len(clips)
        self.stats["batches_served"] += 1
        return CaptionedBatch(to_model_range(np.stack(clips)), captions, index, sources)

    def _rng(self, index: int, slot: int, *use: int) -> np.random.Generator:
        """A generator for one use in one clip slot of batch `index`: nothing drawn for another
        use, another slot or another batch shifts it."""
        return np.random.default_rng([self.seed, self.rank, index, slot, *use])

    def _clip(self, index: int, slot: int, record: int, bucket: int) -> tuple[np.ndarray, float, MediaInfo]:
        """Load the planned clip, or if its file fails, a replacement. The candidates' order and
        each candidate's clip start come from their own generators, so a file this process
        already saw fail is skipped without shifting what the next candidate draws: the outcome
        depends only on the slot, not on the batches drawn before."""
        candidates = self._replacements(record, bucket, self._rng(index, slot, _ORDER))
        for attempt, k in enumerate(candidates):
            info = self.records[k]
            name = self._relative(info.path)
            if name in self.failures:
                continue
            try:
                frames, start = self._load(info, self._rng(index, slot, _START, attempt))
            except ValueError as err:
                self._fail(name, str(err), "failed_decoding")
                continue
            return frames, start, info
        raise ValueError(f"no usable {self.kind} left in {self.root}: every file failed ({len(self.failures)} skipped); see the warnings above")

    def _replacements(self, record: int, bucket: int, rng: np.random.Generator) -> Iterator[int]:
        """The planned record; then up to MAX_REPLACEMENTS files of its bucket; then every file
        whose clips are of the same length kind (whole or short), so a batch of whole clips
        gets no looped one while another will do; then every file."""
        yield record
        yield from (int(k) for k in rng.permutation(self.buckets[bucket])[:MAX_REPLACEMENTS])
        everyone = rng.permutation(len(self.records))
        same_kind = self._long_enough[everyone] == self.bucket_keys[bucket][1]
        yield from (int(k) for k in np.concatenate([everyone[same_kind], everyone[~same_kind]]))

    def __iter__(self) -> Iterator[CaptionedBatch]:
        index = self.start
        while True:
            yield self.batch(index)
            index += 1

    def __len__(self) -> int:
        """Batches per epoch on this rank."""
        return self.batches_per_epoch

    def bucket_sizes(self) -> dict[str, int]:
        """Files per bucket, e.g. {'16:9': 120, '4:3 short': 3}."""
        return {f"{a}{'' if ok else ' short'}": len(m) for (a, ok), m in zip(self.bucket_keys, self.buckets)}


class VideoFolderDataset(CaptionedFolderDataset):
    """Random clips of captioned videos: `dataset.batch(i)` is batch i (any order, any time);
    iterating yields batches `start`, `start + 1`, ... Each batch is a `CaptionedBatch` with
    `video` [B, 3, frames, size, size] in [-1, 1] and one caption per clip."""

    kind = "videos"

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        batch_size: int = 8,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        size: int = DEFAULT_SIZE,
        frames: int = EVENT_FRAMES,
        fps: float = FPS,
        short: str = "skip",
        allow_empty_captions: bool = False,
        start: int = 0,
    ) -> None:
        if frames < 1:
            raise ValueError(f"frames must be at least 1, got {frames}")
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        if short not in SHORT_POLICIES:
            raise ValueError(f"short must be one of {', '.join(SHORT_POLICIES)}, got {short!r}")
        self.frames, self.fps, self.short = frames, float(fps), short
        self._keeps_short = short != "skip"
        super().__init__(
            path, batch_size=batch_size, seed=seed, rank=rank, world_size=world_size, size=size,
            allow_empty_captions=allow_empty_captions, start=start,
        )

    def _probe(self, file: Path, caption: str) -> MediaInfo:
        facts = probe_video(file)
        return MediaInfo(
            path=file, caption=caption, width=facts["width"], height=facts["height"], fps=facts["fps"],
            duration=facts["duration"], bucket=aspect_bucket(facts["width"], facts["height"]),
            long_enough=is_long_enough(facts["duration"], facts["fps"], self.frames, self.fps),
        )

    def _load(self, info: MediaInfo, rng: np.random.Generator) -> tuple[np.ndarray, float]:
        if info.long_enough:
            latest = info.duration - 1.0 / info.fps - clip_span(self.frames, self.fps)
            start = float(rng.uniform(0.0, max(latest, 0.0)))
            frames = read_clip(info.path, start + np.arange(self.frames) / self.fps, self.size, info.width, info.height)
            return frames, start
        # A short video kept by short="loop" / "pad": read what there is at the target rate.
        available = max(1, int(math.floor((info.duration - 1.0 / info.fps) * self.fps + 1e-6)) + 1)
        frames = read_clip(info.path, np.arange(min(available, self.frames)) / self.fps, self.size, info.width, info.height)
        if self.short == "loop":
            frames = frames[np.arange(self.frames) % len(frames)]
            self.stats["looped"] += 1
        else:
            frames = frames[np.minimum(np.arange(self.frames), len(frames) - 1)]
            self.stats["padded"] += 1
        return frames, 0.0


def scaled_size(width: int, height: int, size: int) -> tuple[int, int]:
    """(w, h) with the shorter side `size`, keeping the display aspect."""
    scale = size / min(width, height)
    return max(size, round(width * scale)), max(size, round(height * scale))


def center_crop(frame: np.ndarray, size: int) -> np.ndarray:
    h, w = frame.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    return frame[top : top + size, left : left + size]


def _on_screen(frame: VideoFrame, stream: VideoStream) -> float:
    """Seconds a decoded frame stays on screen: its own duration, else one frame at the
    stream's rate."""
    if seconds := frame_seconds(frame):
        return seconds
    fps = stream_fps(stream)
    return 1.0 / fps if fps else 0.0


def read_clip(path: Path, times: np.ndarray, size: int, width: int, height: int) -> np.ndarray:
    """uint8 frames (len(times), size, size, 3): the frame on screen at each time (seconds from
    the stream's start), scaled so the shorter display side is `size` and centre-cropped.
    Seeks to the key frame before the first time and stops after the last: only the frames
    of the clip are decoded. ValueError (with a reason) if the file fails to decode."""
    out_w, out_h = scaled_size(width, height, size)
    try:
        with _open(path) as container:
            stream = container.streams.video[0]
            base = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
            targets = base + np.asarray(times, dtype=np.float64)
            if targets[0] - base > 0.5:  # seeking costs a reopen of the decoder; only worth it past the start
                container.seek(int(targets[0] / stream.time_base), stream=stream, backward=True, any_frame=False)
            picked: list[np.ndarray] = []
            previous, previous_image = None, None
            eps = 1e-4

            def image(frame) -> np.ndarray:
                rgb = frame.reformat(width=out_w, height=out_h, format="rgb24", interpolation="AREA").to_ndarray()
                return center_crop(rgb, size)

            for frame in container.decode(stream):
                if frame.pts is None:
                    continue
                t = float(frame.pts * stream.time_base)
                # every target before this frame's time shows the previous frame
                while len(picked) < len(targets) and t > targets[len(picked)] + eps:
                    if previous is None:  # the seek landed after the target: use the first frame we have
                        previous = frame
                    if previous_image is None:
                        previous_image = image(previous)
                    picked.append(previous_image)
                if len(picked) == len(targets):
                    break
                previous, previous_image = frame, None
            # The stream ended: the last frame fills the targets while it is on screen. For a
            # constant-rate source that is at most one (is_long_enough puts the last target on
            # the last frame's time); a GIF's still tail is one long frame. Past it, the file
            # is shorter than its header says.
            if previous is not None and len(picked) < len(targets):
                shown_until = float(previous.pts * stream.time_base) + _on_screen(previous, stream)
                last = previous_image if previous_image is not None else image(previous)
                while len(picked) < len(targets) and targets[len(picked)] < shown_until - eps:
                    picked.append(last)
    except _av_errors() as err:
        raise ValueError(f"cannot decode: {_reason(err)}") from None
    if len(picked) < len(targets):
        raise ValueError(f"decoded only {len(picked)} of {len(targets)} frames (the file is shorter than its header says)")
    return np.stack(picked)

