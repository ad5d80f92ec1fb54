"""Phenaki's MaskGIT: a bidirectional transformer that fills in masked video tokens.

Training hides a cosine-scheduled share of an event's tokens and learns to predict them
from the visible ones, the text (cross-attention to the text encoder's token embeddings)
and a *context*: the token grid of the frame the film was on when this event starts.
Sampling starts from all-masked and, over a few steps, keeps the tokens it is most sure
of and re-masks the rest (Chang et al. 2022). With the context, each new sentence
continues the film from its last frame, so a story has no cuts (Villegas et al. 2022).

The tokenizer quantizes with FSQ, so a code is a tuple of digits (e.g. 4^6 = 4096 codes,
or 8*8*8*5*5*5 = 64 000). Tokens are embedded as a sum of per-digit embeddings and
predicted as one softmax per digit: 24 output classes instead of 4096 (39 instead of
64 000), which keeps the model small enough to train on a CPU and lets each digit be
sampled with its own top-k. The digit softmaxes are independent, though: where the model
weighs two edges of a shape, each digit may side with a different one, and the drawn code
is neither. `joint_head=True` predicts the whole code with one softmax instead
(`MaskGit.with_joint_head` starts it from a digit-head model as exactly the same
distribution, so fine-tuning only adds what the digits could not say together).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ...nn.transformer import Transformer
from ...nn.weighting import weighted_mean


@dataclass
class MaskGitConfig:
    fsq_levels: tuple[int, ...] = (4, 4, 4, 4, 4, 4)  # the tokenizer's FSQ levels: one digit each
    grid: int = 8  # an 8x8 token grid per frame group
    event_grids: int = 4  # grids per 16-frame event: first frame + 3 groups of 5 frames
    context_grids: int = 1  # grids of context: the last frame of the film so far
    dim: int = 256
    depth: int = 8
    heads: int = 4
    dim_head: int = 64
    ff_mult: float = 3.0
    text_dim: int = 384  # all-MiniLM-L6-v2's width
    cond_drop: float = 0.1  # captions dropped in training, for classifier-free guidance
    joint_head: bool = False  # one softmax over all codes instead of one per digit

    def __post_init__(self):
        self.fsq_levels = tuple(self.fsq_levels)

    @property
    def event_tokens(self) -> int:
        return self.event_grids * self.grid**2

    @property
    def context_tokens(self) -> int:
        return self.context_grids * self.grid**2

    @property
    def codebook_size(self) -> int:
        return math.prod(self.fsq_levels)

    def to_dict(self) -> dict:
        return asdict(self)


def cosine_mask_ratio(u: torch.Tensor) -> torch.Tensor:
    """MaskGIT's schedule: the share of tokens masked at progress u in [0, 1]."""
    return torch.cos(u * math.pi / 2)


