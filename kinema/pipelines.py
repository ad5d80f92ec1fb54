"""The user's entry point: `kinema.load_pipeline(name or folder)`.

Shipped models live in `kinema/pretrained/<name>/` as diffusers-style folders
(`model_index.json` + one subfolder per component), so a fresh install can generate
without downloading anything.
"""

from __future__ import annotations

from pathlib import Path

PRETRAINED_DIR = Path(__file__).parent / "pretrained"


def available_models() -> list[str]:
    """Names of the models shipped with this install."""
    if not PRETRAINED_DIR.is_dir():
        return []
    return sorted(p.name for p in PRETRAINED_DIR.iterdir() if (p / "model_index.json").is_file())
