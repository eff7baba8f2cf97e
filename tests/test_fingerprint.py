"""distilkit.fingerprint: every kind of change that can make cached results stale is noticed, once."""

import torch
from torch import nn

from distilkit.depth import remove_layers
from distilkit.fingerprint import ModuleFingerprint, tensor_version


def test_each_change_is_reported_once():
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    fp = ModuleFingerprint(model)
    assert not fp.changed()
    x = torch.randn(8, 4)
    model(x)  # train-mode batch norm updates its running statistics in place
    assert fp.changed() and not fp.changed()
    edits = [
        lambda: model[0].weight.mul_(2.0),  # under no_grad, as optimizers do
        lambda: model[2].load_state_dict({"weight": torch.randn(2, 4), "bias": torch.zeros(2)}),
        lambda: setattr(model[0], "weight", nn.Parameter(model[0].weight.detach().clone())),
        lambda: model.__setitem__(2, nn.Linear(4, 2)),
        lambda: model.eval(),
        lambda: model[2].register_buffer("extra", torch.zeros(1)),
        lambda: model.register_parameter("scale", nn.Parameter(torch.ones(1))),  # on a module that had none
    ]
    for i, edit in enumerate(edits):
        with torch.no_grad():
            edit()
        assert fp.changed(), i
        assert not fp.changed()
    with torch.no_grad():
        model(x)  # eval-mode forward changes nothing
    assert not fp.changed()
    with torch.no_grad():
        model[2].weight.add_(1.0)  # a submodule that arrived later is watched as well
    assert fp.changed()


def test_inference_tensors_are_watched_without_version_counters():
    with torch.inference_mode():
        model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
        assert tensor_version(model[0].weight) == -1
        fp = ModuleFingerprint(model)
        assert not fp.changed()
        model[0].weight.mul_(2.0)  # no counter to see this by: documented
        assert not fp.changed()
        model[1] = nn.Linear(4, 2)
        assert fp.changed() and not fp.changed()
    assert tensor_version(torch.zeros(1).add_(1)) == 1


def test_swapped_child_dict_is_seen():
    """Depth pruning replaces the container's whole _modules dict rather than editing it."""
    model = nn.Module()
    model.blocks = nn.ModuleList(nn.Linear(2, 2) for _ in range(3))
    fp = ModuleFingerprint(model)
    remove_layers(model, [1])
    assert fp.changed() and not fp.changed()
    with torch.no_grad():
        model.blocks[1].weight.add_(1.0)  # the block that moved up is still watched
    assert fp.changed()