class MaskGit(nn.Module):
    def __init__(self, config: MaskGitConfig | None = None):
        super().__init__()
        self.config = c = config or MaskGitConfig()
        # one embedding table per digit; index `levels` of each table is [MASK]
        self.digit_embeddings = nn.ModuleList([nn.Embedding(levels + 1, c.dim) for levels in c.fsq_levels])
        for emb in self.digit_embeddings:
            # the scale of the position embeddings: at nn.Embedding's N(0, 1), six digits summed to
            # ~25x the positions (still ~20x after thousands of steps), so every [MASK] looked
            # alike after the first LayerNorm: the model could not tell where a masked token
            # was, nor copy from its neighbours
            nn.init.normal_(emb.weight, std=0.02)
        self.time_embedding = nn.Parameter(torch.randn(c.context_grids + c.event_grids, c.dim) * 0.02)
        self.space_embedding = nn.Parameter(torch.randn(c.grid * c.grid, c.dim) * 0.02)
        self.no_context = nn.Parameter(torch.randn(c.context_tokens, c.dim) * 0.02)  # stands in for an absent context
        self.text_proj = nn.Linear(c.text_dim, c.dim)
        self.null_text = nn.Parameter(torch.randn(1, c.dim) * 0.02)  # always attendable: the "no caption" token
        self.transformer = Transformer(c.dim, c.depth, heads=c.heads, dim_head=c.dim_head, ff_mult=c.ff_mult, context_dim=c.dim)
        if c.joint_head:
            self.code_head = nn.Linear(c.dim, c.codebook_size)
        else:
            self.digit_heads = nn.ModuleList([nn.Linear(c.dim, levels) for levels in c.fsq_levels])
        radix = torch.tensor([math.prod(c.fsq_levels[:i]) for i in range(len(c.fsq_levels))])
        self.register_buffer("radix", radix, persistent=False)
        self.register_buffer("levels", torch.tensor(c.fsq_levels), persistent=False)

    # -- codes <-> digits (FSQ's mixed-radix index, first level least significant)
    def to_digits(self, codes: torch.Tensor) -> torch.Tensor:
        return (codes[..., None] // self.radix) % self.levels

    def to_codes(self, digits: torch.Tensor) -> torch.Tensor:
        return (digits * self.radix).sum(-1)

    def targets(self, codes: torch.Tensor) -> torch.Tensor:
        """[..., heads]: what each output head predicts of a code (its digits, or the code)."""
        return codes[..., None] if self.config.joint_head else self.to_digits(codes)

    def from_targets(self, targets: torch.Tensor) -> torch.Tensor:
        return targets[..., 0] if self.config.joint_head else self.to_codes(targets)

    @torch.no_grad()
    def with_joint_head(self) -> MaskGit:
        """This model with one softmax over all codes, initialised to the same distribution:
        a code's logit is the sum of its digits' logits, and a softmax over those sums is the
        product of the digit softmaxes."""
        if self.config.joint_head:
            return self
        joint = MaskGit(MaskGitConfig(**{**self.config.to_dict(), "joint_head": True})).to(self.space_embedding.device)
        state = {k: v for k, v in self.state_dict().items() if not k.startswith("digit_heads.")}
        digits = self.to_digits(torch.arange(self.config.codebook_size, device=self.radix.device))  # [codes, digits]
        state["code_head.weight"] = sum(head.weight[digits[:, i]] for i, head in enumerate(self.digit_heads))
        state["code_head.bias"] = sum(head.bias[digits[:, i]] for i, head in enumerate(self.digit_heads))
        joint.load_state_dict(state)
        return joint.train(self.training)

    def embed(self, codes: torch.Tensor, masked: torch.Tensor | None = None) -> torch.Tensor:
        digits = self.to_digits(codes)
        if masked is not None:
            digits = torch.where(masked[..., None], self.levels, digits)
        return sum(emb(digits[..., i]) for i, emb in enumerate(self.digit_embeddings))

    def forward(
        self,
        codes: torch.Tensor,
        masked: torch.Tensor,
        text: torch.Tensor,
        text_mask: torch.Tensor,
        context: torch.Tensor | None = None,
        has_context: torch.Tensor | None = None,
    ) -> list[torch.Tensor]:
        """Logits for every event token, one tensor per output head: [B, N, levels_i] per
        digit, or [B, N, codebook_size] with `joint_head`.

        codes [B, N] event token codes (ignored where `masked`), masked [B, N] bool,
        text [B, L, text_dim] with text_mask [B, L] (all False = no caption),
        context [B, M] codes of the context grid(s), or None for events with no past;
        has_context [B] bool marks which rows' context is real in a mixed batch."""
        c = self.config
        b = codes.shape[0]
        no_context = self.no_context.expand(b, -1, -1)
        if context is None:
            ctx = no_context
        elif has_context is None:
            ctx = self.embed(context)
        else:
            ctx = torch.where(has_context[:, None, None], self.embed(context), no_context)
        pos = rearrange(self.time_embedding[:, None] + self.space_embedding[None], "t s d -> (t s) d")
        x = torch.cat([ctx, self.embed(codes, masked)], dim=1) + pos
        words = torch.cat([self.null_text.expand(b, -1, -1), self.text_proj(text)], dim=1)
        word_mask = torch.cat([text_mask.new_ones(b, 1), text_mask], dim=1)[:, None, None, :]
        h = self.transformer(x, context=words, context_mask=word_mask)[:, c.context_tokens :]
        return [self.code_head(h)] if c.joint_head else [head(h) for head in self.digit_heads]

    def loss(
        self,
        codes: torch.Tensor,
        text: torch.Tensor,
        text_mask: torch.Tensor,
        context: torch.Tensor | None = None,
        has_context: torch.Tensor | None = None,
        weight: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Mask a cosine-scheduled share of each event's tokens; cross-entropy on them,
        weighted per token by `weight` [B, N] if given (objects are a few tokens of 256)."""
        b, n = codes.shape
        ratio = cosine_mask_ratio(torch.rand(b, device=codes.device))
        count = (ratio * n).ceil().clamp(min=1)
        rank = torch.rand(b, n, device=codes.device).argsort(dim=-1).argsort(dim=-1)
        masked = rank < count[:, None]
        drop = torch.rand(b, device=codes.device) < self.config.cond_drop
        logits = self.forward(codes, masked, text, text_mask & ~drop[:, None], context, has_context)
        targets = self.targets(codes)
        w = None if weight is None else weight[masked].float()
        loss = sum(weighted_mean(F.cross_entropy(lg[masked].float(), targets[..., i][masked], reduction="none"), w) for i, lg in enumerate(logits))
        with torch.no_grad():
            correct = torch.stack([lg[masked].argmax(-1) == targets[..., i][masked] for i, lg in enumerate(logits)]).all(0)
        return {"loss": loss, "token_acc": correct.float().mean()}

    @torch.inference_mode()
    def generate(
        self,
        text: torch.Tensor,
        text_mask: torch.Tensor,
        context: torch.Tensor | None = None,
        *,
        has_context: torch.Tensor | None = None,
        codes: torch.Tensor | None = None,
        masked: torch.Tensor | None = None,
        steps: int = 12,
        guidance_scale: float = 3.0,
        temperature: float = 1.0,
        top_k: int | None = None,
        choice_temperature: float | None = None,
        generator: torch.Generator | None = None,
        callback: Callable[[int, int], None] | None = None,
    ) -> torch.Tensor:
        """Event token codes [B, N] by iterative parallel decoding with confidence re-masking.

        With `codes` [B, N] and `masked` [B, N] bool it infills: only the masked tokens are
        drawn (the schedule runs over each row's own masked count), the rest are kept.
        `has_context` [B] marks rows whose context is real in a mixed batch. `choice_temperature`
        scales the Gumbel noise on which tokens are kept (MaskGIT's choice temperature, annealed
        to 0 over the steps): 0 keeps the most confident, more explores the order; None = `temperature`."""
        c = self.config
        b, n = text.shape[0], c.event_tokens
        device = text.device
        if codes is None:
            codes = torch.zeros(b, n, dtype=torch.long, device=device)
            masked = torch.ones(b, n, dtype=torch.bool, device=device)
        elif masked is None or masked.shape != codes.shape or codes.shape != (b, n):
            raise ValueError(f"infilling needs codes and masked of shape [{b}, {n}]")
        masked = masked.clone()
        to_draw = masked.sum(-1)  # [B]
        guided = guidance_scale != 1.0
        choice_temperature = temperature if choice_temperature is None else choice_temperature
        if guided:  # conditional and unconditional rows in one batch
            text2 = torch.cat([text, text])
            text_mask2 = torch.cat([text_mask, torch.zeros_like(text_mask)])
            context2 = None if context is None else torch.cat([context, context])
            has_context2 = None if has_context is None else torch.cat([has_context, has_context])
        for step in range(steps):
            if guided:
                logits = self.forward(torch.cat([codes, codes]), torch.cat([masked, masked]), text2, text_mask2, context2, has_context2)
                logits = [u + guidance_scale * (cnd - u) for cnd, u in (lg.float().chunk(2) for lg in logits)]
            else:
                logits = [lg.float() for lg in self.forward(codes, masked, text, text_mask, context, has_context)]
            drawn, confidence = [], 0.0
            for lg in logits:
                lg = lg / max(temperature, 1e-6)
                if top_k is not None and top_k < lg.shape[-1]:
                    kth = lg.topk(top_k, dim=-1).values[..., -1:]
                    lg = lg.masked_fill(lg < kth, float("-inf"))
                probs = lg.softmax(-1)
                d = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, generator=generator).reshape(b, n)
                drawn.append(d)
                confidence = confidence + probs.gather(-1, d[..., None]).squeeze(-1).clamp_min(1e-12).log()
            sampled = self.from_targets(torch.stack(drawn, -1))
            codes = torch.where(masked, sampled, codes)
            remaining = (to_draw.double() * float(cosine_mask_ratio(torch.tensor((step + 1) / steps)))).floor().long()  # [B]
            if not remaining.any():
                masked = torch.zeros_like(masked)
            else:
                # MaskGIT: keep the most confident tokens; the choice is noised, less so as steps go
                noise = -torch.log(-torch.log(torch.rand(b, n, generator=generator, device=device).clamp(1e-9, 1 - 1e-9)))
                score = confidence + choice_temperature * (1 - (step + 1) / steps) * noise
                score = score.masked_fill(~masked, float("inf"))  # already-fixed tokens stay fixed
                threshold = score.sort(dim=-1).values.gather(-1, (remaining - 1).clamp_min(0)[:, None])
                masked = (score <= threshold) & (remaining[:, None] > 0)
            if callback:
                callback(step + 1, steps)
            if not masked.any():
                break
        return codes
