"""reduce_mlp_ratio on timm ViTs: shapes, importance choice, Taylor, input forms, bad input."""

from __future__ import annotations

import copy

import pytest
import timm
import torch
import torch_pruning as tp

from distilkit.errors import DistilkitError
from distilkit.width import reduce_mlp_ratio


def tiny_vit(depth: int = 12, **kw) -> torch.nn.Module:
    """vit_tiny_patch16_224 widths (dim 192, MLP 768, 3 heads) on 32-px images: 4 patches + cls."""
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, depth=depth, **kw).eval()


def shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {n: tuple(p.shape) for n, p in model.named_parameters()}


def planted(model: torch.nn.Module, block: int, channels: list[int], scale: float = 30.0) -> None:
    """Make hidden `channels` of one block the largest-norm ones (fc1 rows and fc2 columns)."""
    mlp = model.blocks[block].mlp
    with torch.no_grad():
        mlp.fc1.weight[channels] *= scale
        mlp.fc2.weight[:, channels] *= scale


def test_ratio_one_slices_every_block_and_leaves_attention():
    model = tiny_vit()
    before = shapes(model)
    x = torch.randn(2, 3, 32, 32)
    report = reduce_mlp_ratio(model, 1.0)
    after = shapes(model)
    for i, block in enumerate(model.blocks):
        assert block.mlp.fc1.out_features == block.mlp.fc2.in_features == 192
        assert block.mlp.fc1.weight.shape == (192, 192) and block.mlp.fc1.bias.shape == (192,)
        assert block.mlp.fc2.weight.shape == (192, 192) and block.mlp.fc2.bias.shape == (192,)
        for name in ("attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight", "attn.proj.bias", "norm1.weight", "norm2.weight"):
            assert after[f"blocks.{i}.{name}"] == before[f"blocks.{i}.{name}"]
    untouched = [n for n in before if ".mlp.fc" not in n]
    assert all(after[n] == before[n] for n in untouched) and set(after) == set(before)
    assert [(b.hidden_before, b.hidden_after) for b in report.blocks] == [(768, 192)] * 12
    assert report.params_before - report.params_after == 12 * (768 - 192) * (192 + 1 + 192)
    assert report.params_after == sum(p.numel() for p in model.parameters())
    assert model(x).shape == (2, 1000)


