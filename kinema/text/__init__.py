"""Text encoders behind one interface: MiniLM (bundled, the default) or any local HF encoder."""

from kinema.text.encoder import (
    DEFAULT_MAX_LENGTH,
    TextEmbedding,
    TextEncoder,
    get_text_encoder,
    load_text_encoder,
    minilm_path,
)

__all__ = [
    "DEFAULT_MAX_LENGTH",
    "TextEmbedding",
    "TextEncoder",
    "get_text_encoder",
    "load_text_encoder",
    "minilm_path",
]
