"""The Shapes world (WORLD.md): an endless, captioned video world and its pixel judge."""

from .judge import Reason, Verdict, judge
from .language import ParseError, caption, describe, paraphrase, parse, parse_story, read_story, split_story
from .render import render_event, render_events
from .sample import legible, random_event, random_scene, random_story, plan_story, render_story
from .scene import Event, InfeasibleError, State, advance, place
from .spec import EVENT_FRAMES, FPS, SceneSpec, Sentence, sentence_kind

__all__ = [
    "EVENT_FRAMES", "FPS", "Event", "InfeasibleError", "ParseError", "Reason", "SceneSpec", "Sentence", "State",
    "Verdict", "advance", "caption", "describe", "judge", "legible", "paraphrase", "parse", "parse_story", "place",
    "random_event", "random_scene", "random_story", "read_story", "render_event", "render_events", "render_story",
    "sentence_kind", "split_story", "plan_story",
]

