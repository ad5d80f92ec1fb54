"""`kinema eval`: the scoreboard every model is held to.

    from kinema.eval import evaluate
    report = evaluate(kinema.load_pipeline("world"), prompts=50, seed=0)
    report.categories["one object"].rate, report.fvd.value

The judge's pass rates per category with Wilson 95 % intervals and the commonest failure
reasons (`scoreboard.py`); FVD-shapes and temporal flicker (`fvd.py`).
"""

from .fvd import METRIC_NAME, NOT_COMPARABLE, clip_features, flicker, frechet_distance, fvd_shapes, load_classifier, real_clips
from .scoreboard import (
    CATEGORIES,
    SINGLE_CATEGORIES,
    STORY_CATEGORIES,
    CategoryScore,
    FVDScore,
    Prompt,
    PromptResult,
    Report,
    draw_prompts,
    evaluate,
    failure_pattern,
    wilson_interval,
)

__all__ = [
    "CATEGORIES", "METRIC_NAME", "NOT_COMPARABLE", "SINGLE_CATEGORIES", "STORY_CATEGORIES", "CategoryScore", "FVDScore",
    "Prompt", "PromptResult", "Report", "clip_features", "draw_prompts", "evaluate", "failure_pattern", "flicker",
    "frechet_distance", "fvd_shapes", "load_classifier", "real_clips", "wilson_interval",
]
