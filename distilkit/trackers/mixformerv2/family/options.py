"""The budget settings of the MixFormerV2 family: crop sizes and factors, pair sampling, augmentation, the
built-in synthetic data, tracker options. They sit at a recipe budget's top level beside the generic keys."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Optional

from distilkit.data.synthetic import DEMO_IMAGE_SIZE, DEMO_LENGTH, DEMO_TEST_SEQUENCES, DEMO_TRAIN_SEQUENCES
from distilkit.limits import (MAX_BRIGHTNESS, MAX_CENTER_JITTER, MAX_CONTEXT, MAX_CROP, MAX_GAP, MAX_IMAGE_SIDE,
                              MAX_LENGTH, MAX_SCALE_JITTER, MAX_SEQUENCES, MIN_IMAGE_SIDE)
from distilkit.recipes.schema import PROBABILITY, Bound, bounds_problem


@dataclass
class SyntheticSpec:
    """Size of the built-in synthetic tracking data (`--data synthetic` and the default test split); the defaults
    are the demo splits (distilkit.data.synthetic.DEMO_*)."""

    train_sequences: int = DEMO_TRAIN_SEQUENCES
    test_sequences: int = DEMO_TEST_SEQUENCES
    length: int = DEMO_LENGTH
    image_size: list[int] = field(default_factory=lambda: list(DEMO_IMAGE_SIZE))

    def check(self) -> Optional[tuple[str, str]]:
        if len(self.image_size) != 2 or not all(MIN_IMAGE_SIDE <= v <= MAX_IMAGE_SIDE for v in self.image_size):
            return "image_size", f"is [width, height] in pixels, each in [{MIN_IMAGE_SIDE}, {MAX_IMAGE_SIDE}]"
        return bounds_problem(self, {"train_sequences": Bound(1.0, MAX_SEQUENCES), "test_sequences": Bound(1.0, MAX_SEQUENCES),
                                     "length": Bound(2.0, MAX_LENGTH)})


@dataclass
class AugmentSpec:
    """Training-pair augmentation (`distilkit.data.augment.Augment`, as the official pipeline): probability of a
    grayscale pair, brightness jitter and flip probability per crop; 0 turns each off."""

    grayscale: float = 0.0
    brightness: float = 0.0
    flip: float = 0.0

    def check(self) -> Optional[tuple[str, str]]:
        return bounds_problem(self, {"grayscale": Bound(0.0, 1.0), "brightness": Bound(0.0, MAX_BRIGHTNESS),
                                     "flip": Bound(0.0, 1.0)})


@dataclass
class TrackingEvalSpec:
    """The family's `eval:` keys: the factor trackers crop with and MixFormerV2Tracker options."""

    search_factor: Optional[float] = None  # the factor the tracker crops with; default: the budget's (training) one
    tracker: dict[str, Any] = field(default_factory=dict)  # MixFormerV2Tracker options, checked with the recipe

    def check(self) -> Optional[tuple[str, str]]:
        return bounds_problem(self, {"search_factor": Bound(0.0, MAX_CONTEXT, low_open=True)})


@dataclass
class TrackingBudget:
    """Crops (sizes, context factors), how training pairs are sampled and augmented, the synthetic data, and how
    the tracker evaluates."""

    template_size: int = 128
    search_size: int = 288
    template_factor: float = 2.0
    search_factor: float = 5.0
    center_jitter: float = 4.5
    scale_jitter: float = 0.5
    max_gap: int = 200
    negative_prob: float = 0.5
    dataset_weights: Literal["equal", "sequences"] = "sequences"  # datasets drawn 1:1 (official) or by sequence count
    augment: AugmentSpec = field(default_factory=AugmentSpec)
    synthetic: SyntheticSpec = field(default_factory=SyntheticSpec)
    eval: TrackingEvalSpec = field(default_factory=TrackingEvalSpec)

    def check(self) -> Optional[tuple[str, str]]:
        crop, context = Bound(1.0, MAX_CROP), Bound(0.0, MAX_CONTEXT, low_open=True)
        return bounds_problem(self, {
            "template_size": crop, "search_size": crop, "template_factor": context, "search_factor": context,
            "center_jitter": Bound(0.0, MAX_CENTER_JITTER), "scale_jitter": Bound(0.0, MAX_SCALE_JITTER),
            "max_gap": Bound(0.0, MAX_GAP), "negative_prob": PROBABILITY,
        })

    @property
    def tracking_search_factor(self) -> float:
        """The search factor trackers crop with (`eval.search_factor`, else the training `search_factor`)."""
        return self.search_factor if self.eval.search_factor is None else self.eval.search_factor
