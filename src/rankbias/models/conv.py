"""Convolutional families: the authors' small ConvNet, VGG-16 and ResNet-18 (CIFAR variant).

Each is written once against a layer factory (``layers.py``). A convolution's weight matrix is
its kernel as an ``(out, in·k·k)`` matrix, applied to m_l = output height × width patches
(GSGP Sec. 3). Which matrices count in the default average rank follows the authors' code:
every convolution but ResNet's 1×1 shortcuts; never the final linear classifier.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .layers import activation
from .registry import register


def _bn(layers, spec, channels: int) -> nn.Module:
    return layers.batchnorm(channels, spatial=True, detach_var=spec.bn_detach_var)


# -- ConvNet-D-W ----------------------------------------------------------------------------------
class ConvNet(nn.Module):
    def __init__(self, layers, spec, input_shape, n_out):
        super().__init__()
        channels, height, width = input_shape
        w, bias = spec.width, spec.bias
        self.stem = nn.ModuleList(
            [layers.conv2d(channels, w, 2, stride=2, bias=bias), layers.conv2d(w, w, 2, stride=2, bias=bias)]
        )
        self.stem_norms = nn.ModuleList([_bn(layers, spec, w), _bn(layers, spec, w)])
        self.convs = nn.ModuleList(layers.conv2d(w, w, 3, padding=1, bias=bias) for _ in range(spec.depth))
        self.norms = nn.ModuleList(_bn(layers, spec, w) for _ in range(spec.depth))
        self.act = activation(spec.activation)
        self.fc = layers.linear(w * (height // 4) * (width // 4), n_out, True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem_norms[0](self.stem[0](x))  # no activation after the first convolution
        x = self.act(self.stem_norms[1](self.stem[1](x)))
        for conv, norm in zip(self.convs, self.norms):
            x = self.act(norm(conv(x)))
        return self.fc(x.flatten(1))


@register(
    "convnet-{depth:D}-{width:W}", "the GSGP/GP authors' code (TomerGalanti/LowRankBias)",
    classifier="fc", loop_on_cpu=True, bias=True, activation="relu", bn_detach_var=False,
)
def convnet(layers, spec, input_shape, n_out):
    """Conv(k2,s2)+BN, Conv(k2,s2)+BN+σ, D × [Conv(k3)+BN+σ] at W channels, then one linear layer."""
    if len(input_shape) != 3 or input_shape[1] < 4 or input_shape[2] < 4:
        raise ConfigError("model.name", f"convnet needs images of at least 4×4, got input shape {input_shape}")
    return ConvNet(layers, spec, input_shape, n_out)


# -- VGG-16 ----------------------------------------------------------------------------------------
VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class VGG(nn.Module):
    """Each number of ``config`` a 3×3 convolution (× width/64 channels) + BN + σ; each ``M`` a 2×2
    max-pool (ceil mode, so that small images keep at least one pixel); then a global average
    pool (the identity on 32×32 inputs) and one linear layer."""

    def __init__(self, layers, spec, input_shape, n_out, config=VGG16):
        super().__init__()
        channels = input_shape[0]
        self.convs, self.norms, self.pool_after = nn.ModuleList(), nn.ModuleList(), []
        for item in config:
            if item == "M":
                self.pool_after.append(len(self.convs) - 1)
                continue
            out = max(1, item * spec.width // 64)
            self.convs.append(layers.conv2d(channels, out, 3, padding=1, bias=spec.bias))
            self.norms.append(_bn(layers, spec, out))
            channels = out
        self.act = activation(spec.activation)
        self.fc = layers.linear(channels, n_out, True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            x = self.act(norm(conv(x)))
            if i in self.pool_after:
                x = F.max_pool2d(x, 2, ceil_mode=True)
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


@register(
    "vgg16", "Simonyan & Zisserman 2015 (configuration D); GSGP App. B.1",
    classifier="fc", loop_on_cpu=True, width=64, bias=True, activation="relu", bn_detach_var=False,
)
def vgg16(layers, spec, input_shape, n_out):
    """VGG-16: 13 3×3 convolutions with BN, 5 max-pools, one linear layer (dropout replaced by BN)."""
    return VGG(layers, spec, input_shape, n_out)


# -- ResNet-18 -------------------------------------------------------------------------------------
class BasicBlock(nn.Module):
    """He et al. (2016) Fig. 2: σ(BN(conv3(σ(BN(conv3(x))))) + shortcut(x)); the shortcut is a 1×1
    convolution + BN where the shape changes, else the identity."""

    def __init__(self, layers, spec, in_ch: int, out_ch: int, stride: int):
        super().__init__()
        self.conv1, self.bn1 = layers.conv2d(in_ch, out_ch, 3, stride=stride, padding=1), _bn(layers, spec, out_ch)
        self.conv2, self.bn2 = layers.conv2d(out_ch, out_ch, 3, padding=1), _bn(layers, spec, out_ch)
        self.act = activation(spec.activation)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(layers.conv2d(in_ch, out_ch, 1, stride=stride), _bn(layers, spec, out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        return self.act(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, layers, spec, input_shape, n_out, blocks=(2, 2, 2, 2)):
        super().__init__()
        base = spec.width
        self.conv1, self.bn1 = layers.conv2d(input_shape[0], base, 3, padding=1), _bn(layers, spec, base)
        self.act = activation(spec.activation)
        stages, in_ch = [], base
        for i, count in enumerate(blocks):
            out_ch = base * 2**i
            strides = [1 if i == 0 else 2] + [1] * (count - 1)
            stage = []
            for stride in strides:
                stage.append(BasicBlock(layers, spec, in_ch, out_ch, stride))
                in_ch = out_ch
            stages.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.fc = layers.linear(in_ch, n_out, True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


@register(
    "resnet18", "He et al. 2016, CIFAR variant; GSGP App. B.1",
    uncounted=("*.shortcut.*",), classifier="fc", loop_on_cpu=True, width=64, activation="relu", bn_detach_var=False,
)
def resnet18(layers, spec, input_shape, n_out):
    """ResNet-18, CIFAR variant: 3×3 stem, BasicBlocks [2, 2, 2, 2] at widths 64–512, BN, one linear layer.

    Stem with stride 1 and no max-pool; widths scale with width/64; convolutions without bias, BN
    after each; 1×1 convolution + BN shortcuts where the shape changes; global average pool."""
    return ResNet(layers, spec, input_shape, n_out)

