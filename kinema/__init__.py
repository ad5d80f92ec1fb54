"""kinema: text to video — Phenaki, Make-A-Video, Imagen Video and Lumiere, small enough
to read, train and run on a CPU."""

__version__ = "0.1.0"


def load_pipeline(name_or_path="world", **kwargs):
    """`kinema.load_pipeline("phenaki-shapes")`: see `kinema.pipelines.load_pipeline`."""
    from .pipelines import load_pipeline as _load

    return _load(name_or_path, **kwargs)
