"""C-ViViT (Villegas et al., 2022, "Phenaki"): a causal video tokenizer.

The first frame is coded alone, as an image; the frames after it are coded in groups of
`temporal_patch` frames (space-time patches). Attention is causal in time, so the tokens of
a group never depend on later frames: a clip of 1 + k * temporal_patch frames, of any k,
codes to 1 + k token grids, a lone frame codes to one grid, and a video can be continued
from the tokens of its past.

Where kinema departs from the paper, and why (see DESIGN.md, "What the judge asks of
pixels"): the linear patch embeddings and pixel heads drew blurry 8x8 blocks, so patches
are made and unmade by convolutional stacks (a pixel-unshuffle stem and residual blocks
down to the token grid, and back up to full resolution), applied frame by frame so they
stay causal; a causal transformer mixes the grids across space and time on both sides of
the quantizer; and the quantizer is FSQ (Mentzer et al., 2023) rather than a VQ codebook:
no codebook collapse, no commitment loss, deterministic indices.

Codes a MaskGIT can learn: the "small" preset (`kinema train tokenizer`'s default) keeps the encoder *local*: no
transformer before the quantizer (`encoder_depth=0`), per-pixel ChannelNorm instead of
GroupNorm (`encoder_norm="channel"`), and a coarse FSQ of 4^6 = 4096 codes. With attention
and GroupNorm in the encoder, every code depended on the whole frame: a flat background
patch over two tokens from any object got its plain-background code 28 % of the time, so the
MaskGIT had to predict noise. Local, it gets it 95 % of the time. The decoder keeps its
causal transformer: drawing may look everywhere, coding may not.

    video [B, 3, T, H, W] in [-1, 1]
      -> per-frame conv encoder     [B*T, C, h, w]
      -> frame 0 alone, then groups of `temporal_patch` frames -> one D-vector per place
      -> (causal transformer, if encoder_depth) -> FSQ  indices [B, T', h, w]
      -> causal transformer -> split each group back into frames -> per-frame conv decoder
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from vector_quantize_pytorch import FSQ

from ..nn import Downsample2d, ResnetBlock2d, Transformer, Upsample2d, block_causal_mask, sinusoidal_embedding
from .losses import ReconstructionLoss


@dataclass
class CViViTConfig:
    image_size: int = 64  # frames are image_size x image_size
    channels: int = 3
    temporal_patch: int = 5  # frames per token grid after the first: 16 frames = 1 + 3 x 5 -> 4 grids
    # pixel-unshuffle at the stem: 64x64x3 -> 16x16x48, lossless, and it keeps the encoder's
    # convs off the full-resolution grid, where 2 CPU cores spend most of their time
    stem_factor: int = 4
    # encoder conv widths, one per resolution from the stem down (16, 8 px), a stride-2 conv
    # between levels: image_size / (stem_factor * 2**(len-1)) = 8 -> an 8x8 token grid
    encoder_widths: tuple[int, ...] = (128, 192)
    encoder_blocks: tuple[int, ...] = (1, 1)  # residual blocks per encoder level
    # decoder widths from the token grid up, doubling resolution between levels (8, 16, 32,
    # 64 px): the decoder draws the edges, so it goes all the way to full resolution
    decoder_widths: tuple[int, ...] = (192, 128, 64, 32)
    decoder_blocks: tuple[int, ...] = (1, 2, 1, 1)
    dim: int = 256  # transformer width = the width of one token before quantizing
    depth: int = 1  # causal transformer layers after the quantizer (and before it, unless encoder_depth says)
    # causal transformer layers before the quantizer (None: `depth`). 0 keeps every code a
    # function of its own patch (through the conv encoder's few-patch receptive field): the
    # same content always gets the same code, which is what a MaskGIT can learn. With global
    # attention before FSQ, a flat background patch took whichever code carried news of the
    # objects elsewhere: at one place, its code matched the next group's only 38 % of the time.
    encoder_depth: int | None = None
    # the encoder's conv blocks normalise with 'group' (GroupNorm: statistics of the whole
    # frame, so an object anywhere shifts every code) or 'channel' (per pixel: with
    # encoder_depth 0, a code then depends only on the pixels within its receptive field)
    encoder_norm: str = "group"
    heads: int = 4
    dim_head: int = 64
    # FSQ levels: 8*8*8*5*5*5 = 64,000 codes (the FSQ paper's recommendation for ~2^16); the
    # small preset codes coarser (4^6), which a MaskGIT predicts far more easily
    fsq_levels: tuple[int, ...] = (8, 8, 8, 5, 5, 5)
    # reconstruction loss weights: L1 keeps flat colours flat, the gradient term sharpens edges
    l1_weight: float = 1.0
    mse_weight: float = 0.0
    gradient_weight: float = 1.0
    # extra loss weight on pixels that differ from their frame's median colour (objects and
    # their edges; see losses.py): 0 weights every pixel alike
    foreground_weight: float = 0.0
    # training only: decode this many random frames of each clip (0 = all). The decoder runs
    # frame by frame, so this cuts its cost ~16/k with little loss of signal: frames of one
    # clip are near-duplicates. The encoder always sees every frame.
    train_decode_frames: int = 6

    def __post_init__(self):
        for name in ("encoder_widths", "encoder_blocks", "decoder_widths", "decoder_blocks", "fsq_levels"):
            setattr(self, name, tuple(getattr(self, name)))
        if len(self.encoder_blocks) != len(self.encoder_widths) or len(self.decoder_blocks) != len(self.decoder_widths):
            raise ValueError("encoder_blocks / decoder_blocks need one entry per encoder / decoder width")
        if self.image_size % self.downsample:
            raise ValueError(f"image_size {self.image_size} must be a multiple of the total downsampling {self.downsample}")
        up = self.grid_size * 2 ** (len(self.decoder_widths) - 1)
        if up > self.image_size or self.image_size % up:
            raise ValueError(f"the decoder's {len(self.decoder_widths)} levels overshoot or do not divide image_size {self.image_size}")

    @property
    def downsample(self) -> int:
        return self.stem_factor * 2 ** (len(self.encoder_widths) - 1)

    @property
    def grid_size(self) -> int:
        return self.image_size // self.downsample

    @property
    def decoder_shuffle(self) -> int:
        """The pixel-shuffle factor after the decoder's last level (1 when it reaches full size)."""
        return self.image_size // (self.grid_size * 2 ** (len(self.decoder_widths) - 1))

    @property
    def codebook_size(self) -> int:
        return math.prod(self.fsq_levels)

    def token_frames(self, frames: int) -> int:
        """How many token grids a clip of `frames` frames codes to (1 + k * temporal_patch frames)."""
        if frames < 1 or (frames - 1) % self.temporal_patch:
            raise ValueError(f"C-ViViT codes 1 + k*{self.temporal_patch} frames (1, {1 + self.temporal_patch}, {1 + 2 * self.temporal_patch}, ...); got {frames}")
        return 1 + (frames - 1) // self.temporal_patch

    def video_frames(self, token_frames: int) -> int:
        return 1 + (token_frames - 1) * self.temporal_patch

    def tokens_per_clip(self, frames: int = 16) -> int:
        return self.token_frames(frames) * self.grid_size**2

    @classmethod
    def preset(cls, name: str, **overrides) -> "CViViTConfig":
        presets = {
            "tiny": dict(
                encoder_widths=(16, 32), encoder_blocks=(1, 1), decoder_widths=(32, 16), decoder_blocks=(1, 1),
                dim=32, depth=1, heads=2, dim_head=16, fsq_levels=(5, 5, 5), train_decode_frames=4,
            ),
            "small": dict(encoder_depth=0, encoder_norm="channel", fsq_levels=(4, 4, 4, 4, 4, 4)),
        }
        if name not in presets:
            raise ValueError(f"unknown C-ViViT preset {name!r}; choose from {', '.join(presets)}")
        return cls(**{**presets[name], **overrides})

    def to_dict(self) -> dict:
        return asdict(self)


