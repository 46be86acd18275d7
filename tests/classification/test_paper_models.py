"""The ImageNet models of the paper's rows (docs/paper_rows.md) at their real size: parameter
counts against the published ones, one forward of a small batch (on the meta device: shapes
without the arithmetic), and the transformers' and RegNet's outputs equal to their libraries'
own forward on the same weights (small inputs on the CPU)."""

import pytest
import timm
import torch
import torchvision

from nd_det.classification.models import build_classifier

# name -> (torchvision's weights enum whose meta documents the count, or the published count
# rounded to 0.1 M where torchvision has no such model)
PUBLISHED = {
    "resnet18": "ResNet18_Weights",
    "resnet34": "ResNet34_Weights",
    "resnet50": "ResNet50_Weights",
    "resnet101": "ResNet101_Weights",
    "resnet152": "ResNet152_Weights",
    "vit_b_16": "ViT_B_16_Weights",
    "regnet_y_16gf": "RegNet_Y_16GF_Weights",
    "mobilenet_v1": 4.2e6,  # Howard et al. 2017, Table 8: 1.0 MobileNet-224
    "vit_s_16": 22.1e6,  # timm's vit_small_patch16_224 model card
    "deit_b_distilled": 87.3e6,  # timm's deit_base_distilled_patch16_224 model card (DeiT: 87M)
}
EMBEDDING = {
    "resnet18": 512,
    "resnet34": 512,
    "resnet50": 2048,
    "resnet101": 2048,
    "resnet152": 2048,
    "mobilenet_v1": 1024,
    "vit_b_16": 768,
    "vit_s_16": 384,
    "deit_b_distilled": 768,
    "regnet_y_16gf": 3024,
}


def _real_size(name):
    """The 1000-class model; on the meta device, except RegNet (torchvision computes its widths
    with tensor arithmetic, which the meta device cannot run: built on the CPU, 0.6 s)."""
    if name == "regnet_y_16gf":
        return build_classifier(name, 1000)
    with torch.device("meta"):
        return build_classifier(name, 1000)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_parameter_count_and_one_forward_at_real_size(name):
    model = _real_size(name)
    count = sum(p.numel() for p in model.parameters())
    published = PUBLISHED[name]
    if isinstance(published, str):
        weights = getattr(torchvision.models, published).IMAGENET1K_V1
        assert count == weights.meta["num_params"]
    else:
        assert round(count / 1e5) == round(published / 1e5), count
    out = model.to("meta").train()(torch.empty(2, 3, 224, 224, device="meta"))
    assert out.logits.shape == (2, 1000) and out.embedding.shape == (2, EMBEDDING[name])
    assert model.embedding_dim == EMBEDDING[name]
    assert (out.distill_logits is not None) == (name == "deit_b_distilled")


@pytest.mark.parametrize(
    "name,library",
    [
        (
            "vit_s_16",
            lambda: timm.create_model("vit_small_patch16_224", num_classes=5, img_size=32),
        ),
        (
            "deit_b_distilled",
            lambda: timm.create_model(
                "deit_base_distilled_patch16_224", num_classes=5, img_size=32
            ),
        ),
        ("vit_b_16", lambda: torchvision.models.vit_b_16(num_classes=5, image_size=32)),
        ("regnet_y_16gf", lambda: torchvision.models.regnet_y_16gf(num_classes=5)),
    ],
)
def test_outputs_equal_the_library_forward(name, library):
    torch.manual_seed(0)
    model = build_classifier(name, 5, image_size=32)
    reference = library()
    state = model.state_dict()
    for key, value in state.items():  # a random head too (torchvision's ViT starts at zero)
        if key.startswith("heads."):
            state[key] = torch.randn_like(value)
    reference.load_state_dict(state)  # strict: the library's key names
    model.load_state_dict(state)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = model.eval()(x)
        torch.testing.assert_close(out.logits, reference.eval()(x))
        if name in ("vit_s_16", "deit_b_distilled"):  # timm's pre-logits feature
            pooled = reference.forward_head(reference.forward_features(x), pre_logits=True)
            torch.testing.assert_close(out.embedding, pooled)
        if name == "deit_b_distilled":  # training: the two heads apart, as DeiT trains them
            reference.set_distilled_training(True)
            cls, dist = reference.train()(x)
            train_out = model.train()(x)
            torch.testing.assert_close((train_out.logits, train_out.distill_logits), (cls, dist))
