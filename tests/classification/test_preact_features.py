"""Stage features before the final ReLU (``preact_features``), as the ReviewKD reference code
takes them, against a slow recomputation written out layer by layer from each model's own
sub-modules; the same recomputation gives the post-ReLU ``features``, the embedding and the
logits, so exposing the pre-activation maps changed nothing else.

Every model runs in eval mode with random BatchNorm statistics and affine parameters, so a
BatchNorm is not the identity and pre-activation maps really have negative values.
"""

import pytest
import torch
import torch.nn.functional as F
import torchvision

from nd_det.classification.models import build_classifier

NUM_CLASSES = 7


def _randomised(name, seed=0):
    torch.manual_seed(seed)
    model = build_classifier(name, NUM_CLASSES)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    return model.eval()


def _head(model, final_map):
    embedding = final_map.mean(dim=(2, 3))
    return embedding, embedding @ model.fc.weight.t() + model.fc.bias


# ------------------------------------------------------------------ slow recomputations
def _slow_cifar_resnet(model, x):
    """Stem, then per BasicBlock: relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))."""
    x = model.stem(x)
    post, pre = [], []
    for stage in model.stages:
        for block in stage:
            y = torch.relu(block.bn1(block.conv1(x)))
            s = block.bn2(block.conv2(y)) + block.shortcut(x)
            x = torch.relu(s)
        pre.append(s)
        post.append(x)
    return post, pre, x


def _slow_bottleneck_resnet(model, x):
    x = model.stem(x)
    post, pre = [], []
    for stage in model.stages:
        for block in stage:
            y = torch.relu(block.bn1(block.conv1(x)))
            y = torch.relu(block.bn2(block.conv2(y)))
            s = block.bn3(block.conv3(y)) + block.shortcut(x)
            x = torch.relu(s)
        pre.append(s)
        post.append(x)
    return post, pre, x


def _slow_wrn(model, x):
    """Pre-activation blocks; the reference's preact map of a stage is the stage output after
    the next BatchNorm (next stage's first bn1, or the final BN), before its ReLU."""
    x = model.stem(x)
    post = []
    for stage in model.stages:
        for block in stage:
            a = torch.relu(block.bn1(x))
            y = block.conv2(torch.relu(block.bn2(block.conv1(a))))
            x = y + (x if block.projection is None else block.projection(a))
        post.append(x)
    following = [model.stages[1][0].bn1, model.stages[2][0].bn1, model.final[0]]
    pre = [bn(f) for bn, f in zip(following, post)]
    return post, pre, torch.relu(pre[-1])


def _slow_shufflenet_v1(model, x):
    """Units: 1x1 group conv, BN, ReLU, shuffle, depthwise 3x3, BN, ReLU (the reference's
    CIFAR/Models/shufflenetv1.py has this ReLU), 1x1 group conv, BN; add or concatenate the
    (pooled) input; ReLU."""
    x = model.stem(x)
    post, pre = [], []
    for stage in model.stages:
        for unit in stage:
            y = torch.relu(unit.bn1(unit.conv1(x)))
            y = F.channel_shuffle(y, unit.first_groups)
            y = torch.relu(unit.bn2(unit.conv2(y)))
            y = unit.bn3(unit.conv3(y))
            if unit.stride == 2:
                s = torch.cat([y, F.avg_pool2d(x, 3, 2, 1)], dim=1)
            else:
                s = y + x
            x = torch.relu(s)
        pre.append(s)
        post.append(x)
    return post, pre, x


def _slow_shufflenet_v2(model, x):
    """The reference's preact of a split unit: [untouched half, branch before its last ReLU],
    concatenated and not shuffled (CIFAR/ReviewKD++/models/shufflenetv2.py)."""
    x = model.stem(x)
    post, pre = [], []
    for stage in model.stages:
        x = stage[0](x)  # the stride-2 unit ends with a ReLU on both branches, no preact map
        for unit in stage[1:]:
            half = x.shape[1] // 2
            keep, work = x[:, :half], x[:, half:]
            b = unit.branch[0](work)
            b = unit.branch[1](b)
            b = unit.branch[2][1](unit.branch[2][0](b))  # last conv + BN, no ReLU yet
            s = torch.cat([keep, b], dim=1)
            x = F.channel_shuffle(torch.cat([keep, torch.relu(b)], dim=1), 2)
        pre.append(s)
        post.append(x)
    return post, pre, model.last(x)


def _slow_mobilenet_v2(model, x):
    """Groups end with a linear bottleneck: the tapped groups' outputs are both maps."""
    x = model.stem(x)
    post = []
    for index, group in enumerate(model.groups):
        for unit in group:
            y = unit.body(x)
            x = x + y if unit.use_residual else y
        if index in (1, 2, 4, 6):
            post.append(x)
    return post, post, model.last(x)


def _slow_mobilenet_v1(model, x):
    """Depthwise-separable blocks; the tapped blocks' maps are taken after their last BN."""
    x = model.stem(x)
    post, pre = [], []
    for index, block in enumerate(model.blocks):
        dw, bn1, _, pw, bn2, _ = block
        s = bn2(pw(torch.relu(bn1(dw(x)))))
        x = torch.relu(s)
        if index in (2, 4, 10, 12):
            pre.append(s)
            post.append(x)
    return post, pre, x


