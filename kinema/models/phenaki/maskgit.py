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

from ...nn.grounding import grounding_loss
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


BINDING_MARGIN = 1.0  # nats per object token (summed over the output heads) a swapped caption must lose by


def cosine_mask_ratio(u: torch.Tensor) -> torch.Tensor:
    """MaskGIT's schedule: the share of tokens masked at progress u in [0, 1]."""
    return torch.cos(u * math.pi / 2)


def lowest(score: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """[B, N] bool: each row's `count` [B] lowest scores, ties broken by position, so
    exactly that many are picked even when scores tie (a greedy draw's are all 0)."""
    return score.argsort(dim=-1, stable=True).argsort(dim=-1) < count[:, None]


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

    @torch.no_grad()
    def deepened(self, extra: int) -> MaskGit:
        """This model with `extra` more transformer blocks on top, started as identities
        (`TransformerBlock.zero_residuals`): the same predictions, more capacity to train."""
        c = self.config
        deeper = MaskGit(MaskGitConfig(**{**c.to_dict(), "depth": c.depth + extra})).to(self.space_embedding.device)
        deeper.load_state_dict({**deeper.state_dict(), **self.state_dict()})
        for block in deeper.transformer.blocks[c.depth :]:
            block.zero_residuals()
        return deeper.train(self.training)

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
        cross_weights: list[torch.Tensor] | None = None,
    ) -> list[torch.Tensor]:
        """Logits for every event token, one tensor per output head: [B, N, levels_i] per
        digit, or [B, N, codebook_size] with `joint_head`.

        codes [B, N] event token codes (ignored where `masked`), masked [B, N] bool,
        text [B, L, text_dim] with text_mask [B, L] (all False = no caption),
        context [B, M] codes of the context grid(s), or None for events with no past;
        has_context [B] bool marks which rows' context is real in a mixed batch; a
        `cross_weights` list receives each layer's attention from the event tokens to the
        words, [B, heads, N, L] (the "no caption" token left out)."""
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
        weights = None if cross_weights is None else []
        h = self.transformer(x, context=words, context_mask=word_mask, cross_weights=weights)[:, c.context_tokens :]
        if weights is not None:
            cross_weights += [w[:, :, c.context_tokens :, 1:] for w in weights]
        return [self.code_head(h)] if c.joint_head else [head(h) for head in self.digit_heads]

    def loss(
        self,
        codes: torch.Tensor,
        text: torch.Tensor,
        text_mask: torch.Tensor,
        context: torch.Tensor | None = None,
        has_context: torch.Tensor | None = None,
        weight: torch.Tensor | None = None,
        grounding: tuple[torch.Tensor, torch.Tensor] | None = None,
        grounding_weight: float = 0.0,
        negatives: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
        binding_weight: float = 0.0,
    ) -> dict[str, torch.Tensor]:
        """Mask a cosine-scheduled share of each event's tokens; cross-entropy on them,
        weighted per token by `weight` [B, N] if given (objects are a few tokens of 256).
        With `grounding` = (object tokens [B, K, N], object words [B, K, L]) bool, adds
        `grounding_weight` x `kinema.nn.grounding.grounding_loss` on the cross-attention.
        With `negatives` = (text [B, L', D], mask [B, L'], rows [B] bool, object tokens
        [B, N] bool), adds `binding_weight` x `binding_loss` on the rows that have one."""
        b, n = codes.shape
        ratio = cosine_mask_ratio(torch.rand(b, device=codes.device))
        count = (ratio * n).ceil().clamp(min=1)
        masked = lowest(torch.rand(b, n, device=codes.device), count)
        drop = torch.rand(b, device=codes.device) < self.config.cond_drop
        cross_weights = [] if grounding is not None and grounding_weight else None
        logits = self.forward(codes, masked, text, text_mask & ~drop[:, None], context, has_context, cross_weights)
        targets = self.targets(codes)
        w = None if weight is None else weight[masked].float()
        loss = sum(weighted_mean(F.cross_entropy(lg[masked].float(), targets[..., i][masked], reduction="none"), w) for i, lg in enumerate(logits))
        with torch.no_grad():
            correct = torch.stack([lg[masked].argmax(-1) == targets[..., i][masked] for i, lg in enumerate(logits)]).all(0)
        out = {"loss": loss, "token_acc": correct.float().mean()}
        if negatives is not None and binding_weight:
            neg_text, neg_mask, rows, objects = negatives
            hidden = masked & objects  # the object tokens this row must predict
            rows = rows & ~drop & hidden.any(-1)  # a dropped caption has nothing to bind; nor a row with no masked object
            nothing = torch.full((), float("nan"), device=codes.device)
            out.update(binding=nothing, binding_gap=nothing)  # NaN: nothing measured (the trainer's logs leave it out)
            if rows.any():
                picked = lambda t: None if t is None else t[rows]  # noqa: E731
                neg_logits = self.forward(codes[rows], masked[rows], neg_text[rows], neg_mask[rows], picked(context), picked(has_context))
                hinge, gap = self.binding_loss([lg[rows] for lg in logits], neg_logits, targets[rows], hidden[rows])
                out.update(binding=hinge, binding_gap=gap.detach())
                out["loss"] = out["loss"] + binding_weight * hinge
        if cross_weights is not None:
            tokens, words = grounding
            words = words[:, :, : text.shape[1]] & ~drop[:, None, None]  # a dropped caption has no words to ground
            out["grounding"] = grounding_loss(cross_weights, tokens, words)
            out["loss"] = out["loss"] + grounding_weight * out["grounding"]
        return out

    @staticmethod
    def binding_loss(logits: list[torch.Tensor], negative_logits: list[torch.Tensor], targets: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """How much likelier each row's object `tokens` [B, N] (at least one per row) are
        under its caption than under the same words bound the other way (two objects'
        shapes or motions swapped): the gap, a row's mean over its tokens of the negative's
        minus the caption's cross-entropy, and a hinge on it, both averaged over the rows:
        (mean max(0, BINDING_MARGIN - gap), mean gap). The masked-token loss alone is
        satisfied by a model that reads *what* a caption names, not *which object* is
        which; this asks for the second."""

        def nll(lgs: list[torch.Tensor]) -> torch.Tensor:  # [B, N], summed over the heads
            return sum(F.cross_entropy(rearrange(lg.float(), "b n c -> b c n"), targets[..., i], reduction="none") for i, lg in enumerate(lgs))

        gap = ((nll(negative_logits) - nll(logits)) * tokens).sum(-1) / tokens.sum(-1)
        return F.relu(BINDING_MARGIN - gap).mean(), gap.mean()

    def guided_logits(self, codes, masked, text, text_mask, context, has_context, guidance_scale: float) -> list[torch.Tensor]:
        """fp32 logits per head, with classifier-free guidance: u + s (c - u), the conditional
        and unconditional rows run as one batch."""
        if guidance_scale == 1.0:
            return [lg.float() for lg in self.forward(codes, masked, text, text_mask, context, has_context)]

        def twice(x: torch.Tensor | None) -> torch.Tensor | None:
            return None if x is None else torch.cat([x, x])

        logits = self.forward(twice(codes), twice(masked), twice(text), torch.cat([text_mask, torch.zeros_like(text_mask)]), twice(context), twice(has_context))
        return [u + guidance_scale * (cnd - u) for cnd, u in (lg.float().chunk(2) for lg in logits)]

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
        refine_rounds: int = 0,
        refine_share: float = 0.2,
        refine_steps: int = 4,
        generator: torch.Generator | None = None,
        callback: Callable[[int, int], None] | None = None,
    ) -> torch.Tensor:
        """Event token codes [B, N] by iterative parallel decoding with confidence re-masking.

        With `codes` [B, N] and `masked` [B, N] bool it infills: only the masked tokens are
        drawn (the schedule runs over each row's own masked count), the rest are kept.
        `has_context` [B] marks rows whose context is real in a mixed batch. `choice_temperature`
        scales the Gumbel noise on which tokens are kept (MaskGIT's choice temperature, annealed
        to 0 over the steps): 0 keeps the most confident, more explores the order; None = `temperature`.
        `refine_rounds` > 0 then re-masks the `refine_share` of drawn tokens the model finds
        least likely given all the others and redraws them in `refine_steps` steps (`refine`)."""
        b, n = text.shape[0], self.config.event_tokens
        if codes is None:
            codes = torch.zeros(b, n, dtype=torch.long, device=text.device)
            masked = torch.ones(b, n, dtype=torch.bool, device=text.device)
        elif masked is None or masked.shape != codes.shape or codes.shape != (b, n):
            raise ValueError(f"infilling needs codes and masked of shape [{b}, {n}]")
        cond = dict(text=text, text_mask=text_mask, context=context, has_context=has_context, guidance_scale=guidance_scale)
        draw = dict(temperature=temperature, top_k=top_k, choice_temperature=temperature if choice_temperature is None else choice_temperature, generator=generator)
        total = steps + refine_rounds * refine_steps
        drawable = masked
        codes = self._decode(codes, masked, steps, **cond, **draw, callback=callback and (lambda i, _: callback(i, total)))
        for r in range(refine_rounds):
            done = steps + r * refine_steps
            codes = self.refine(codes, drawable, refine_share, refine_steps, **cond, **draw, callback=callback and (lambda i, _, done=done: callback(done + i, total)))
        return codes

    @torch.inference_mode()
    def token_log_likelihood(self, codes, text, text_mask, context=None, *, has_context=None, guidance_scale: float = 3.0, folds: int = 4, generator=None) -> torch.Tensor:
        """[B, N] log p(token | the rest) under the guided model: the tokens are split at random
        into `folds` shares, and each share is masked in turn and scored from the others (a
        pseudo-likelihood; `folds` forward passes)."""
        b, n = codes.shape
        fold = torch.randint(0, folds, (b, n), generator=generator, device=generator.device if generator else codes.device).to(codes.device)
        targets = self.targets(codes)
        score = torch.zeros(b, n, device=codes.device)
        for f in range(folds):
            masked = fold == f
            logits = self.guided_logits(codes, masked, text, text_mask, context, has_context, guidance_scale)
            logp = sum(lg.log_softmax(-1).gather(-1, targets[..., i : i + 1]).squeeze(-1) for i, lg in enumerate(logits))
            score = torch.where(masked, logp, score)
        return score

    @torch.inference_mode()
    def refine(self, codes, drawable, share: float, steps: int, *, text, text_mask, context, has_context, guidance_scale, callback=None, **draw) -> torch.Tensor:
        """Re-mask the `share` of `drawable` tokens the model finds least likely given all the
        others, and redraw them. MaskGIT never revisits a token it kept, so a patch drawn early
        that disagrees with the object finally drawn around it stays: a stray patch grows into
        an extra object, a circle's edge rounds a square's corner (on phenaki-shapes one round
        roughly halves the extra objects; its card has the numbers). Token-Critic (Lezama et
        al. 2022) trains a second transformer to pick the tokens to redraw; here the MaskGIT
        is its own critic, so nothing more is trained."""
        score = self.token_log_likelihood(codes, text, text_mask, context, has_context=has_context, guidance_scale=guidance_scale, generator=draw.get("generator"))
        count = (drawable.sum(-1).double() * share).floor().long()  # [B]
        remask = lowest(score.masked_fill(~drawable, float("inf")), count)
        return self._decode(codes, remask, steps, text=text, text_mask=text_mask, context=context, has_context=has_context, guidance_scale=guidance_scale, callback=callback, **draw)

    def _decode(self, codes, masked, steps, *, text, text_mask, context, has_context, guidance_scale, temperature, top_k, choice_temperature, generator, callback=None) -> torch.Tensor:
        """MaskGIT's loop: draw every masked token, keep the most confident (the kept share
        following the cosine schedule), re-mask the rest, `steps` times."""
        b, n = codes.shape
        masked = masked.clone()
        to_draw = masked.sum(-1)  # [B]
        for step in range(steps):
            logits = self.guided_logits(codes, masked, text, text_mask, context, has_context, guidance_scale)
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
                noise = -torch.log(-torch.log(torch.rand(b, n, generator=generator, device=codes.device).clamp(1e-9, 1 - 1e-9)))
                score = confidence + choice_temperature * (1 - (step + 1) / steps) * noise
                masked = lowest(score.masked_fill(~masked, float("inf")), remaining)  # already-fixed tokens stay fixed
            if callback:
                callback(step + 1, steps)
            if not masked.any():
                break
        return codes