def test_l2_keeps_planted_channels_and_matches_masked_original():
    model = tiny_vit(depth=2)
    keep = [5, 77, 300, 301, 767]
    planted(model, 0, keep)
    original = copy.deepcopy(model)
    report = reduce_mlp_ratio(model, hidden=len(keep), block_indices=[0])
    assert report.blocks[0].kept == tuple(keep)
    assert model.blocks[0].mlp.fc1.out_features == len(keep)
    assert model.blocks[1].mlp.fc1.out_features == 768  # not chosen
    # The sliced model equals the original with the dropped channels zeroed in fc2's input.
    with torch.no_grad():
        mask = torch.zeros(768)
        mask[keep] = 1
        original.blocks[0].mlp.fc2.weight.mul_(mask)
        x = torch.randn(2, 3, 32, 32)
        torch.testing.assert_close(model(x), original(x), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(model.blocks[0].mlp.fc1.weight, original.blocks[0].mlp.fc1.weight[keep])


def test_taylor_keeps_highest_w_times_grad_and_restores_grads():
    model = tiny_vit(depth=2)
    model.train()
    torch.manual_seed(1)
    batches = [(torch.randn(2, 3, 32, 32), torch.randint(0, 1000, (2,))) for _ in range(2)]

    def loss_fn(m, batch):
        x, y = batch
        return torch.nn.functional.cross_entropy(m(x), y)

    # Independent Taylor score: mean over fc1 rows and fc2 columns of sum |w · dL/dw| (grads summed over batches).
    reference = copy.deepcopy(model)
    for batch in batches:
        loss_fn(reference, batch).backward()
    expected = []
    for block in reference.blocks:
        fc1, fc2 = block.mlp.fc1.weight, block.mlp.fc2.weight
        score = ((fc1 * fc1.grad).abs().sum(1) + (fc2 * fc2.grad).abs().sum(0)) / 2
        expected.append(sorted(torch.argsort(score, descending=True)[:250].tolist()))

    marker = torch.full_like(model.head.weight, 7.0)
    model.head.weight.grad = marker.clone()
    model.pos_embed.requires_grad_(False)
    report = reduce_mlp_ratio(model, hidden=250, importance="taylor", batches=batches, loss_fn=loss_fn)
    assert [list(b.kept) for b in report.blocks] == expected
    assert torch.equal(model.head.weight.grad, marker)  # the caller's gradients are untouched
    assert model.blocks[0].mlp.fc1.weight.grad is None
    assert not model.pos_embed.requires_grad and model.head.weight.requires_grad
    assert model.training  # tracing does not leave the model in eval mode


@pytest.mark.parametrize("form", ["tensor", "tuple", "dict"])
def test_example_inputs_forms_trace_whole_model(form):
    model = tiny_vit(depth=2)
    x = torch.randn(1, 3, 32, 32)
    inputs = {"tensor": x, "tuple": (x,), "dict": {"x": x}}[form]
    report = reduce_mlp_ratio(model, 0.5, example_inputs=inputs)
    assert [b.hidden_after for b in report.blocks] == [96, 96]
    assert model(x).shape == (1, 1000)


def test_whole_model_and_per_mlp_tracing_choose_the_same_channels():
    a, b = tiny_vit(depth=2), tiny_vit(depth=2)
    ra = reduce_mlp_ratio(a, 2.0, example_inputs=torch.randn(1, 3, 32, 32))
    rb = reduce_mlp_ratio(b, 2.0)
    assert [x.kept for x in ra.blocks] == [x.kept for x in rb.blocks]
    assert shapes(a) == shapes(b)


def test_round_to_and_custom_tp_importance():
    model = tiny_vit(depth=2)
    report = reduce_mlp_ratio(model, 0.3, round_to=16, importance=tp.importance.GroupMagnitudeImportance(p=1))
    assert [b.hidden_after for b in report.blocks] == [64, 64]  # round(0.3·192) = 58 → 64
    assert report.importance == "GroupMagnitudeImportance"
    assert report.to_dict()["blocks"][0]["hidden_after"] == 64


def test_blocks_path_in_nested_sequential():
    wrapper = torch.nn.Module()
    wrapper.backbone = tiny_vit(depth=2)
    reduce_mlp_ratio(wrapper, 1.0, blocks="backbone.blocks")
    assert wrapper.backbone.blocks[1].mlp.fc2.in_features == 192


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"ratio": 0.0}, "ratio must be > 0"),
        ({"ratio": -1.0}, "ratio must be > 0"),
        ({"ratio": 1.0, "importance": "l3"}, "unknown importance 'l3'"),
        ({"ratio": 1.0, "blocks": "backbone.blocks"}, "no attribute 'backbone'"),
        ({"ratio": 1.0, "blocks": "head"}, "not an nn.Sequential or nn.ModuleList"),
        ({"ratio": 5.0}, "exceeds the current 768"),
        ({"hidden": 1000}, "exceeds the current 768"),
        ({"ratio": 1.0, "hidden": 10}, "exactly one of ratio"),
        ({}, "exactly one of ratio"),
        ({"ratio": 1.0, "block_indices": [2]}, "out of range"),
        ({"ratio": 1.0, "importance": "taylor"}, "needs batches and loss_fn"),
        ({"ratio": 1.0, "example_inputs": torch.randn(1, 5)}, "tracing VisionTransformer on example_inputs failed"),
    ],
)
def test_bad_input_raises_one_clear_error(kwargs, message):
    model = tiny_vit(depth=2)
    before = {n: p.clone() for n, p in model.state_dict().items()}
    with pytest.raises(DistilkitError, match=message):
        reduce_mlp_ratio(model, **kwargs)
    after = model.state_dict()
    assert all(torch.equal(before[n], after[n]) for n in before)  # nothing was half-pruned


def test_non_mlp_blocks_are_refused():
    model = torch.nn.Module()
    model.blocks = torch.nn.ModuleList([torch.nn.Linear(4, 4)])
    with pytest.raises(DistilkitError, match="no timm-style MLP"):
        reduce_mlp_ratio(model, 1.0)


def test_model_made_under_inference_mode_is_refused_by_name():
    with torch.inference_mode():
        model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, num_classes=4)
    with pytest.raises(DistilkitError, match="cls_token was made under torch.inference_mode"):
        reduce_mlp_ratio(model, 1.0)