class FrameEncoder(nn.Module):
    """Per-frame conv stack: [N, 3, H, W] -> [N, encoder_widths[-1], h, w]."""

    def __init__(self, config: CViViTConfig):
        super().__init__()
        c = config
        self.stem_factor = c.stem_factor
        self.conv_in = nn.Conv2d(c.channels * c.stem_factor**2, c.encoder_widths[0], 3, padding=1)
        layers: list[nn.Module] = []
        for i, (width, blocks) in enumerate(zip(c.encoder_widths, c.encoder_blocks)):
            layers += [ResnetBlock2d(width, norm=c.encoder_norm) for _ in range(blocks)]
            if i + 1 < len(c.encoder_widths):
                layers.append(Downsample2d(width, c.encoder_widths[i + 1]))
        self.blocks = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # no GroupNorm at the output (unlike VQGAN): it standardises each frame's features, so a
        # flat background's absolute colour would survive only as a pattern across channels, one
        # that shifts with the objects' area. The Shapes world is all flat colours.
        return F.silu(self.blocks(self.conv_in(F.pixel_unshuffle(x, self.stem_factor))))


class FrameDecoder(nn.Module):
    """Per-frame conv stack back up: [N, encoder_widths[-1], h, w] -> [N, 3, H, W]. Its last
    levels run at (or near) full resolution so edges are drawn per pixel, not per patch."""

    def __init__(self, config: CViViTConfig):
        super().__init__()
        c = config
        widths = c.decoder_widths
        layers: list[nn.Module] = [nn.Conv2d(c.encoder_widths[-1], widths[0], 3, padding=1)]
        for i, (width, blocks) in enumerate(zip(widths, c.decoder_blocks)):
            layers += [ResnetBlock2d(width) for _ in range(blocks)]
            if i + 1 < len(widths):
                layers.append(Upsample2d(width, widths[i + 1]))
        self.blocks = nn.Sequential(*layers)  # no output GroupNorm: see FrameEncoder
        self.shuffle = c.decoder_shuffle
        self.conv_out = nn.Conv2d(widths[-1], c.channels * self.shuffle**2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_out(F.silu(self.blocks(x)))
        return F.pixel_shuffle(x, self.shuffle) if self.shuffle > 1 else x


class CViViT(nn.Module):
    """The causal video tokenizer. `encode` -> indices [B, T', h, w]; `decode_from_indices` ->
    video [B, 3, T, H, W]; `forward(video)` -> (reconstruction, loss terms) for training."""

    def __init__(self, config: CViViTConfig | None = None):
        super().__init__()
        self.config = c = config or CViViTConfig()
        feat = c.encoder_widths[-1]
        self.encoder = FrameEncoder(c)
        self.decoder = FrameDecoder(c)
        # first frame alone (image patch) / a group of frames (space-time patch) <-> one token
        self.to_image_token = nn.Linear(feat, c.dim)
        self.to_video_token = nn.Linear(feat * c.temporal_patch, c.dim)
        self.from_image_token = nn.Linear(c.dim, feat)
        self.from_video_token = nn.Linear(c.dim, feat * c.temporal_patch)
        self.spatial_pos = nn.Parameter(torch.randn(c.grid_size**2, c.dim) * 0.02)
        block = dict(heads=c.heads, dim_head=c.dim_head)
        self.enc_transformer = Transformer(c.dim, c.depth if c.encoder_depth is None else c.encoder_depth, **block)
        self.dec_transformer = Transformer(c.dim, c.depth, **block)
        self.quantizer = FSQ(levels=list(c.fsq_levels), dim=c.dim)
        self.loss = ReconstructionLoss(l1=c.l1_weight, mse=c.mse_weight, gradient=c.gradient_weight, foreground=c.foreground_weight)

    def freeze_encoder(self) -> "CViViT":
        """Stop training everything up to the token indices. Fine-tuning the decoder then
        leaves every code unchanged, so a MaskGIT trained on this tokenizer's tokens stays
        valid while the decoder keeps learning to draw them."""
        for module in (self.encoder, self.to_image_token, self.to_video_token, self.enc_transformer, self.quantizer.project_in):
            module.requires_grad_(False)
        if self.enc_transformer.blocks:  # shared by both transformers: with an encoder transformer, tokens depend on it
            self.spatial_pos.requires_grad_(False)
        return self

    # -- helpers -----------------------------------------------------------------------
    def _positions(self, token_frames: int, device) -> torch.Tensor:
        """[T' * h * w, D]: learned per-place embedding + a sinusoid of the token grid's index
        in time (defined for any length, so clips longer than in training still code)."""
        time = sinusoidal_embedding(torch.arange(token_frames, device=device), self.config.dim)
        return (time[:, None, :] + self.spatial_pos[None]).flatten(0, 1)

    def _mix(self, transformer: Transformer, tokens: torch.Tensor) -> torch.Tensor:
        if not transformer.blocks:  # nothing mixes: every token stays local (and position-free)
            return transformer(tokens)
        b, t, h, w, d = tokens.shape
        x = tokens.reshape(b, t * h * w, d) + self._positions(t, tokens.device).to(tokens.dtype)
        x = transformer(x, mask=block_causal_mask(t, h * w, device=tokens.device))
        return x.reshape(b, t, h, w, d)

    def _check_video(self, video: torch.Tensor) -> None:
        c = self.config
        if video.ndim != 5 or video.shape[1] != c.channels or video.shape[-1] != c.image_size or video.shape[-2] != c.image_size:
            raise ValueError(f"expected video [B, {c.channels}, T, {c.image_size}, {c.image_size}], got {list(video.shape)}")
        c.token_frames(video.shape[2])

    # -- the tokenizer ------------------------------------------------------------------
    def encode_continuous(self, video: torch.Tensor) -> torch.Tensor:
        """Pre-quantization tokens [B, T', h, w, D]."""
        self._check_video(video)
        b, t = video.shape[0], video.shape[2]
        feats = self.encoder(rearrange(video, "b c t h w -> (b t) c h w"))
        feats = rearrange(feats, "(b t) c h w -> b t h w c", b=b, t=t)
        first = self.to_image_token(feats[:, :1])
        if t > 1:
            groups = rearrange(feats[:, 1:], "b (g p) h w c -> b g h w (p c)", p=self.config.temporal_patch)
            first = torch.cat([first, self.to_video_token(groups)], dim=1)
        return self._mix(self.enc_transformer, first)

    def quantize(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, t, h, w, d = tokens.shape
        quantized, indices = self.quantizer(tokens.reshape(b, t * h * w, d))
        return quantized.reshape(b, t, h, w, d), indices.reshape(b, t, h, w).long()

    def decode(self, quantized: torch.Tensor, frames: torch.Tensor | None = None) -> torch.Tensor:
        """Quantized tokens [B, T', h, w, D] -> video [B, 3, T, H, W]; with `frames` (indices
        into T), only those frames are drawn (training decodes a few frames per clip)."""
        x = self._mix(self.dec_transformer, quantized)
        b, tt = x.shape[:2]
        feats = self.from_image_token(x[:, :1])
        if tt > 1:
            rest = rearrange(self.from_video_token(x[:, 1:]), "b g h w (p c) -> b (g p) h w c", p=self.config.temporal_patch)
            feats = torch.cat([feats, rest], dim=1)
        if frames is not None:
            feats = feats[:, frames]
        t = feats.shape[1]
        video = self.decoder(rearrange(feats, "b t h w c -> (b t) c h w"))
        return rearrange(video, "(b t) c h w -> b c t h w", b=b, t=t)

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """Video [B, 3, T, H, W] in [-1, 1], T = 1 + k * temporal_patch -> indices [B, T', h, w]."""
        return self.quantize(self.encode_continuous(video))[1]

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        b, t, h, w = indices.shape
        codes = self.quantizer.indices_to_codes(indices.reshape(b, t * h * w))
        return codes.reshape(b, t, h, w, -1)

    @torch.no_grad()
    def decode_from_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """Indices [B, T', h, w] -> video [B, 3, 1 + (T'-1) * temporal_patch, H, W], clamped to [-1, 1]."""
        if indices.ndim != 4:
            raise ValueError(f"expected indices [B, T', h, w], got {list(indices.shape)}")
        return self.decode(self.indices_to_codes(indices)).clamp(-1, 1)

    def forward(self, video: torch.Tensor, decode_frames: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Training step: (reconstruction, loss terms). In training mode only
        `config.train_decode_frames` random frames are drawn (the same for the whole batch,
        from torch's global RNG, so a resumed run draws the same ones); the reconstruction
        then holds just those frames, and the loss compares them."""
        quantized, _ = self.quantize(self.encode_continuous(video))
        return self.decoder_loss(quantized, video, decode_frames)

    def decoder_loss(self, quantized: torch.Tensor, video: torch.Tensor, decode_frames: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(reconstruction, loss terms) of drawing `video` from tokens [B, T', h, w, D]: its
        own quantized tokens (`forward`) or others, e.g. a MaskGIT's infill of them."""
        frames, k = video.shape[2], self.config.train_decode_frames
        if decode_frames is None and self.training and 0 < k < frames:
            decode_frames = torch.randperm(frames)[:k].sort().values.to(video.device)
        recon = self.decode(quantized, decode_frames)
        target = video if decode_frames is None else video[:, :, decode_frames]
        return recon, self.loss(recon.float(), target.float())
