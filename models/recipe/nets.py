"""The two model families, their early-exit heads, and the segment wrappers used for export.

Both backbones are a stem followed by a flat list of blocks (`self.blocks`); an early-exit
insertion point i (1-based) sits after block i, so "ee3" means "exit after the third block",
the study's EEi numbering.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

NUM_CLASSES = 10


# ---------------------------------------------------------------------------- resnet (large)

class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


# (out channels, stride) per block; 28x28 -> 28 -> 28 -> 14 -> 14 -> 7 -> 7. Most of the compute sits
# at full resolution (about 54 M multiply-adds, >= 1 ms at batch 1 here) while the parameters stay
# near 0.33 M: every early-exit chain holds a full copy of the weights and the committed zoo has a
# size budget.
RESNET_BLOCKS = ((32, 1), (32, 1), (48, 2), (48, 1), (80, 2), (80, 1))


class ResNet(nn.Module):
    family = "resnet"

    def __init__(self, blocks=RESNET_BLOCKS, stem=32):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, stem, 3, 1, 1, bias=False), nn.BatchNorm2d(stem),
                                  nn.ReLU(inplace=True))
        layers, cin = [], stem
        for cout, s in blocks:
            layers.append(BasicBlock(cin, cout, s))
            cin = cout
        self.blocks = nn.ModuleList(layers)
        self.classifier = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                        nn.Linear(cin, NUM_CLASSES))
        self.out_channels = [c for c, _ in blocks]

    def forward(self, x):
        x = self.stem(x)
        for b in self.blocks:
            x = b(x)
        return self.classifier(x)


def resnet_head(channels):
    """The study's ResNet exit: pooling + flatten + one fully connected layer."""
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, NUM_CLASSES))


# ---------------------------------------------------------------------------- mobilenet (compact)

class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand (ReLU6) -> 3x3 depthwise (ReLU6) -> 1x1 linear project."""

    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hid = cin * expand
        self.use_res = stride == 1 and cin == cout
        layers = []
        if expand != 1:
            layers += [nn.Conv2d(cin, hid, 1, bias=False), nn.BatchNorm2d(hid), nn.ReLU6(inplace=True)]
        layers += [nn.Conv2d(hid, hid, 3, stride, 1, groups=hid, bias=False), nn.BatchNorm2d(hid),
                   nn.ReLU6(inplace=True),
                   nn.Conv2d(hid, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_res else self.conv(x)


# (expand, out channels, stride) per block; 28 -> 14 (b1) -> 7 (b4)
MOBILENET_BLOCKS = ((1, 16, 1), (4, 24, 2), (4, 24, 1), (4, 40, 2), (4, 40, 1), (4, 40, 1),
                    (4, 80, 1), (4, 80, 1))
MOBILENET_LAST = 256


class MobileNet(nn.Module):
    family = "mobilenet"

    def __init__(self, blocks=MOBILENET_BLOCKS, stem=24, last=MOBILENET_LAST):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, stem, 3, 1, 1, bias=False), nn.BatchNorm2d(stem),
                                  nn.ReLU6(inplace=True))
        layers, cin = [], stem
        for t, c, s in blocks:
            layers.append(InvertedResidual(cin, c, s, t))
            cin = c
        self.blocks = nn.ModuleList(layers)
        self.classifier = nn.Sequential(
            nn.Conv2d(cin, last, 1, bias=False), nn.BatchNorm2d(last), nn.ReLU6(inplace=True),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.1), nn.Linear(last, NUM_CLASSES))
        self.out_channels = [c for _, c, _ in blocks]

    def forward(self, x):
        x = self.stem(x)
        for b in self.blocks:
            x = b(x)
        return self.classifier(x)


def mobilenet_head(channels):
    """The study's compact-net exit: one inverted-residual block + pooling + fully connected."""
    width = 64
    return nn.Sequential(InvertedResidual(channels, width, 1, 2), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(width, NUM_CLASSES))


FAMILIES = {
    "resnet": {"cls": ResNet, "head": resnet_head, "exits": (2, 4, 5)},
    "mobilenet": {"cls": MobileNet, "head": mobilenet_head, "exits": (3, 5, 7)},
}


def build(family):
    return FAMILIES[family]["cls"]()


class ExitHeads(nn.Module):
    """One head per insertion point, keyed by the 1-based block index."""

    def __init__(self, family, model):
        super().__init__()
        pos = FAMILIES[family]["exits"]
        self.positions = list(pos)
        self.heads = nn.ModuleDict(
            {str(p): FAMILIES[family]["head"](model.out_channels[p - 1]) for p in pos})

    def forward_all(self, model, x):
        """Frozen backbone features, then every head; returns ({pos: logits}, final logits)."""
        out = {}
        x = model.stem(x)
        for i, b in enumerate(model.blocks, start=1):
            x = b(x)
            if str(i) in self.heads:
                out[i] = self.heads[str(i)](x)
        return out, model.classifier(x)


# ---------------------------------------------------------------------------- export helpers

def fuse_bn(module: nn.Module) -> nn.Module:
    """Copy of `module` (eval mode) with every Conv2d+BatchNorm2d pair inside a Sequential or a
    known block folded into the conv, so the exported graphs hold plain Conv nodes."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval
    m = copy.deepcopy(module).eval()

    def walk(mod):
        if isinstance(mod, BasicBlock):
            mod.conv1 = fuse_conv_bn_eval(mod.conv1, mod.bn1); mod.bn1 = nn.Identity()
            mod.conv2 = fuse_conv_bn_eval(mod.conv2, mod.bn2); mod.bn2 = nn.Identity()
        for name, child in list(mod.named_children()):
            if isinstance(child, nn.Sequential):
                items = list(child)
                new = []
                i = 0
                while i < len(items):
                    if (isinstance(items[i], nn.Conv2d) and i + 1 < len(items)
                            and isinstance(items[i + 1], nn.BatchNorm2d)):
                        new.append(fuse_conv_bn_eval(items[i], items[i + 1]))
                        i += 2
                    else:
                        walk(items[i])
                        new.append(items[i])
                        i += 1
                setattr(mod, name, nn.Sequential(*new))
            else:
                walk(child)

    walk(m)
    return m


class Segment(nn.Module):
    """Blocks (start, end] of a backbone (the stem first when start == 0), then either an exit
    head (outputs: exit logits, carried features) or, when end is the last block, the final
    classifier (output: logits)."""

    def __init__(self, model, start, end, head=None):
        super().__init__()
        self.stem = model.stem if start == 0 else None
        self.blocks = nn.ModuleList(list(model.blocks)[start:end])
        self.last = end == len(model.blocks)
        self.head = head
        self.classifier = model.classifier if self.last else None

    def forward(self, x):
        if self.stem is not None:
            x = self.stem(x)
        for b in self.blocks:
            x = b(x)
        if self.last:
            return self.classifier(x)
        return self.head(x), x


def export_onnx(module, example, path, input_name, output_names):
    module = module.eval()
    dyn = {input_name: {0: "N"}}
    for o in output_names:
        dyn[o] = {0: "N"}
    torch.onnx.export(module, (example,), str(path), input_names=[input_name],
                      output_names=list(output_names), dynamic_axes=dyn, opset_version=17,
                      do_constant_folding=True, dynamo=False)
