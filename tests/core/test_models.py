"""Tests for pxprune.models: shapes, parameter counts, names, pre-trained weights on real images."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import SHARED_DATA
from torch import nn

from pxprune import models as M

DATA = SHARED_DATA
CIFAR_TAR = DATA / "cifar10-jpeg.tar.gz"
PRETRAINED = {
    20: "resnet20-12fca82f.th",
    32: "resnet32-d509ac18.th",
    44: "resnet44-014dd654.th",
    56: "resnet56-4bfd9763.th",
}
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

INPUT_SIZE = {"resnet18_tiny": 64, "resnet50": 224, "efficientnet_lite0": 224}
PARAMS_10 = {  # parameter counts with 10 classes
    "resnet20": 272_474,
    "resnet32": 466_906,
    "resnet44": 661_338,
    "resnet56": 855_770,
    "resnet20_a": 269_722,
    "resnet32_a": 464_154,
    "resnet44_a": 658_586,
    "resnet56_a": 853_018,
    "vgg11_bn": 9_231_114,
    "vgg13_bn": 9_416_010,
    "vgg16_bn": 14_728_266,
    "vgg19_bn": 20_040_522,
    "resnet18_tiny": 11_173_962,
    "resnet50": 23_528_522,
    "efficientnet_lite0": 3_383_818,
}


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _cifar_test_images(per_class: int, classes: list[str] | None = None):
    """First ``per_class`` test JPEGs of each class, read straight from the tarball, in [0, 1]."""
    if not CIFAR_TAR.exists():
        pytest.skip(f"{CIFAR_TAR} not available")
    wanted = set(classes or CLASSES)
    counts = dict.fromkeys(CLASSES, 0)
    images, labels = [], []
    with tarfile.open(CIFAR_TAR, "r:gz") as tar:
        for member in tar:
            parts = member.name.split("/")
            if len(parts) != 3 or not member.isfile():
                continue
            split, cls, _ = parts
            if split != "test":
                if images:  # test/ comes first; stop at the first train file after it
                    break
                continue
            if cls not in wanted or counts[cls] >= per_class:
                continue
            counts[cls] += 1
            from PIL import Image

            img = Image.open(io.BytesIO(tar.extractfile(member).read())).convert("RGB")
            images.append(np.asarray(img).copy())
            labels.append(CLASSES.index(cls))
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0
    return x, torch.tensor(labels)


# --------------------------------------------------------------------------- registry


def test_names_and_unknown() -> None:
    assert set(PARAMS_10) == set(M.NAMES)
    with pytest.raises(ValueError, match="resnet20_a"):
        M.get("resnet21")


@pytest.mark.parametrize("name", M.NAMES)
def test_output_shape_and_params(name: str) -> None:
    torch.manual_seed(0)
    model = M.get(name, num_classes=10).eval()
    assert _n_params(model) == PARAMS_10[name]
    size = INPUT_SIZE.get(name, 32)
    with torch.no_grad():
        out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()
    # Only conv/linear weights (+ biases where the reference has them) and BN affine params.
    for mod_name, mod in model.named_modules():
        own = [n for n, _ in mod.named_parameters(recurse=False)]
        if own:
            assert isinstance(mod, (nn.Conv2d, nn.Linear, nn.BatchNorm2d)), (mod_name, type(mod))


def test_num_classes_passed_through() -> None:
    assert M.get("resnet18_tiny", num_classes=200).fc.out_features == 200
    assert M.get("vgg16_bn", num_classes=100).fc.out_features == 100
    assert M.get("resnet20_a", num_classes=100).linear.out_features == 100
    assert M.get("resnet50", num_classes=1000)(torch.zeros(1, 3, 64, 64)).shape == (1, 1000)


def test_cifar_resnet_layout() -> None:
    b = M.get("resnet20")
    a = M.get("resnet20_a")
    names_b = dict(b.named_parameters())
    names_a = dict(a.named_parameters())
    # 1x1 shortcut version: exactly two extra convs + BNs (layer2.0, layer3.0) and 'fc'.
    extra = sorted(set(names_b) - set(names_a))
    shortcut = [
        f"layer{i}.0.shortcut.{j}" for i in (2, 3) for j in ("0.weight", "1.weight", "1.bias")
    ]
    assert extra == sorted([*shortcut, "fc.bias", "fc.weight"])
    assert names_b["layer2.0.shortcut.0.weight"].shape == (32, 16, 1, 1)
    assert sum(isinstance(m, nn.Conv2d) for m in a.modules()) == 19
    assert not any(p.shape[-1] == 1 for p in a.parameters() if p.dim() == 4)
    # Option A: stride-2 subsample + zero channel padding.
    sc = a.layer2[0].shortcut
    x = torch.randn(1, 16, 8, 8)
    y = sc(x)
    assert y.shape == (1, 32, 4, 4)
    assert torch.equal(y[:, 8:24], x[:, :, ::2, ::2])
    assert y[:, :8].abs().sum() == 0 and y[:, 24:].abs().sum() == 0


def test_init_conventions() -> None:
    torch.manual_seed(0)
    m = M.get("resnet56_a")
    w = m.layer3[0].conv2.weight
    # kaiming_normal_ fan_in: std = sqrt(2 / (64 * 9))
    assert abs(w.std().item() - (2 / (64 * 9)) ** 0.5) < 0.003
    assert all(
        bn.weight.eq(1).all() and bn.bias.eq(0).all()
        for bn in m.modules()
        if isinstance(bn, nn.BatchNorm2d)
    )
    r = M.get("resnet50")
    w = r.layer4[0].conv2.weight  # torchvision: fan_out = 512 * 9
    assert abs(w.std().item() - (2 / (512 * 9)) ** 0.5) < 0.001


def test_vgg_layout() -> None:
    m = M.get("vgg16_bn")
    convs = [x for x in m.features if isinstance(x, nn.Conv2d)]
    pools = [x for x in m.features if isinstance(x, nn.MaxPool2d)]
    assert len(convs) == 13 and len(pools) == 4
    assert all(c.bias is not None for c in convs)
    assert m.fc.in_features == 512
    for depth, n in ((11, 8), (13, 10), (19, 16)):
        assert sum(isinstance(x, nn.Conv2d) for x in M.get(f"vgg{depth}_bn").features) == n


def test_resnet50_torchvision_names() -> None:
    m = M.get("resnet50", num_classes=1000)
    sd = m.state_dict()
    assert len(sd) == 320  # torchvision resnet50().state_dict(), num_batches_tracked included
    assert _n_params(m) == 25_557_032
    assert sum(k.endswith("num_batches_tracked") for k in sd) == 53
    expected = {
        "conv1.weight": (64, 3, 7, 7),
        "bn1.running_var": (64,),
        "layer1.0.conv1.weight": (64, 64, 1, 1),
        "layer1.0.conv3.weight": (256, 64, 1, 1),
        "layer1.0.downsample.0.weight": (256, 64, 1, 1),
        "layer1.0.downsample.1.weight": (256,),
        "layer2.0.conv2.weight": (128, 128, 3, 3),
        "layer2.0.downsample.0.weight": (512, 256, 1, 1),
        "layer3.5.bn3.bias": (1024,),
        "layer4.2.conv3.weight": (2048, 512, 1, 1),
        "fc.weight": (1000, 2048),
        "fc.bias": (1000,),
    }
    for k, shape in expected.items():
        assert tuple(sd[k].shape) == shape, k
    assert m.layer2[0].conv2.stride == (2, 2) and m.layer2[0].conv1.stride == (1, 1)  # v1.5
    assert [len(getattr(m, f"layer{i}")) for i in range(1, 5)] == [3, 4, 6, 3]


def test_resnet18_tiny_stem() -> None:
    m = M.get("resnet18_tiny", num_classes=200)
    assert m.conv1.kernel_size == (3, 3) and m.conv1.stride == (1, 1)
    assert isinstance(m.maxpool, nn.Identity)
    assert (
        "layer1.0.conv1.weight" in m.state_dict()
        and "layer2.0.downsample.0.weight" in m.state_dict()
    )
    m.eval()
    with torch.no_grad():
        x = m.maxpool(m.relu(m.bn1(m.conv1(torch.zeros(1, 3, 64, 64)))))
        assert x.shape == (1, 64, 64, 64)
        x = m.layer4(m.layer3(m.layer2(m.layer1(x))))
    assert x.shape == (1, 512, 8, 8)


def test_same_pad_matches_tf() -> None:
    pad = M.SamePad2d(3, 2)
    assert pad(torch.zeros(1, 1, 224, 224)).shape == (1, 1, 225, 225)  # (0, 1) like TF
    assert pad(torch.ones(1, 1, 4, 4))[0, 0, 0].sum() == 4  # nothing added on top/left
    pad5 = M.SamePad2d(5, 1)
    assert pad5(torch.zeros(1, 1, 7, 7)).shape == (1, 1, 11, 11)
    m = M.get("efficientnet_lite0", num_classes=1000).eval()
    for size in (224, 97):  # output resolution ceil(size / 32)
        with torch.no_grad():
            x = m._blocks(m._conv_stem(m._stem_pad(torch.zeros(1, 3, size, size))))
        assert x.shape[-1] == -(-size // 32)


# --------------------------------------------------------------------------- pre-trained CIFAR


@pytest.mark.parametrize("depth", sorted(PRETRAINED))
def test_load_cifar_pretrained_keys(depth: int) -> None:
    path = DATA / "pretrained" / PRETRAINED[depth]
    if not path.exists():
        pytest.skip(f"{path} not available")
    model = M.get(f"resnet{depth}_a")
    M.load_cifar_pretrained(model, path)
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    sd = {k.removeprefix("module."): v for k, v in ckpt["state_dict"].items()}
    own = model.state_dict()
    assert set(sd) == {k for k in own if not k.endswith("num_batches_tracked")}
    for k, v in sd.items():
        assert torch.equal(own[k], v), k


def test_load_cifar_pretrained_mismatch() -> None:
    path = DATA / "pretrained" / PRETRAINED[20]
    if not path.exists():
        pytest.skip(f"{path} not available")
    with pytest.raises(ValueError, match=r"missing keys \['layer2.0.shortcut.0.weight'"):
        M.load_cifar_pretrained(M.get("resnet20"), path)
    with pytest.raises(ValueError, match="unexpected keys"):
        M.load_cifar_pretrained(M.get("resnet20_a"), DATA / "pretrained" / PRETRAINED[32])


def _cifar_accuracy(depth: int, per_class: int) -> float:
    path = DATA / "pretrained" / PRETRAINED[depth]
    if not path.exists():
        pytest.skip(f"{path} not available")
    x, y = _cifar_test_images(per_class)
    mean = torch.tensor(M.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(M.IMAGENET_STD).view(1, 3, 1, 1)
    model = M.load_cifar_pretrained(M.get(f"resnet{depth}_a"), path).eval()
    with torch.no_grad():
        pred = model((x - mean) / std).argmax(1)
    return (pred == y).float().mean().item()


def test_resnet20_pretrained_accuracy_on_jpeg_test_images() -> None:
    # 50 test images per class: measured 79.8 % (81.0 % on all 10,000 JPEG test images).
    assert _cifar_accuracy(20, 50) > 0.70


@pytest.mark.slow
def test_resnet56_pretrained_accuracy_on_jpeg_test_images() -> None:
    # 200 per class; ResNet-56 scored 83.2 % on all 10,000 JPEG test images.
    assert _cifar_accuracy(56, 200) > 0.75


# --------------------------------------------------------------------------- EfficientNet-Lite0


def _lite0() -> nn.Module:
    try:
        return M.load_efficientnet_lite0(M.get("efficientnet_lite0", num_classes=1000)).eval()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


def test_lite0_weights_load_every_key() -> None:
    model = _lite0()
    state = torch.load(M.efficientnet.default_lite0_weights(), map_location="cpu")
    assert set(state) == set(model.state_dict())
    assert _n_params(model) == 4_652_008
    # A 10-class model keeps the backbone and a fresh head.
    small = M.load_efficientnet_lite0(M.get("efficientnet_lite0", num_classes=10))
    assert torch.equal(small._conv_stem.weight, state["_conv_stem.weight"])
    with pytest.raises(ValueError, match="unexpected keys"):
        M.load_efficientnet_lite0(M.get("resnet50", num_classes=1000))


def test_lite0_classifies_grace_hopper() -> None:
    # matplotlib ships the classic Grace Hopper photo; ImageNet models call it "military uniform".
    matplotlib = pytest.importorskip("matplotlib")
    from PIL import Image

    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if not path.exists():
        pytest.skip(f"{path} not available")
    model = _lite0()
    img = Image.open(path).convert("RGB").resize((224, 224), Image.BILINEAR)
    x = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)[None].float() / 255.0
    with torch.no_grad():
        prob = model(M.lite_normalize(x)).softmax(1)[0]
    top5 = prob.topk(5).indices.tolist()
    assert top5[0] == 652  # military uniform (measured p = 0.39)
    assert {834, 906, 457} & set(top5)  # suit, Windsor tie, bow tie


# ImageNet classes that are the same kind of object as a CIFAR-10 class.
SHIPS = [403, 484, 510, 554, 576, 625, 628, 724, 780, 814, 833, 871, 913, 914]
TRUCKS = [555, 569, 675, 717, 734, 757, 864, 867]


def test_lite0_upscaled_cifar_ships_and_trucks() -> None:
    # 32-pixel images upscaled to 224 are far from ImageNet, so this is a loose check: measured
    # top-5 hit rates on these 40 images: ship 0.75, truck 0.75 (a random-init model: ~0.02).
    model = _lite0()
    x, y = _cifar_test_images(20, ["ship", "truck"])
    big = F.interpolate(x, size=224, mode="bilinear", align_corners=False)
    with torch.no_grad():
        top5 = model(M.lite_normalize(big)).topk(5, dim=1).indices
    target = {8: set(SHIPS), 9: set(TRUCKS)}
    hits = [bool(set(t.tolist()) & target[int(c)]) for t, c in zip(top5, y, strict=True)]
    assert np.mean(hits) > 0.5
