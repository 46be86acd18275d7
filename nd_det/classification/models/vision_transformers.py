"""Vision transformers as Classifiers: torchvision's ViT-B/16, and timm's ViT-S/16 and DeiT-B
with its distillation token (torchvision has neither; timm is the library their users already
use, installed as the optional extra ``pip install 'nd-det[timm]'``).

Each keeps its library's module and parameter names, so that library's state dicts load with
every key matched.  Embedding: the class token after the final norm (DeiT: the mean of the class
and distillation tokens, the reference's DeiT student); a transformer has no stage maps, so the
feature lists hold the embedding level only (ReviewKD does not apply).  The position embedding
is sized for ``image_size`` (224 for the published weights).
"""

from functools import partial

import torch
import torchvision

from ...errors import ConfigError
from ..outputs import ClassifierOutput
from .base import Classifier
from .registry import register_classifier

__all__ = ["TorchvisionViT", "TimmViT"]


class _TokenClassifier(Classifier):
    def _init_dims(self, dim: int, num_classes: int) -> None:
        self.num_classes, self.embedding_dim, self.feature_channels = num_classes, dim, [dim]

    @staticmethod
    def _output(embedding, logits, distill_logits=None) -> ClassifierOutput:
        level = embedding[:, :, None, None]
        return ClassifierOutput(logits, embedding, [level], [level], distill_logits)


class TorchvisionViT(_TokenClassifier):
    def __init__(self, arch: str, num_classes: int, in_channels: int = 3, image_size: int = 224):
        super().__init__()
        if in_channels != 3:
            raise ConfigError(f"{arch} takes RGB images; got a dataset of {in_channels} channel(s)")
        net = getattr(torchvision.models, arch)(
            weights=None, num_classes=num_classes, image_size=image_size
        )
        self.conv_proj, self.class_token = net.conv_proj, net.class_token
        self.encoder, self.heads = net.encoder, net.heads
        self._init_dims(net.hidden_dim, num_classes)

    def forward(self, x):
        # torchvision's VisionTransformer.forward, keeping the class token before the head
        x = self.conv_proj(x).flatten(2).transpose(1, 2)
        tokens = self.encoder(torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], 1))
        return self._output(tokens[:, 0], self.heads(tokens[:, 0]))


class TimmViT(_TokenClassifier):
    def __init__(
        self,
        arch: str,
        num_classes: int,
        in_channels: int = 3,
        image_size: int = 224,
        drop_path_rate: float = 0.0,
    ):
        super().__init__()
        import timm  # the optional extra: only these models need it

        net = timm.create_model(
            arch,
            pretrained=False,
            num_classes=num_classes,
            in_chans=in_channels,
            img_size=image_size,
            drop_path_rate=drop_path_rate,
        )
        # timm's modules and parameters under timm's names (this class runs the forward)
        for name, child in net.named_children():
            self.add_module(name, child)
        for name, param in net.named_parameters(recurse=False):
            self.register_parameter(name, param)
        self._init_dims(net.embed_dim, num_classes)

    def forward(self, x):
        # timm's VisionTransformer(Distilled) forward for these models (prefix tokens, then the
        # position embedding over all tokens; no register tokens), keeping the tokens
        x = self.patch_embed(x)
        prefix = [self.cls_token] + ([self.dist_token] if hasattr(self, "dist_token") else [])
        x = torch.cat([t.expand(x.shape[0], -1, -1) for t in prefix] + [x], 1) + self.pos_embed
        tokens = self.norm(self.blocks(self.norm_pre(self.patch_drop(self.pos_drop(x)))))
        if not hasattr(self, "head_dist"):
            embedding = self.fc_norm(tokens[:, 0])
            return self._output(embedding, self.head(self.head_drop(embedding)))
        logits = self.head(self.head_drop(tokens[:, 0]))
        distill_logits = self.head_dist(self.head_drop(tokens[:, 1]))
        if not self.training:  # DeiT's evaluation: the mean of both heads
            logits = (logits + distill_logits) / 2
        return self._output((tokens[:, 0] + tokens[:, 1]) / 2, logits, distill_logits)


register_classifier("vit_b_16", "vit", "torchvision ViT-B/16", options=("image_size",))(
    partial(TorchvisionViT, "vit_b_16")
)
_TIMM_OPTIONS = ("image_size", "drop_path_rate")
register_classifier(
    "vit_s_16", "vit", "timm vit_small_patch16_224 (ViT-S/16)", _TIMM_OPTIONS, "timm"
)(partial(TimmViT, "vit_small_patch16_224"))
register_classifier(
    "deit_b_distilled",
    "vit",
    "timm deit_base_distilled_patch16_224 (DeiT-B with its distillation token)",
    _TIMM_OPTIONS,
    "timm",
)(partial(TimmViT, "deit_base_distilled_patch16_224"))
