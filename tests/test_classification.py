"""distilkit.classification: generated and ImageFolder data, top-1 accuracy, ViT presets that PMDP, width
pruning and distilkit.io handle."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from torch import nn

import distilkit.io as dio
from distilkit.classification import (GeneratedShapes, ImageFolder, build_vit, check_same_classes, imagefolder_split,
                                      top1_accuracy)
from distilkit.depth import CosineSchedule, ProgressiveDepthPruner
from distilkit.errors import DistilkitError
from distilkit.width import ProgressiveWidthPruner


def test_generated_shapes_are_a_pure_function_of_seed_split_and_index():
    a, b = GeneratedShapes(8, 32, "train"), GeneratedShapes(8, 32, "train")
    x, y = a[5]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and 0 <= y < 6
    assert torch.equal(x, b[5][0]) and y == b[5][1] and torch.equal(a[2][0], a[2][0])
    assert not torch.equal(x, GeneratedShapes(8, 32, "test")[5][0])  # the splits share no image
    assert not torch.equal(x, GeneratedShapes(8, 32, "train", seed=1)[5][0])
    assert a.targets == [a[i][1] for i in range(8)] and a.classes[0] == "disk" and a.name == "shapes-train"
    with pytest.raises(IndexError):
        a[8]
    for kwargs, message in [({"num_images": 0}, "num_images must be >= 1"), ({"split": "val"}, "split must be one of"),
                            ({"image_size": 4.5}, "image_size must be an int")]:
        with pytest.raises(DistilkitError, match=message):
            GeneratedShapes(**{"num_images": 4, **kwargs})


def _tree(root, classes=("cat", "dog"), per_class=2, size=(20, 12)):
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", size, (100 * c, 50 * i, 0)).save(root / name / f"{i}.png")
    (root / ".hidden").mkdir(exist_ok=True)
    (root / classes[0] / "notes.txt").write_text("not an image")
    return root


def test_image_folder_reads_the_torchvision_layout(tmp_path):
    data = ImageFolder(str(_tree(tmp_path / "set")), image_size=16)
    assert data.classes == ["cat", "dog"] and len(data) == 4 and data.targets == [0, 0, 1, 1] and data.name == "set"
    x, y = data[3]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32 and y == 1
    red = torch.tensor([100 / 255, 50 / 255, 0.0]).view(3, 1, 1)  # dog image 1: (100, 50, 0), ImageNet-normalised
    expected = (red - torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    torch.testing.assert_close(x, expected.expand(3, 16, 16), atol=1e-6, rtol=0)


def test_image_folder_splits_and_errors(tmp_path):
    _tree(tmp_path / "d" / "train")
    _tree(tmp_path / "d" / "val", per_class=1)
    assert len(imagefolder_split(str(tmp_path / "d"), "train", 8)) == 4
    assert len(imagefolder_split(str(tmp_path / "d"), "test", 8)) == 2
    assert len(imagefolder_split(str(tmp_path / "d" / "val"), "train", 8)) == 2  # no split folders: the folder itself
    with pytest.raises(DistilkitError, match="dataset directory not found: .*nowhere"):
        imagefolder_split(str(tmp_path / "nowhere"), "train", 8)
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(DistilkitError, match=r"no images in the ImageFolder layout ROOT/<class>/<image>"):
        ImageFolder(str(tmp_path / "empty"), 8)
    bad = _tree(tmp_path / "bad")
    (bad / "cat" / "0.png").write_bytes(b"not a png")
    with pytest.raises(DistilkitError, match=f"cannot read image {bad / 'cat' / '0.png'}"):
        ImageFolder(str(bad), 8)[0]
    other = ImageFolder(str(_tree(tmp_path / "other", classes=("cat", "cow"))), 8)
    with pytest.raises(DistilkitError, match=r"--data x: other and set have differing classes \['cow', 'dog'\]"):
        check_same_classes([ImageFolder(str(_tree(tmp_path / "set")), 8), other], "--data x")


class _AlwaysZero(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tensor([1.0, 0.0, 0.0]).expand(len(x), 3)


def test_top1_accuracy_counts_exactly_and_restores_the_mode():
    data = [(torch.zeros(3, 4, 4), label) for label in (0, 1, 0, 2, 0)]
    model = _AlwaysZero().train()
    assert top1_accuracy(model, data, batch_size=2) == pytest.approx(3 / 5) and model.training
    with pytest.raises(DistilkitError, match="the dataset is empty"):
        top1_accuracy(model, [])


def test_vit_presets_overrides_and_what_pruning_needs(tmp_path):
    model = build_vit("vit-ti-shapes", embed_dim=32).eval()
    x = torch.randn(2, 3, 32, 32)
    assert model(x).shape == (2, 6) and len(model.blocks) == 12
    for kwargs, message in [({"preset": "vit-huge"}, "unknown ViT preset 'vit-huge'"),
                            ({"preset": "vit-ti", "bias": 1}, r"unknown override\(s\) \['bias'\]"),
                            ({"preset": "vit-ti", "embed_dim": 100}, "embed_dim 100 is not divisible by num_heads 3"),
                            ({"preset": "vit-ti", "img_size": 100}, "img_size 100 is not divisible by patch_size 16"),
                            ({"preset": "vit-ti", "depth": 0}, "depth must be a positive integer"),
                            ({"preset": "vit-ti", "depth": 10**6}, "depth must be <= 1024")]:
        with pytest.raises(DistilkitError, match=message):
            build_vit(**kwargs)
    dio.save(model, tmp_path / "vit")
    torch.testing.assert_close(dio.load(tmp_path / "vit").eval()(x), model(x))
    for pruner in (lambda: ProgressiveDepthPruner(model, [0, 2], blocks="blocks", schedule=CosineSchedule(m=1)),
                   lambda: ProgressiveWidthPruner(model, 2.0, blocks="blocks", schedule=CosineSchedule(m=1),
                                                  example_inputs=x[:1])):
        p = pruner()
        assert p.set_progress(1.0) == 0.0
        p.finalize()
    assert len(model.blocks) == 10 and model.blocks[0].mlp.fc1.out_features == 64 and model(x).shape == (2, 6)
    dio.save(model, tmp_path / "pruned")
    assert len(dio.load(tmp_path / "pruned").blocks) == 10
