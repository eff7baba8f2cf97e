from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import box_iou, complete_box_iou_loss, generalized_box_iou_loss

from distilkit.distill import box_loss
from distilkit.errors import DistilkitError


def random_boxes(n: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=gen, dtype=torch.float64) * 0.7
    wh = torch.rand(n, 2, generator=gen, dtype=torch.float64) * 0.5 + 0.01
    return torch.cat([xy, xy + wh], dim=-1)


def test_matches_torchvision_on_random_boxes() -> None:
    pred, gt = random_boxes(256, 0), random_boxes(256, 1)
    out = box_loss(pred, gt, reduction="none")
    torch.testing.assert_close(out["giou"], generalized_box_iou_loss(pred, gt), atol=1e-6, rtol=0)
    torch.testing.assert_close(out["ciou"], complete_box_iou_loss(pred, gt), atol=1e-6, rtol=0)
    torch.testing.assert_close(out["iou"], box_iou(pred, gt).diagonal(), atol=1e-6, rtol=0)
    torch.testing.assert_close(out["l1"], (pred - gt).abs().mean(-1))
    mean = box_loss(pred, gt)
    torch.testing.assert_close(mean["l1"], F.l1_loss(pred, gt))
    torch.testing.assert_close(
        mean["ciou"], complete_box_iou_loss(pred, gt, reduction="mean"), atol=1e-6, rtol=0
    )
    torch.testing.assert_close(
        box_loss(pred, gt, "sum")["giou"], generalized_box_iou_loss(pred, gt, "sum"), atol=1e-5, rtol=0
    )


def test_identical_boxes_give_zero_loss_and_unit_iou() -> None:
    boxes = random_boxes(8, 2).float()
    out = box_loss(boxes, boxes)
    assert out["l1"].item() == 0
    assert out["giou"].abs().item() < 1e-5 and out["ciou"].abs().item() < 1e-5
    assert abs(out["iou"].item() - 1) < 1e-5 and not out["iou"].requires_grad


def test_leading_dims_are_kept_with_reduction_none() -> None:
    pred, gt = random_boxes(6, 3).view(2, 3, 4), random_boxes(6, 4).view(2, 3, 4)
    out = box_loss(pred, gt, reduction="none")
    assert all(v.shape == (2, 3) for v in out.values())


DEGENERATE = torch.tensor(
    [
        [0.3, 0.3, 0.3, 0.3],  # a point
        [0.2, 0.4, 0.6, 0.4],  # zero height
        [0.5, 0.1, 0.5, 0.7],  # zero width
        [0.6, 0.6, 0.4, 0.4],  # swapped corners
        [0.0, 0.0, 0.0, 0.0],  # point at the origin
        [0.9, 0.2, 0.1, 0.8],  # swapped x only
    ]
)


@pytest.mark.parametrize("gt_is_degenerate", [False, True])
def test_degenerate_boxes_are_finite_with_finite_gradients(gt_is_degenerate: bool) -> None:
    pred = DEGENERATE.clone().requires_grad_(True)
    gt = DEGENERATE.flip(0) if gt_is_degenerate else torch.tensor([[0.2, 0.2, 0.6, 0.6]]).expand(6, 4)
    gt = gt.clone().requires_grad_(True)
    out = box_loss(pred, gt, reduction="none")
    for name, value in out.items():
        assert torch.isfinite(value).all(), name
    (out["l1"] + out["giou"] + out["ciou"]).sum().backward()
    assert torch.isfinite(pred.grad).all() and torch.isfinite(gt.grad).all()
    assert out["iou"][3] == 0  # a swapped box has zero area: no overlap credit for its mirror image


def test_swapped_corners_are_pulled_back() -> None:
    pred = torch.tensor([[0.6, 0.6, 0.4, 0.4]], requires_grad=True)
    gt = torch.tensor([[0.4, 0.4, 0.6, 0.6]])
    out = box_loss(pred, gt)
    (out["ciou"] + out["l1"]).backward()
    assert pred.grad[0, 0] > 0 and pred.grad[0, 2] < 0  # descent moves x1 left and x2 right


@pytest.mark.parametrize("part", ["giou", "ciou"])
def test_swapped_corners_get_no_overlap_gradient(part: str) -> None:
    # Their raw-corner enclosing box shrinks as the swap grows: descending GIoU/CIoU there would
    # swap the corners further, so only L1 may move them (values are still reported).
    gt = torch.tensor([[0.7, 0.7, 0.9, 0.9]])
    swapped = torch.tensor([[0.55, 0.55, 0.45, 0.45]], requires_grad=True)
    out = box_loss(swapped, gt)
    out[part].backward()
    assert torch.count_nonzero(swapped.grad) == 0 and out[part] > 1
    ordered = torch.tensor([[0.45, 0.45, 0.55, 0.55]], requires_grad=True)
    box_loss(ordered, gt)[part].backward()
    assert torch.count_nonzero(ordered.grad) > 0


def test_bad_inputs_raise() -> None:
    with pytest.raises(DistilkitError, match="reduction"):
        box_loss(torch.zeros(2, 4), torch.zeros(2, 4), reduction="avg")
    with pytest.raises(DistilkitError, match="xyxy"):
        box_loss(torch.zeros(2, 4), torch.zeros(3, 4))
    with pytest.raises(DistilkitError, match="xyxy"):
        box_loss(torch.zeros(2, 5), torch.zeros(2, 5))


def test_empty_batch_mean_is_zero_not_nan() -> None:
    out = box_loss(torch.zeros(0, 4), torch.zeros(0, 4))
    assert all(v.item() == 0 for v in out.values())
