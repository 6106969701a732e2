"""The user's own model of the benchmark, given to curator as ``own_model:factory``: a small
RGB CNN that declares its input (96 x 96 RGB, ImageNet-style mean/std) through ``input_spec``."""

from __future__ import annotations


def factory(num_classes: int = 8):
    import torch
    from torch import nn

    from curator.models import InputSpec

    class OwnNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(3, 16, 5, stride=2), nn.ReLU(), nn.Conv2d(16, 32, 3, stride=2), nn.ReLU(),
                nn.Conv2d(32, 64, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
            self.fc1 = nn.Linear(64, 64)
            self.drop = nn.Dropout(0.2)
            self.fc2 = nn.Linear(64, num_classes)

        def forward(self, x):
            return self.fc2(self.drop(torch.relu(self.fc1(self.body(x)))))

    net = OwnNet()
    net.input_spec = InputSpec(size=(96, 96), channels=3, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    return net
