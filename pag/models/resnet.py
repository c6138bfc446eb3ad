"""ResNet trunks for dense prediction with torchvision's parameter names.

The module tree mirrors torchvision's `resnet.py` (conv1, bn1, layer1..layer4, each a
Sequential of blocks with conv1/bn1/conv2/bn2[/conv3/bn3][/downsample]) and keeps `fc`, so an
ImageNet checkpoint from torchvision loads with `strict=True`. Output stride 8 or 16 replaces
the strides of the last stages by dilation exactly as torchvision's
`replace_stride_with_dilation` does (DeepLab-style). A width multiplier scales every stage,
so the synthetic default can train a small trunk in minutes on a CPU.

Blocks are written so that a gate can decide, per pixel, what runs (see `pag.models.gating`):
`Bottleneck.forward` calls `self.gate_residual(...)`, which the plain block implements as the
dense computation. Every conv may carry an `active_mask` (set by gated blocks) that
`pag.flops` reads to count the work an executor of active positions would do.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from pag.errors import PagError
from pag.params import RESNET_STAGE_BLOCKS


def conv3x3(in_planes: int, out_planes: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(
        in_planes, out_planes, 3, stride=stride, padding=dilation, dilation=dilation, bias=False
    )


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)


def conv_stage(conv: nn.Module, h: Tensor, post) -> Tensor:
    """post(conv(h)); a conv that chooses per pixel between convs and passing `h` through
    (MultiPool) applies `post` to its conv branches only, so its skip branch is a true skip."""
    if getattr(conv, "takes_post", False):
        return conv(h, post)  # through the module call, so hooks (MAC counting) see it
    return post(conv(h))


class ResidualBlock(nn.Module):
    """relu(shortcut(x) + branch(x)), with the branch split around its gated 3x3 stage:
    `branch_input` (what the 3x3 conv receives), `conv3x3_stage`, `branch_output`.

    A gate attached as `self.gate` (see `pag.models.gating`) takes over `forward` and decides,
    per pixel or per image, which of these stages run.
    """

    expansion = 1

    def __init__(self, stride: int, downsample: nn.Module | None, dilation: int):
        super().__init__()
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride
        self.dilation = dilation
        self.gate: nn.Module | None = None

    def shortcut(self, x: Tensor) -> Tensor:
        return x if self.downsample is None else self.downsample(x)

    def branch_input(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def conv3x3_stage(self, h: Tensor) -> Tensor:
        raise NotImplementedError

    def branch_output(self, h: Tensor) -> Tensor:
        raise NotImplementedError

    def residual(self, x: Tensor) -> Tensor:
        return self.branch_output(self.conv3x3_stage(self.branch_input(x)))

    def forward(self, x: Tensor) -> Tensor:
        if self.gate is not None:
            return self.gate(self, x)
        return self.relu(self.shortcut(x) + self.residual(x))


class BasicBlock(ResidualBlock):
    """Two 3x3 convs (ResNet-18/34); the gated 3x3 stage is the second conv."""

    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None, dilation=1):
        super().__init__(stride, downsample, dilation)
        self.conv1 = conv3x3(inplanes, planes, stride, dilation)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, 1, dilation)
        self.bn2 = nn.BatchNorm2d(planes)

    def branch_input(self, x: Tensor) -> Tensor:
        return self.relu(self.bn1(self.conv1(x)))

    def conv3x3_stage(self, h: Tensor) -> Tensor:
        return conv_stage(self.conv2, h, self.bn2)

    def branch_output(self, h: Tensor) -> Tensor:
        return h


class Bottleneck(ResidualBlock):
    """1x1 reduce, 3x3 (carrying the stride, as torchvision's ResNet v1.5), 1x1 expand."""

    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None, dilation=1):
        super().__init__(stride, downsample, dilation)
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride, dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)

    def branch_input(self, x: Tensor) -> Tensor:
        return self.relu(self.bn1(self.conv1(x)))

    def conv3x3_stage(self, h: Tensor) -> Tensor:
        return conv_stage(self.conv2, h, lambda y: self.relu(self.bn2(y)))

    def branch_output(self, h: Tensor) -> Tensor:
        return self.bn3(self.conv3(h))