class _LeakyMlp(torch.nn.Module):
    """An MLP whose hidden activation is also read outside it (by the block's `probe`)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = torch.nn.Linear(8, 32), torch.nn.GELU(), torch.nn.Linear(32, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.hidden = self.act(self.fc1(x))
        return self.fc2(self.hidden)


class _LeakyBlock(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.mlp, self.probe = _LeakyMlp(), torch.nn.Linear(32, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x + self.mlp(x)
        return y + self.probe(self.mlp.hidden)


class _LeakyNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = torch.nn.Sequential(_LeakyBlock())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


def test_whole_model_trace_refuses_cuts_reaching_outside_the_mlp():
    model = _LeakyNet()
    with pytest.raises(DistilkitError, match="would also change blocks.0.probe"):
        reduce_mlp_ratio(model, 1.0, example_inputs=torch.randn(1, 3, 8))
    assert model.blocks[0].mlp.fc1.out_features == 32


class _SideMlp(torch.nn.Module):
    """An MLP that also feeds its hidden activations to a layer of its own (`side`)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = torch.nn.Linear(8, 32), torch.nn.GELU(), torch.nn.Linear(32, 8)
        self.side = torch.nn.Linear(32, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.fc1(x))
        return self.fc2(h) + self.side(h)


class _MlpBlock(torch.nn.Module):
    def __init__(self, mlp: torch.nn.Module) -> None:
        super().__init__()
        self.mlp = mlp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(x)


def test_cut_reaching_another_layer_inside_the_mlp_is_refused_before_any_slicing():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Module())
    model.blocks = torch.nn.Sequential(_MlpBlock(_LeakyMlp()), _MlpBlock(_SideMlp()))
    before = shapes(model)
    with pytest.raises(DistilkitError, match="would also change side"):
        reduce_mlp_ratio(model, 1.0)
    assert shapes(model) == before  # block 0, which alone would be fine, is untouched too


def test_blocks_sharing_one_mlp_are_refused_untouched():
    shared = _LeakyMlp()
    model = torch.nn.Module()
    model.blocks = torch.nn.ModuleList([_MlpBlock(shared), _MlpBlock(shared)])
    with pytest.raises(DistilkitError, match="blocks.0.mlp and blocks.1.mlp share modules"):
        reduce_mlp_ratio(model, 1.0)
    assert shared.fc1.out_features == 32 and shared.fc1.weight.shape == (32, 8)


def test_frozen_model_in_no_grad_context_is_traced_and_stays_frozen():
    model = tiny_vit(depth=2).requires_grad_(False)
    with torch.no_grad():
        report = reduce_mlp_ratio(model, 1.0, example_inputs=torch.randn(1, 3, 32, 32))
    assert [b.hidden_after for b in report.blocks] == [192, 192]
    assert not any(p.requires_grad for p in model.parameters())


def test_taylor_rejects_nan_loss_and_loss_without_mlp_gradient():
    from distilkit.errors import NonFiniteLossError

    model = tiny_vit(depth=1)
    batches = [torch.randn(1, 3, 32, 32)]
    with pytest.raises(NonFiniteLossError, match="loss is nan at batch 0"):
        reduce_mlp_ratio(model, 1.0, importance="taylor", batches=batches, loss_fn=lambda m, b: m(b).sum() * float("nan"))
    with pytest.raises(DistilkitError, match="does not depend on any pruned MLP"):
        reduce_mlp_ratio(model, 1.0, importance="taylor", batches=batches, loss_fn=lambda m, b: m.patch_embed(b).sum())
    two = tiny_vit(depth=2)
    first_block_only = lambda m, b: m.blocks[0](m.patch_embed(b)).sum()  # noqa: E731
    with pytest.raises(DistilkitError, match="does not depend on blocks.1.mlp.fc1"):
        reduce_mlp_ratio(two, 1.0, importance="taylor", batches=batches, loss_fn=first_block_only)
    with pytest.raises(DistilkitError, match="batches is empty"):
        reduce_mlp_ratio(model, 1.0, importance="taylor", batches=[], loss_fn=lambda m, b: m(b).sum())
    assert model.blocks[0].mlp.fc1.out_features == 768
