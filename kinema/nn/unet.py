"""A video U-Net for any diffusion family (Imagen Video's three stages are built from it).

Videos are [B, C, T, H, W]. Each layer is factorised (Ho et al., Video Diffusion Models):

    ResBlock          per-frame 3x3 convs, FiLM-conditioned on the time (+ text, + noise-aug) embedding
    TemporalConv      a 1-D conv over each pixel's frames           (starts as the identity)
    SpaceTimeTransformer
        spatial self-attention over each frame's pixels   '(b t) (h w) c'
        cross-attention to the text tokens                 'b (t h w) c'
        temporal self-attention over each pixel's frames   '(b h w) t c'   (starts as the identity)
        feed-forward

Spatial parts act on frames folded into the batch, so a clip of T = 1 is an image and an
image model's weights load into a video model (`load_image_weights`): every temporal layer
starts as the identity, so the inflated model first makes each frame as the image model
did (Make-A-Video's recipe) and learns motion from there.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .attention import Attention
from .embeddings import sinusoidal_embedding
from .resnet import Downsample2d, Upsample2d, norm_groups
from .transformer import FeedForward

TEMPORAL_PARAM_MARKERS = ("temporal_conv.", "attn_time.", "norm_time.")


@dataclass
class VideoUNetConfig:
    in_channels: int = 3  # channels of the noisy sample
    out_channels: int = 3  # channels of the prediction (v or ε)
    cond_channels: int = 0  # extra input channels concatenated to the sample: SR inputs, context frames, flags
    channels: int = 64  # width of the first level; level i has channels * channel_mults[i]
    channel_mults: tuple[int, ...] = (1, 2, 2)  # one per resolution; each level after the first halves H and W
    num_res_blocks: int = 1  # layers per level on the way down (one more on the way up)
    sample_size: int = 32  # frame side the net is built for
    patch_size: int = 1  # pixel-unshuffle p x p patches into channels first (and shuffle back at the end): a 64x64 stage then costs what a 32x32 one does
    frames: int = 8  # clip length it is trained on (any length runs: temporal layers are position-free convs + sinusoidal attention)
    attention_resolutions: tuple[int, ...] = (8,)  # feature-map sides (after patching) that get space-time attention blocks
    mid_attention: bool = True  # a space-time attention block at the bottom
    heads: int = 4
    dim_head: int = 32
    ff_mult: float = 2.0
    text_dim: int = 384  # width of the text tokens (cross-attention) and pooled vector; 0 = no text
    temporal: bool = True  # temporal convs and temporal attention; False builds an image model
    temporal_kernel: int = 3
    noise_aug: bool = False  # embed a noise-conditioning-augmentation level `aug_t` (cascade stages)
    emb_mult: int = 4  # the time embedding is channels * emb_mult wide

    def __post_init__(self):
        self.channel_mults = tuple(self.channel_mults)
        self.attention_resolutions = tuple(self.attention_resolutions)
        if self.sample_size % self.size_multiple:
            raise ValueError(f"sample_size {self.sample_size} must be divisible by patch_size * 2**{len(self.channel_mults) - 1} for {len(self.channel_mults)} levels")

    @property
    def size_multiple(self) -> int:
        """What a frame's sides must be a multiple of: the patch, halved once per level after the first."""
        return self.patch_size * 2 ** (len(self.channel_mults) - 1)

    def to_dict(self) -> dict:
        return asdict(self)