SLOW = {
    "resnet20": (_slow_cifar_resnet, 32),
    "resnet8x4": (_slow_cifar_resnet, 32),
    "resnet50_cifar": (_slow_bottleneck_resnet, 16),
    "wrn_16_2": (_slow_wrn, 32),
    "wrn_40_1": (_slow_wrn, 32),
    "shufflenet_v1": (_slow_shufflenet_v1, 32),
    "shufflenet_v2": (_slow_shufflenet_v2, 32),
    "mobilenet_v2_cifar": (_slow_mobilenet_v2, 32),
    "mobilenet_v1": (_slow_mobilenet_v1, 64),
}


# families whose stage outputs end with a ReLU (WRN stages end with a residual sum, MobileNetV2
# groups with a linear bottleneck)
POST_RELU_STAGES = {
    "resnet20",
    "resnet8x4",
    "resnet50_cifar",
    "shufflenet_v1",
    "shufflenet_v2",
    "mobilenet_v1",
}


@pytest.mark.parametrize("name", sorted(SLOW))
def test_features_preact_features_and_logits_equal_the_slow_recomputation(name):
    slow, size = SLOW[name]
    model = _randomised(name)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model(x)
        post, pre, final_map = slow(model, x)
        embedding, logits = _head(model, final_map)
    assert len(out.features) == len(out.preact_features) == len(post) + 1
    for level, (got, want) in enumerate(zip(out.features, post)):
        torch.testing.assert_close(got, want, msg=f"{name} features[{level}]")
    for level, (got, want) in enumerate(zip(out.preact_features, pre)):
        torch.testing.assert_close(got, want, msg=f"{name} preact_features[{level}]")
    # the deepest level of both lists is the embedding (the reference's pooled map)
    assert out.preact_features[-1] is out.features[-1]
    torch.testing.assert_close(out.features[-1].flatten(1), embedding)
    torch.testing.assert_close(out.embedding, embedding)
    torch.testing.assert_close(out.logits, logits)
    if name != "mobilenet_v2_cifar":  # every other family has a ReLU that the preact maps skip
        assert all(p.min() < 0 for p in out.preact_features[:-1])
    if name in POST_RELU_STAGES:
        assert all(f.min() >= 0 for f in out.features[:-1])


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_torchvision_resnets_preact_maps_are_the_last_block_sums(arch):
    """torchvision's own blocks, observed with hooks: the pre-ReLU map of each layer is the last
    block's final BN output plus its identity (the block input, or the downsample output); the
    logits equal those of torchvision's untouched model with the same weights."""
    model = _randomised(arch)
    reference = getattr(torchvision.models, arch)(weights=None, num_classes=NUM_CLASSES).eval()
    reference.load_state_dict(model.state_dict())
    seen = {}

    def keep_output(key):  # clones: torchvision adds the identity and applies ReLU in place
        return lambda module, args, output: seen.__setitem__(key, output.clone())

    def keep_input(key):
        return lambda module, args: seen.__setitem__(key, args[0].clone())

    handles = []
    for index, layer in enumerate(
        (reference.layer1, reference.layer2, reference.layer3, reference.layer4)
    ):
        last = layer[-1]
        final_bn = last.bn3 if hasattr(last, "bn3") else last.bn2
        handles += [
            last.register_forward_pre_hook(keep_input(("in", index))),
            final_bn.register_forward_hook(keep_output(("bn", index))),
            layer.register_forward_hook(keep_output(("out", index))),
        ]
        if last.downsample is not None:
            handles.append(last.downsample.register_forward_hook(keep_output(("ds", index))))
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out = model(x)
        logits = reference(x)
    for h in handles:
        h.remove()
    for i in range(4):
        identity = seen.get(("ds", i), seen[("in", i)])
        torch.testing.assert_close(out.preact_features[i], seen[("bn", i)] + identity)
        torch.testing.assert_close(out.features[i], seen[("out", i)])
        assert out.preact_features[i].min() < 0 <= out.features[i].min()
    torch.testing.assert_close(out.logits, logits)


def test_wrn_normalises_each_stage_output_once_in_training():
    """The BN whose output is a preact map is the one the next block uses, run once per pass:
    its running statistics advance by one batch, not two."""
    model = build_classifier("wrn_16_1", NUM_CLASSES).train()
    model(torch.randn(4, 3, 32, 32))
    following = [model.stages[1][0].bn1, model.stages[2][0].bn1, model.final[0]]
    assert [int(bn.num_batches_tracked) for bn in following] == [1, 1, 1]


def test_preact_maps_carry_gradients_to_the_student():
    model = build_classifier("resnet8", NUM_CLASSES).train()
    out = model(torch.randn(2, 3, 32, 32))
    sum(p.sum() for p in out.preact_features[:-1]).backward()
    assert model.stages[2][-1].conv2.weight.grad.abs().sum() > 0
