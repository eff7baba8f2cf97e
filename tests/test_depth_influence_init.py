"""block_influence on calibration data (and which input is a block's stream), first-k / skip-k student initialisations."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

from distilkit.depth import ProgressiveDepthPruner, block_influence, init_student_from_layers, select_layers, shallow_copy
from distilkit.schedule import LinearSchedule
from distilkit.errors import DistilkitError


class Scaled(nn.Module):
    """A block with a fixed output, so 1 − cos(x_in, x_out) is known exactly."""

    def __init__(self, out: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("out", out)

    def forward(self, x: torch.Tensor, extra: float = 0.0) -> torch.Tensor:
        return self.out.expand_as(x) + extra


class Net(nn.Module):
    def __init__(self, outs: list[torch.Tensor]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(Scaled(o) for o in outs)

    def forward(self, x: torch.Tensor, extra: float = 0.0) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, extra=extra)
        return x


def test_influence_is_one_minus_cosine_averaged_over_tokens_and_batches() -> None:
    outs = [torch.tensor([1.0, 0.0]), torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])]
    net = Net(outs).train()
    batches = [
        torch.tensor([[[1.0, 0.0], [0.0, 1.0]]]),  # a tensor, a tuple of args, a dict of kwargs
        (torch.tensor([[[1.0, 1.0]]]),),
        {"x": torch.tensor([[[0.0, 2.0]]])},
    ]
    scores = block_influence(net, batches, blocks="layers")
    # block 0 sees the raw inputs: tokens (1,0)->0, (0,1)->1, (1,1)->1−1/√2, (0,2)->1; later blocks see fixed inputs
    assert scores[0] == pytest.approx((0 + 1 + (1 - 2**-0.5) + 1) / 4)
    assert scores[1] == pytest.approx(0.0)
    assert scores[2] == pytest.approx(1.0)
    assert net.training
    assert select_layers(3, 2, "influence", scores=scores) == [1]
    with pytest.raises(DistilkitError, match="empty"):
        block_influence(net, [], blocks="layers")


class KeywordBlock(nn.Module):
    """Called with keywords only, the mask first: the residual stream is still `x`."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return x * 2 + mask


class KeywordNet(nn.Module):
    def __init__(self, depth: int = 3, run: int | None = None) -> None:
        super().__init__()
        self.layers = nn.ModuleList(KeywordBlock() for _ in range(depth))
        self.run = depth if run is None else run

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = torch.zeros_like(x)
        mask[..., 0] = 1.0
        for layer in self.layers[: self.run]:
            x = layer(mask=mask, x=x)
        return x


def test_keyword_called_blocks_use_their_first_parameter_and_idle_blocks_are_named() -> None:
    x = torch.tensor([[[0.0, 1.0]]])
    scores = block_influence(KeywordNet(), [x], blocks="layers")
    # block 0: x = (0, 1) -> 2x + mask = (1, 2), cos = 2/sqrt(5); taking the mask as x would give cos(mask, out) = 1/sqrt(5)
    assert scores[0] == pytest.approx(1 - 2 / 5**0.5)
    with pytest.raises(DistilkitError, match="block 2 of 'layers' never ran"):
        block_influence(KeywordNet(run=2), [x], blocks="layers")


def test_pmdp_block_mode_called_with_keywords_fades_to_the_stream() -> None:
    model, x = KeywordNet(), torch.randn(1, 4, 2)
    pruner = ProgressiveDepthPruner(model, [0], blocks="layers", mode="block", schedule=LinearSchedule(m=1))
    pruner.set_progress(1.0)
    with torch.no_grad():
        torch.testing.assert_close(model(x), KeywordNet(depth=2)(x))


def test_influence_on_timm_vit_runs_hooks_and_cleans_up() -> None:
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=4)
    scores = block_influence(model, [torch.randn(2, 3, 32, 32) for _ in range(2)])
    assert len(scores) == 4 and all(0.0 <= s <= 2.0 for s in scores)
    assert all(not b._forward_hooks for b in model.blocks)


def test_first_and_skip_students() -> None:
    torch.manual_seed(0)
    teacher = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=8)
    first = shallow_copy(teacher, 4, method="first")
    skip = shallow_copy(teacher, 4, method="skip")
    assert len(teacher.blocks) == 8 and len(first.blocks) == 4
    for new, old in enumerate([1, 3, 5, 7]):  # 1-based 2,4,6,8
        assert torch.equal(skip.blocks[new].attn.qkv.weight, teacher.blocks[old].attn.qkv.weight)
        assert skip.blocks[new].attn.qkv.weight is not teacher.blocks[old].attn.qkv.weight
    assert torch.equal(first.blocks[3].mlp.fc1.weight, teacher.blocks[3].mlp.fc1.weight)
    picked = init_student_from_layers(teacher, [6, 0], blocks="blocks")
    assert torch.equal(picked.blocks[0].norm1.weight, teacher.blocks[0].norm1.weight)
    assert torch.equal(picked.blocks[1].mlp.fc2.weight, teacher.blocks[6].mlp.fc2.weight)
    with pytest.raises(DistilkitError, match="no layers to keep"):
        init_student_from_layers(teacher, [])
