"""kinema: text to video — Phenaki, Make-A-Video, Imagen Video and Lumiere, small enough
to read, train and run on a CPU."""

__version__ = "0.1.0"