def _layout(x: torch.Tensor) -> torch.Tensor:
    """Channels-last memory for inference (oneDNN's bf16 convs run ~3x faster on it and the
    attention's '(b t) (h w) c' views are free); the default layout when gradients flow,
    because GroupNorm's backward on channels-last is ~20x slower on CPU."""
    return x.contiguous(memory_format=torch.contiguous_format if torch.is_grad_enabled() else torch.channels_last)


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class TimestepEmbedding(nn.Module):
    """Sinusoidal features of a (noise or augmentation) timestep, then an MLP."""

    def __init__(self, in_dim: int, dim: int):
        super().__init__()
        self.in_dim = in_dim
        self.mlp = nn.Sequential(nn.Linear(in_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(sinusoidal_embedding(t, self.in_dim))


class ResBlock(nn.Module):
    """GroupNorm → SiLU → 3x3 conv → GroupNorm → FiLM(embedding) → SiLU → 3x3 conv (zero-init),
    plus a shortcut; frames are folded into the batch."""

    def __init__(self, in_channels: int, out_channels: int, emb_dim: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(norm_groups(in_channels), in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, 2 * out_channels)
        self.norm2 = nn.GroupNorm(norm_groups(out_channels), out_channels)
        self.conv2 = _zero(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb_proj(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        return self.shortcut(x) + self.conv2(F.silu(h))


class TemporalConv(nn.Module):
    """A residual 1-D convolution over time at every pixel (the '1D' of a pseudo-3D conv).
    Zero-initialised, so it is the identity until trained; skipped for images."""

    def __init__(self, channels: int, kernel: int = 3):
        super().__init__()
        self.norm = nn.GroupNorm(norm_groups(channels), channels)
        self.conv = _zero(nn.Conv1d(channels, channels, kernel, padding=kernel // 2))

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        if frames == 1:
            return x
        # The conv as one matmul over [frame t-1, t, t+1] channel stacks, on channels-last
        # memory: a Conv1d over (b h w) sequences would first copy the whole clip twice.
        h = rearrange(F.silu(self.norm(x)), "(b t) c h w -> b t h w c", t=frames)
        k = self.conv.kernel_size[0]
        h = F.pad(h, (0, 0, 0, 0, 0, 0, k // 2, k // 2))
        taps = torch.cat([h[:, i : i + frames] for i in range(k)], dim=-1)
        out = F.linear(taps, rearrange(self.conv.weight, "o i k -> o (k i)"), self.conv.bias)
        return x + rearrange(out, "b t h w c -> (b t) c h w")


class SpaceTimeTransformer(nn.Module):
    """Factorised space-time attention: spatial self-attention within each frame, cross-
    attention to text, temporal self-attention across each pixel's frames, feed-forward."""

    def __init__(self, dim: int, *, heads: int, dim_head: int, text_dim: int = 0, temporal: bool = True, ff_mult: float = 2.0):
        super().__init__()
        self.norm_space = nn.LayerNorm(dim)
        self.attn_space = Attention(dim, heads=heads, dim_head=dim_head)
        self.norm_cross = nn.LayerNorm(dim) if text_dim else None
        self.cross = Attention(dim, heads=heads, dim_head=dim_head, context_dim=text_dim) if text_dim else None
        if temporal:
            self.norm_time = nn.LayerNorm(dim)
            self.attn_time = Attention(dim, heads=heads, dim_head=dim_head)
            _zero(self.attn_time.to_out)  # the identity until trained: image weights inflate unchanged
        else:
            self.norm_time = self.attn_time = None
        self.norm_ff = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, mult=ff_mult)

    def forward(self, x: torch.Tensor, frames: int, text: torch.Tensor | None = None, text_mask: torch.Tensor | None = None) -> torch.Tensor:
        h, w = x.shape[-2:]
        tokens = rearrange(x, "bt c h w -> bt (h w) c")
        tokens = tokens + self.attn_space(self.norm_space(tokens))
        if self.cross is not None and text is not None:
            # Cross-attention treats queries independently, so a whole clip is one query
            # sequence and the text is projected once, not once per frame.
            seq = rearrange(tokens, "(b t) n c -> b (t n) c", t=frames)
            mask = None if text_mask is None else text_mask[:, None, None, :]
            seq = seq + self.cross(self.norm_cross(seq), context=text, mask=mask)
            tokens = rearrange(seq, "b (t n) c -> (b t) n c", t=frames)
        if self.attn_time is not None and frames > 1:
            seq = rearrange(tokens, "(b t) n c -> (b n) t c", t=frames)
            pos = sinusoidal_embedding(torch.arange(frames, device=x.device), seq.shape[-1]).to(seq.dtype)
            seq = seq + self.attn_time(self.norm_time(seq) + pos)
            tokens = rearrange(seq, "(b n) t c -> (b t) n c", n=h * w)
        tokens = tokens + self.ff(self.norm_ff(tokens))
        return rearrange(tokens, "bt (h w) c -> bt c h w", h=h, w=w)


class UNetLayer(nn.Module):
    """ResBlock, then (for video) a TemporalConv, then optionally a SpaceTimeTransformer."""

    def __init__(self, in_channels: int, out_channels: int, emb_dim: int, config: VideoUNetConfig, attention: bool):
        super().__init__()
        self.res = ResBlock(in_channels, out_channels, emb_dim)
        self.temporal_conv = TemporalConv(out_channels, config.temporal_kernel) if config.temporal else None
        self.attn = (
            SpaceTimeTransformer(out_channels, heads=config.heads, dim_head=config.dim_head, text_dim=config.text_dim, temporal=config.temporal, ff_mult=config.ff_mult)
            if attention
            else None
        )

    def forward(self, x, emb, frames, text, text_mask):
        x = self.res(x, emb)
        if self.temporal_conv is not None:
            x = _layout(self.temporal_conv(x, frames))
        if self.attn is not None:
            x = _layout(self.attn(x, frames, text, text_mask))
        return x


class VideoUNet(nn.Module):
    """The U-Net: `forward(x, t, *, cond, text, text_mask, text_pooled, text_drop, aug_t)`.

    x [B, in_channels, T, H, W] is the noisy clip, t [B] its integer timesteps. `cond`
    [B, cond_channels, T, H, W] is concatenated to x (super-resolution inputs, context).
    Text conditions two ways: cross-attention to `text` [B, L, text_dim] (masked by
    `text_mask` [B, L]) and `text_pooled` [B, text_dim] added to the time embedding.
    Rows with `text_drop` True (or all rows when text is None) see a learned null text
    instead: that is the unconditional model of classifier-free guidance."""

    def __init__(self, config: VideoUNetConfig):
        super().__init__()
        self.config = c = config
        widths = [c.channels * m for m in c.channel_mults]
        emb_dim = c.channels * c.emb_mult
        self.time_embed = TimestepEmbedding(c.channels, emb_dim)
        self.aug_embed = TimestepEmbedding(c.channels, emb_dim) if c.noise_aug else None
        if c.text_dim:
            self.pooled_proj = nn.Linear(c.text_dim, emb_dim)
            self.null_text = nn.Parameter(torch.randn(1, c.text_dim) * 0.02)
            self.null_pooled = nn.Parameter(torch.zeros(c.text_dim))
        p2 = c.patch_size**2
        self.conv_in = nn.Conv2d((c.in_channels + c.cond_channels) * p2, widths[0], 3, padding=1)

        self.down = nn.ModuleList()
        self.downsamplers = nn.ModuleList()
        skips, ch, side = [widths[0]], widths[0], c.sample_size // c.patch_size
        for level, width in enumerate(widths):
            layers = nn.ModuleList()
            for _ in range(c.num_res_blocks):
                layers.append(UNetLayer(ch, width, emb_dim, c, side in c.attention_resolutions))
                ch = width
                skips.append(ch)
            self.down.append(layers)
            last = level == len(widths) - 1
            self.downsamplers.append(nn.Identity() if last else Downsample2d(ch))
            if not last:
                skips.append(ch)
                side //= 2
        self.mid = nn.ModuleList([UNetLayer(ch, ch, emb_dim, c, c.mid_attention), UNetLayer(ch, ch, emb_dim, c, False)])
        self.up = nn.ModuleList()
        self.upsamplers = nn.ModuleList()
        for level, width in reversed(list(enumerate(widths))):
            layers = nn.ModuleList()
            for _ in range(c.num_res_blocks + 1):
                layers.append(UNetLayer(ch + skips.pop(), width, emb_dim, c, side in c.attention_resolutions))
                ch = width
            self.up.append(layers)
            self.upsamplers.append(Upsample2d(ch) if level else nn.Identity())
            if level:
                side *= 2
        self.norm_out = nn.GroupNorm(norm_groups(ch), ch)
        self.conv_out = _zero(nn.Conv2d(ch, c.out_channels * p2, 3, padding=1))

    # ---- conditioning
    def text_inputs(self, batch: int, text, text_mask, text_pooled, text_drop, device):
        """(tokens, mask, pooled) with dropped rows replaced by the learned null text."""
        dim = self.config.text_dim
        if text is None:
            text = torch.zeros(batch, 1, dim, device=device)
            text_mask = torch.zeros(batch, 1, dtype=torch.bool, device=device)
            text_pooled = torch.zeros(batch, dim, device=device)
            text_drop = torch.ones(batch, dtype=torch.bool, device=device)
        if text_mask is None:
            text_mask = torch.ones(text.shape[:2], dtype=torch.bool, device=device)
        if text_pooled is None:
            m = text_mask[..., None].to(text.dtype)
            text_pooled = (text * m).sum(1) / m.sum(1).clamp(min=1)
        if text_drop is not None:
            drop = text_drop.to(device=device, dtype=torch.bool)
            null_tokens = torch.zeros_like(text)
            null_tokens[:, 0] = self.null_text.to(text.dtype)
            null_mask = torch.zeros_like(text_mask)
            null_mask[:, 0] = True
            text = torch.where(drop[:, None, None], null_tokens, text)
            text_mask = torch.where(drop[:, None], null_mask, text_mask)
            text_pooled = torch.where(drop[:, None], self.null_pooled.to(text_pooled.dtype).expand_as(text_pooled), text_pooled)
        return text, text_mask, text_pooled

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        *,
        cond: torch.Tensor | None = None,
        text: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None,
        text_pooled: torch.Tensor | None = None,
        text_drop: torch.Tensor | None = None,
        aug_t: torch.Tensor | None = None,
    ) -> torch.Tensor:
        c = self.config
        if x.ndim != 5:
            raise ValueError(f"VideoUNet takes [B, C, T, H, W] clips (T = 1 for images), got shape {list(x.shape)}")
        B, _, T, H, W = x.shape
        if c.cond_channels:
            if cond is None or cond.shape[1] != c.cond_channels or cond.shape[2:] != x.shape[2:]:
                raise ValueError(f"this U-Net needs cond=[B, {c.cond_channels}, {T}, {H}, {W}], got {None if cond is None else list(cond.shape)}")
            x = torch.cat([x, cond.to(x.dtype)], dim=1)
        t = t.expand(B) if t.ndim else t.reshape(1).expand(B)
        emb = self.time_embed(t)
        if self.aug_embed is not None:
            emb = emb + self.aug_embed(torch.zeros_like(t) if aug_t is None else aug_t)
        tokens = mask = None
        if c.text_dim:
            tokens, mask, pooled = self.text_inputs(B, text, text_mask, text_pooled, text_drop, x.device)
            emb = emb + self.pooled_proj(pooled)
        emb = emb.repeat_interleave(T, dim=0)

        if H % c.size_multiple or W % c.size_multiple:
            raise ValueError(f"frame size {H}x{W} must be divisible by {c.size_multiple} (patch size x 2 per level)")
        h = F.pixel_unshuffle(rearrange(x, "b c t h w -> (b t) c h w"), c.patch_size) if c.patch_size > 1 else rearrange(x, "b c t h w -> (b t) c h w")
        h = self.conv_in(_layout(h))
        skips = [h]
        for layers, downsample in zip(self.down, self.downsamplers):
            for layer in layers:
                h = layer(h, emb, T, tokens, mask)
                skips.append(h)
            if not isinstance(downsample, nn.Identity):
                h = downsample(h)
                skips.append(h)
        for layer in self.mid:
            h = layer(h, emb, T, tokens, mask)
        for layers, upsample in zip(self.up, self.upsamplers):
            for layer in layers:
                h = layer(torch.cat([h, skips.pop()], dim=1), emb, T, tokens, mask)
            h = upsample(h)
        h = self.conv_out(F.silu(self.norm_out(h)))
        if c.patch_size > 1:
            h = F.pixel_shuffle(h, c.patch_size)
        return rearrange(h, "(b t) c h w -> b c t h w", b=B)

    # ---- image → video
    def load_image_weights(self, state_dict: dict[str, torch.Tensor]) -> list[str]:
        """Inflate: load an image model's weights (a VideoUNet built with temporal=False) into
        this video model. Only temporal layers may be missing; they keep their identity init.
        Returns the names of the temporal parameters left as initialised."""
        try:
            result = self.load_state_dict(state_dict, strict=False)
        except RuntimeError as err:  # shapes differ
            raise ValueError(f"not an image version of this U-Net: {str(err).splitlines()[1].strip()}") from None
        non_temporal = [k for k in result.missing_keys if not any(m in k for m in TEMPORAL_PARAM_MARKERS)]
        if non_temporal or result.unexpected_keys:
            raise ValueError(f"not an image version of this U-Net: missing {non_temporal[:5]}, unexpected {list(result.unexpected_keys)[:5]}")
        return list(result.missing_keys)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