_DEPTHS = {
    depth: (BasicBlock if depth in (18, 34) else Bottleneck, blocks)
    for depth, blocks in RESNET_STAGE_BLOCKS.items()
}
_DILATE = {32: (False, False, False), 16: (False, False, True), 8: (False, True, True)}


class ResNet(nn.Module):
    """A ResNet whose `state_dict` keys and shapes equal torchvision's for width 1.

    `forward` returns the layer4 feature map (the dense-prediction trunk); `fc` is kept only so
    that ImageNet checkpoints load strictly and is never called.
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: Sequence[int],
        *,
        width_multiplier: float = 1.0,
        output_stride: int = 8,
        num_classes: int = 1000,
    ):
        super().__init__()
        if output_stride not in _DILATE:
            raise PagError(f"output_stride must be one of {sorted(_DILATE)}, got {output_stride}")
        if not 0 < width_multiplier <= 4:
            raise PagError(f"width_multiplier must be in (0, 4], got {width_multiplier}")
        self.block_type = block
        self.output_stride = output_stride
        base = max(8, round(64 * width_multiplier))
        self.inplanes = base
        self.dilation = 1
        self.conv1 = nn.Conv2d(3, base, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(base)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        dilate = _DILATE[output_stride]
        self.layer1 = self._make_layer(block, base, layers[0])
        self.layer2 = self._make_layer(block, base * 2, layers[1], stride=2, dilate=dilate[0])
        self.layer3 = self._make_layer(block, base * 4, layers[2], stride=2, dilate=dilate[1])
        self.layer4 = self._make_layer(block, base * 8, layers[3], stride=2, dilate=dilate[2])
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(base * 8 * block.expansion, num_classes)
        self.out_channels = base * 8 * block.expansion
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, block, planes, blocks, stride=1, dilate=False) -> nn.Sequential:
        # torchvision's rule: a dilated stage keeps the previous dilation in its first block
        downsample = None
        previous_dilation = self.dilation
        if dilate:
            self.dilation *= stride
            stride = 1
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample, dilation=previous_dilation)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, dilation=self.dilation) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def stages(self) -> list[nn.Sequential]:
        return [self.layer1, self.layer2, self.layer3, self.layer4]

    def blocks(self) -> list[tuple[str, nn.Module]]:
        """(name, block) in execution order, named as in the state dict: 'layer3.2'."""
        return [
            (f"layer{s + 1}.{i}", block)
            for s, stage in enumerate(self.stages())
            for i, block in enumerate(stage)
        ]

    def stem(self, x: Tensor) -> Tensor:
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        for stage in self.stages():
            x = stage(x)
        return x


def _resnet(depth: int, **kwargs) -> ResNet:
    block, layers = _DEPTHS[depth]
    return ResNet(block, layers, **kwargs)


def resnet18(**kwargs) -> ResNet:
    return _resnet(18, **kwargs)


def resnet26(**kwargs) -> ResNet:
    return _resnet(26, **kwargs)


def resnet50(**kwargs) -> ResNet:
    return _resnet(50, **kwargs)


def resnet101(**kwargs) -> ResNet:
    return _resnet(101, **kwargs)


def resnet(depth: int, **kwargs) -> ResNet:
    if depth not in _DEPTHS:
        raise PagError(f"ResNet depth must be one of {sorted(_DEPTHS)}, got {depth}")
    return _resnet(depth, **kwargs)


def load_imagenet_weights(trunk: ResNet, state_dict: dict[str, Tensor]) -> None:
    """Load a torchvision ImageNet checkpoint strictly (never downloads anything). A trunk
    inside a DensePredictionModel has no `fc`: the checkpoint's fc keys are then required but
    not loaded."""
    if not hasattr(trunk, "fc"):
        fc = {"fc.weight", "fc.bias"}
        if not fc <= set(state_dict):
            raise PagError(
                f"not a torchvision ResNet checkpoint: no {sorted(fc - set(state_dict))}"
            )
        state_dict = {k: v for k, v in state_dict.items() if k not in fc}
    trunk.load_state_dict(state_dict, strict=True)


__all__ = [
    "BasicBlock",
    "Bottleneck",
    "ResNet",
    "ResidualBlock",
    "load_imagenet_weights",
    "resnet",
    "resnet18",
    "resnet26",
    "resnet50",
    "resnet101",
]
