"""`kinema eval`: the scoreboard every model is held to.

    from kinema.eval import evaluate
    report = evaluate(kinema.load_pipeline("world"), prompts=50, seed=0)
    report.categories["one object"].rate, report.categories["one object"].ci95, report.fvd.value

The judge's pass rates per category with Wilson 95 % intervals and the commonest failure
reasons (`scoreboard.py`); FVD-shapes and temporal flicker (`fvd.py`, which also trains
the shipped feature network: `python -m kinema.eval.fvd train`).

Names are imported on first use, so `import kinema.eval` does not import torch and
`python -m kinema.eval.fvd` does not import its module twice.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "scoreboard": (
        "CATEGORIES", "SINGLE_CATEGORIES", "STORY_CATEGORIES", "CategoryScore", "FVDScore", "Prompt", "PromptResult",
        "Report", "draw_prompts", "evaluate", "failure_pattern", "wilson_interval",
    ),
    "fvd": (
        "METRIC_NAME", "NOT_COMPARABLE", "ShapesClassifier", "ShapesClassifierConfig", "clip_features", "flicker",
        "frechet_distance", "fvd_shapes", "load_classifier", "real_clips",
    ),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'kinema.eval' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
