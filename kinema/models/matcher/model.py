"""The matcher: a 3-D CNN for the clip, an MLP over the frozen text encoder's output, and a
head that scores the pair (richer than CLIP's dot product, and the scale is small)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ...nn.conv3d import conv3d_stage, mean_max_pool
from ...text import TextEmbedding


@dataclass
class VideoTextMatcherConfig:
    frames: int = 8  # clip length it reads (the Imagen Video base's 8 frames at 4 fps)
    size: int = 32  # frame side it reads
    width: int = 24  # channels of the first convolution (then 2x, 4x, 4x)
    dim: int = 256  # the joint width of clip and text
    text_dim: int = 384  # the text encoder's (all-MiniLM-L6-v2)
    groups: int = 8  # GroupNorm groups

    def to_dict(self) -> dict:
        return asdict(self)


class VideoTextMatcher(nn.Module):
    """score(clip, caption): higher where the caption says what the clip shows."""

    def __init__(self, config: VideoTextMatcherConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or VideoTextMatcherConfig()
        widths = (c.width, 2 * c.width, 4 * c.width, 4 * c.width)
        # full frame rate throughout the first two stages: a motion is read from neighbouring frames
        strides = ((1, 1, 1), (1, 2, 2), (2, 2, 2), (2, 2, 2))
        layers: list[nn.Module] = []
        for cin, cout, stride in zip((3, *widths), widths, strides):
            layers += conv3d_stage(cin, cout, stride, c.groups)
        self.video = nn.Sequential(*layers)
        self.video_out = nn.Linear(2 * widths[-1], c.dim)  # from mean and max over space-time (mean_max_pool)
        self.text = nn.Sequential(nn.Linear(2 * c.text_dim, c.dim), nn.GELU(), nn.Linear(c.dim, c.dim))
        self.head = nn.Sequential(nn.Linear(3 * c.dim, c.dim), nn.GELU(), nn.Linear(c.dim, 1))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def embed_video(self, video: torch.Tensor) -> torch.Tensor:
        """[B, 3, frames, size, size] in [-1, 1] -> [B, dim]."""
        return self.video_out(mean_max_pool(self.video(video)))

    def embed_text(self, text: TextEmbedding) -> torch.Tensor:
        """[N, dim] from the pooled vector and the tokens' masked mean."""
        mask = text.mask.unsqueeze(-1).float()
        return self.text(torch.cat([text.pooled, (text.tokens * mask).sum(1) / mask.sum(1).clamp(min=1)], dim=-1))

    def score(self, video: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Embedded clips [B, dim] against embedded captions [B, N, dim] -> scores [B, N]."""
        v = video.unsqueeze(1).expand_as(text)
        return self.head(torch.cat([v * text, v, text], dim=-1)).squeeze(-1)

    @torch.no_grad()
    def rank(self, video: torch.Tensor, text: TextEmbedding, mirrored: TextEmbedding | None = None) -> torch.Tensor:
        """Scores [K] of K clips [K, 3, frames, size, size] under one caption. With `mirrored`
        (the caption as the clips mirrored left to right say it: kinema.data.grounding.
        mirrored_caption), the mean of the two ways of asking: the Shapes world is the same in
        a mirror, so a leaning to one side cancels (the imagen-video-shapes card, "Played
        backwards, and asked in a mirror")."""
        scores = self.score(self.embed_video(video).float(), self.embed_text(text).float().expand(video.shape[0], -1).unsqueeze(1))[:, 0]
        if mirrored is None:
            return scores
        return (scores + self.rank(video.flip(-1), mirrored)) / 2

    def forward(self, video: torch.Tensor, text: TextEmbedding, negatives: int) -> torch.Tensor:
        """Scores [B, 1 + negatives + B - 1] of each clip against its caption (column 0), its
        `negatives` changed captions, then the batch's other captions. `text` holds the B
        captions, then each clip's negatives in turn."""
        B = video.shape[0]
        t = self.embed_text(text)
        own, changed = t[:B], t[B:].reshape(B, negatives, -1)
        others = own.unsqueeze(0).expand(B, -1, -1)[~torch.eye(B, dtype=torch.bool, device=t.device)].reshape(B, B - 1, -1)
        return self.score(self.embed_video(video), torch.cat([own.unsqueeze(1), changed, others], dim=1))


def matching_loss(model: VideoTextMatcher, batch) -> dict[str, torch.Tensor]:
    """Cross-entropy of the clip's own caption among its candidates, and how often the own
    caption beats a changed one (the part that teaches a motion's way). Where the batch marks
    clips whose reverse shows another scene (`MatcherBatch.backwards`), also the clip against
    itself played backwards under its caption: the same pixels, so only the order of the
    frames can tell them apart (the imagen-video-shapes card, "Played backwards, and asked
    in a mirror")."""
    scores = model(batch.video, batch.text, batch.negatives)
    loss = F.cross_entropy(scores.float(), torch.zeros(scores.shape[0], dtype=torch.long, device=scores.device))
    out = {"loss": loss, "beats_changed": (scores[:, :1] > scores[:, 1 : 1 + batch.negatives]).float().mean().detach()}
    one_way = batch.backwards
    if one_way.any():
        own = model.embed_text(batch.text[: scores.shape[0]])[one_way]
        played = model.score(model.embed_video(batch.video[one_way].flip(2)), own.unsqueeze(1))[:, 0]
        kept = scores[one_way, 0]
        out["loss"] = loss + F.softplus((played - kept).float()).mean()  # the two-way cross-entropy, the clip first
        out["beats_backwards"] = (kept > played).float().mean().detach()
    return out
