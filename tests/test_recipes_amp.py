"""Budget key `amp: none | bf16 | fp16`: CUDA autocast (fp16 loss-scaled) in training stages, refused on CPU."""

from __future__ import annotations

import os

import pytest
import torch
import yaml

from distilkit.cli import main
from distilkit.errors import DistilkitError
from distilkit.recipes import load_recipe
from distilkit.recipes.amp import MixedPrecision, check_amp

TINY = os.path.join(os.path.dirname(__file__), "data", "recipe-tiny.yaml")


def _teacher_only(tmp_path, **budget) -> str:
    data = yaml.safe_load(open(TINY, encoding="utf-8"))
    data["stages"] = data["stages"][:1]
    data["budgets"]["tiny"]["stages"] = {"teacher": {"epochs": 1}}
    data["budgets"]["tiny"].update(budget)
    path = tmp_path / "teacher-only.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


def _line_of(path: str, needle: str) -> int:
    return next(i for i, line in enumerate(open(path, encoding="utf-8"), 1) if needle in line)


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_amp_on_a_cpu_run_is_refused_at_its_recipe_key_before_anything_is_written(tmp_path, capsys, amp):
    recipe = _teacher_only(tmp_path, amp=amp)
    with pytest.raises(SystemExit) as exc:
        main(["prune", "--recipe", recipe, "--budget", "tiny", "--device", "cpu", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and len(err.splitlines()) == 1
    assert f"{recipe}:{_line_of(recipe, 'amp:')}: budgets.tiny.amp: amp: {amp} runs on CUDA devices only" in err
    assert not (tmp_path / "run").exists()
    with pytest.raises(SystemExit) as exc:  # planning needs no GPU
        main(["prune", "--recipe", recipe, "--budget", "tiny", "--device", "cpu", "--dry-run"])
    assert exc.value.code == 0


def test_unknown_amp_mode_is_a_recipe_error(tmp_path):
    with pytest.raises(DistilkitError, match="budgets.tiny.amp"):
        load_recipe(_teacher_only(tmp_path, amp="fp8"))
    with pytest.raises(DistilkitError, match="unknown amp mode 'fp8'"):
        check_amp("fp8", "cuda")


def test_paper_budgets_state_the_official_default():
    assert [load_recipe(r).budget("paper").amp for r in ("mixformerv2-s", "mixformerv2-b")] == ["none", "none"]


def test_amp_none_steps_exactly_as_plain_fp32():
    torch.manual_seed(0)
    a, b = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    b.load_state_dict(a.state_dict())
    x = torch.randn(8, 4)
    opt_a, opt_b = torch.optim.AdamW(a.parameters(), lr=0.1), torch.optim.AdamW(b.parameters(), lr=0.1)
    precision = MixedPrecision("none", "cpu")
    with precision.autocast():
        loss_a = a(x).square().mean()
    precision.step(loss_a, opt_a, list(a.parameters()), clip=0.1)
    b(x).square().mean().backward()
    torch.nn.utils.clip_grad_norm_(list(b.parameters()), 0.1)
    opt_b.step()
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert precision.state_dict() is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="amp needs a CUDA device")
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_a_stage_trains_and_checkpoints_under_amp(tmp_path, amp):
    if amp == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bfloat16")
    from distilkit.recipes import trainer

    saved = []
    save = trainer.Trainer.save_checkpoint
    monkey = pytest.MonkeyPatch()
    monkey.setattr(trainer.Trainer, "save_checkpoint", lambda self: saved.append(self.precision.state_dict()) or save(self))
    out = tmp_path / "run"
    try:
        with pytest.raises(SystemExit) as exc:
            main(["prune", "--recipe", _teacher_only(tmp_path, amp=amp), "--budget", "tiny", "--device", "cuda",
                  "--out", str(out)])
    finally:
        monkey.undo()
    assert exc.value.code == 0 and (out / "teacher" / "model" / "model.safetensors").is_file()
    assert saved and all((state is not None and "scale" in state) == (amp == "fp16") for state in saved)
