"""The Shapes world's tables and the meaning of a sentence (WORLD.md, version 1).

Everything else in `kinema.world` (renderer, captions, parser, judge) reads its numbers
from here, so that a clip, its caption and its verdict always mean the same thing.
Coordinates are fractions of the frame side: 0 = left/top, 1 = right/bottom.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

FPS = 8
EVENT_FRAMES = 16  # one event = 2 seconds at 8 fps
DEFAULT_SIZE = 64

BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (0, 0, 0),
    "gray": (100, 100, 100),
    "night": (15, 20, 55),
    "forest": (25, 70, 35),
    "desert": (190, 160, 110),
    "ocean": (20, 60, 110),
}
BACKGROUND_PHRASES: dict[str, str] = {
    "black": "on a black background",
    "gray": "on a gray background",
    "night": "at night",
    "forest": "in the forest",
    "desert": "in the desert",
    "ocean": "over the ocean",
}
STAR_RGB = (150, 150, 190)
NUM_STARS = 12

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (60, 200, 60),
    "blue": (50, 90, 240),
    "yellow": (240, 220, 50),
    "purple": (170, 70, 210),
    "orange": (250, 140, 30),
    "cyan": (50, 210, 220),
    "white": (245, 245, 245),
}
SHAPES = ("circle", "square", "triangle")
SIZES: dict[str, float] = {"small": 0.16, "medium": 0.24, "large": 0.32}

Motion = Literal["right", "left", "up", "down", "bounces", "grows", "shrinks", "still"]
MOTIONS: tuple[str, ...] = ("right", "left", "up", "down", "bounces", "grows", "shrinks", "still")
MOTION_PHRASES: dict[str, str] = {
    "right": "moves to the right",
    "left": "moves to the left",
    "up": "moves up",
    "down": "moves down",
    "bounces": "bounces",
    "grows": "grows",
    "shrinks": "shrinks",
    "still": "stays still",
}
# Unit direction of each translation, in frame coordinates (y grows downwards).
MOTION_VECTORS: dict[str, tuple[float, float]] = {
    "right": (1.0, 0.0),
    "left": (-1.0, 0.0),
    "up": (0.0, -1.0),
    "down": (0.0, 1.0),
}
TRAVEL = 0.40  # how far a translating centre moves over one event
BOUNCE_HEIGHT = 0.25  # y(t) = y0 - 0.25 |sin(2 pi t)|
GROWTH = 1.75  # "grows" scales to x1.75, "shrinks" to x1/1.75

Camera = Literal["in", "out"]
CAMERA_PHRASES: dict[str, str] = {"in": "the camera zooms in", "out": "the camera zooms out"}
ZOOM = 1.6  # "zooms in" scales the picture x1 -> x1.6 about the centre, "out" x1 -> x1/1.6


@dataclass(frozen=True)
class ObjectSpec:
    """One object as a sentence names it: colour and shape, optional size, one motion."""

    color: str
    shape: str
    motion: str = "still"
    size: str | None = None  # None = the caption named no size, which means medium

    @property
    def side(self) -> float:
        return SIZES[self.size or "medium"]

    @property
    def name(self) -> str:
        return f"{self.color} {self.shape}"


@dataclass(frozen=True)
class SceneSpec:
    """What a caption (or a story's first sentence) means: a background and up to two
    objects, each with its motion, or one camera move over still objects."""

    background: str
    objects: tuple[ObjectSpec, ...]
    camera: str | None = None

    @property
    def kind(self) -> str:
        if self.camera:
            return "camera"
        return "one object" if len(self.objects) == 1 else "two objects"


# Story sentences after the first: each changes one thing and leaves the rest as it is.
@dataclass(frozen=True)
class MoveSentence:
    color: str
    shape: str
    motion: str


@dataclass(frozen=True)
class CameraSentence:
    camera: str


@dataclass(frozen=True)
class AppearSentence:
    color: str
    shape: str
    size: str | None = None


@dataclass(frozen=True)
class DisappearSentence:
    color: str
    shape: str


@dataclass(frozen=True)
class SceneChangeSentence:
    background: str


StorySentence = MoveSentence | CameraSentence | AppearSentence | DisappearSentence | SceneChangeSentence
Sentence = SceneSpec | StorySentence


def sentence_kind(sentence: Sentence) -> str:
    """A short category name, used to group scores (`kinema eval`)."""
    if isinstance(sentence, SceneSpec):
        return sentence.kind
    return {
        MoveSentence: "motion",
        CameraSentence: "camera",
        AppearSentence: "appear",
        DisappearSentence: "disappear",
        SceneChangeSentence: "scene",
    }[type(sentence)]
