"""What the synthetic world adds to the evaluation registry's layouts: how its labels are spelled.

Where every data set goes on disk (names, CSV paths, caption columns, folders, splits, suffixes,
label conventions) is said once, by the evaluation registry (:mod:`farslip.eval.registry`,
SPEC section 6); the world writes exactly there, so the readers written for real data read its
files unchanged. This module holds only what is the world's own: which classification sets spell
their labels as class indices, the training validation CSV (not an evaluation set), and how the
world's semantic classes map to each imitated OVSS set's label values.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..eval.registry import IGNORE_INDEX, SEGMENTATION, SegmentationFolders, SegmentationSet
from .vocab import SEMANTIC_CLASSES

# Classification sets whose CSV spells labels as class indices (as EuroSAT's does); the others
# spell class names.
INTEGER_LABELS = frozenset({"eurosat"})

SKYSCRIPT_VAL_CSV = "SkyScript_val_5K_filtered_by_CLIP_openai.csv"  # training's --val-data


@dataclass(frozen=True)
class OvssSet:
    """An OVSS data set: its class lines (comma-separated synonyms), the label value written for
    each world semantic class, and the value of classes the set does not name. Where its files
    go, their suffixes, its split and whether 0 is "ignore" with classes from 1 (reduce-zero-label)
    come from the evaluation registry (``farslip.eval.registry.SEGMENTATION``), the one place that
    says so: the world is written exactly where the evaluator looks first."""

    name: str
    classes: tuple[str, ...]
    mapping: dict[str, int]  # world semantic class -> label value in the label maps
    default: int  # label value of world classes the set does not name

    @property
    def registered(self) -> SegmentationSet:
        return SEGMENTATION[self.name]

    @property
    def split(self) -> str:
        return self.registered.split

    @property
    def reduce_zero_label(self) -> bool:
        return self.registered.reduce_zero_label

    @property
    def img_suffix(self) -> str:
        return self.registered.img_suffix

    @property
    def ann_suffix(self) -> str:
        """Label map name = image stem + this (mmseg's seg_map_suffix)."""
        return self.registered.ann_suffix

    def folders(self, root: Path) -> SegmentationFolders:
        """The set's folder, image folder and label folder under the OVSS root (the registry's
        first spelling)."""
        return self.registered.candidates(root)[0]

    def lut(self) -> np.ndarray:
        """A 256-entry table from world semantic ids to this set's label values."""
        table = np.full(256, IGNORE_INDEX, dtype=np.uint8)
        for i, name in enumerate(SEMANTIC_CLASSES):
            table[i] = self.mapping.get(name, self.default)
        return table


OVSS_SETS: tuple[OvssSet, ...] = (
    # Label 0 is a real class ("background"), as in OpenEarthMap, iSAID and UAVid.
    OvssSet(
        "OpenEarthMap",
        ("background", "bareland,barren land,sand", "rangeland,grass", "developed space,pavement",
         "road,bridge", "tree,forest", "water", "agriculture land,farmland,cropland", "building,roof"),
        {"sand": 1, "grass": 2, "pavement": 3, "road": 4, "bridge": 4, "woodland": 5, "tree": 5,
         "water": 6, "farmland": 7, "building": 8},
        default=0,
    ),
    OvssSet(
        "iSAID",
        ("background", "ship,boat", "storage tank,tank", "tennis court", "bridge",
         "small vehicle,car", "swimming pool,pool", "plane,airplane"),
        {"ship": 1, "storage tank": 2, "tennis court": 3, "bridge": 4, "car": 5, "swimming pool": 6,
         "airplane": 7},
        default=0,
    ),
    # Label 0 is "no data" (ignored) and classes start at 1, as in LoveDA, Potsdam and Vaihingen.
    OvssSet(
        "LoveDA",
        ("background,clutter", "building,roof", "road,bridge", "water", "barren,sand",
         "forest,tree", "agricultural,farmland"),
        {"building": 2, "road": 3, "bridge": 3, "water": 4, "sand": 5, "woodland": 6, "tree": 6,
         "farmland": 7},
        default=1,
    ),
)
