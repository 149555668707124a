"""The path copies read operation arguments by name: keyword and positional spellings of the
same network give the same scores."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pxprune
from pxprune.pathview import OpCall

F64 = torch.float64


class Net(nn.Module):
    """conv-BN-ReLU6-maxpool-linear, calling the functional ops positionally or by keyword."""

    def __init__(self, keywords: bool):
        super().__init__()
        self.keywords = keywords
        self.conv = nn.Conv2d(3, 4, 3, bias=False)
        self.bn = nn.BatchNorm2d(4, eps=1e-3)
        self.fc = nn.Linear(4 * 3 * 3, 5)

    def forward(self, x):
        bn = self.bn
        if self.keywords:
            x = F.conv2d(input=x, weight=self.conv.weight, padding=1, stride=1)
            x = F.batch_norm(x, bn.running_mean, bn.running_var, weight=bn.weight,
                             bias=bn.bias, training=False, eps=bn.eps)
            x = F.hardtanh(x, min_val=0.0, max_val=6.0)
            x = F.max_pool2d(x, kernel_size=2, stride=2, return_indices=False)
            return F.linear(input=x.flatten(1), weight=self.fc.weight, bias=self.fc.bias)
        x = F.conv2d(x, self.conv.weight, None, 1, 1)
        x = F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.1,
                         bn.eps)
        x = F.hardtanh(x, 0.0, 6.0)
        x = F.max_pool2d(x, 2, 2)
        return F.linear(x.flatten(1), self.fc.weight, self.fc.bias)


@pytest.mark.parametrize("method", ["px[variant=bound]", "px[variant=bound,bn=batch]", "px",
                                    "synflow"])
def test_keyword_and_positional_calls_score_alike(method):
    torch.manual_seed(0)
    a = Net(keywords=False).double().eval()
    with torch.no_grad():
        a.bn.weight.uniform_(0.5, 1.5)
        a.bn.running_var.uniform_(0.5, 2.0)
    b = Net(keywords=True).double().eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(6, 3, 6, 6, dtype=F64)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)
    sa = pxprune.score(a, method, x, precision="float64") if method.startswith("px") else (
        pxprune.score(a, method, x))
    sb = pxprune.score(b, method, x, precision="float64") if method.startswith("px") else (
        pxprune.score(b, method, x))
    for name in sa:
        assert sa[name].max() > 0
        torch.testing.assert_close(sa[name], sb[name], rtol=1e-12, atol=0)


def test_op_call_replaces_in_the_slot_given():
    seen = []

    def op(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
        seen.append((input, weight, bias, stride, padding))

    call = OpCall("conv2d", op, ("x", "w"), {"padding": 2})
    assert call.get("weight") == "w" and call.get("padding") == 2 and call.get("bias") is None
    assert not call.given("bias") and call.given("padding")
    call.with_(weight="w2", bias="b", padding=3)()
    assert seen[-1] == ("x", "w2", "b", 1, 3)
    call()  # the original is unchanged
    assert seen[-1] == ("x", "w", None, 1, 2)
    with pytest.raises(TypeError):
        OpCall("linear", op, ("x", "w", "b", "extra"), {})
