"""The benchmark registry: every data set of the paper's three tables, by name (SPEC section 6).

Each entry says where its files sit under a data root, so nothing is hard-coded in the
evaluators: classification and retrieval follow the SkyScript benchmark layout (CSV paths relative
to the data root, image ``filepath`` values relative to the same root), segmentation the common
mmsegmentation-converted layout ``<root>/<dir>/img_dir/<split>`` + ``ann_dir/<split>``.
"""
from __future__ import annotations

from dataclasses import dataclass
from difflib import get_close_matches
from importlib import resources
from pathlib import Path
from typing import Optional


@dataclass(frozen=True)
class ClassificationSet:
    """A scene-classification CSV (``filepath``, ``label``) plus ``classnames.txt`` beside it."""

    name: str
    csv: str  # relative to the data root
    note: str = ""

    @property
    def classnames(self) -> str:
        return str(Path(self.csv).parent / "classnames.txt")


@dataclass(frozen=True)
class RetrievalSet:
    """An image-caption CSV; ``prefix`` is prepended to every caption before tokenising."""

    name: str
    csv: str  # relative to the data root
    caption_key: str = "title"
    prefix: str = ""


@dataclass(frozen=True)
class SegmentationSet:
    """A converted OVSS folder: ``<dir>/img_dir/<split>`` and ``<dir>/ann_dir/<split>``.

    ``reduce_zero_label``: label 0 means "ignore" and classes start at 1 (LoveDA, Potsdam,
    Vaihingen); elsewhere 0 is a class (usually background). ``ann_suffix`` replaces the image
    extension to find a label map (iSAID's converted maps end in ``_instance_color_RGB.png``).
    """

    name: str
    split: str
    reduce_zero_label: bool = False
    ann_suffix: str = ".png"

    @property
    def dir(self) -> str:
        return self.name

    @property
    def packaged_classes(self) -> Path:
        """The class file shipped with farslip (one class a line, comma-separated synonyms)."""
        return Path(str(resources.files("farslip.eval").joinpath("classnames", f"{self.name}.txt")))


_TRAIN_CSV_NOTE = "scored on its train CSV, as in the paper's table (SPEC section 8)"

CLASSIFICATION: dict[str, ClassificationSet] = {
    s.name: s
    for s in [
        ClassificationSet("SkyScript_cls", "SkyScript_cls/img_txt_pairs_val.csv"),
        ClassificationSet("aid", "aid/aid_img_txt_pairs_test.csv"),
        ClassificationSet("eurosat", "eurosat/eurosat_img_txt_pairs_test.csv"),
        ClassificationSet("fmow", "fmow/fmow_img_txt_pairs_val.csv"),
        ClassificationSet("millionaid", "millionaid/img_txt_pairs_train.csv", _TRAIN_CSV_NOTE),
        ClassificationSet("patternnet", "patternnet/img_txt_pairs_train.csv", _TRAIN_CSV_NOTE),
        ClassificationSet("rsicb", "rsicb256/img_txt_pairs_train.csv", _TRAIN_CSV_NOTE),
        ClassificationSet("nwpu", "nwpu/img_txt_pairs_train.csv", _TRAIN_CSV_NOTE),
    ]
}

CAPTION_PREFIX = "a satellite image. "

RETRIEVAL: dict[str, RetrievalSet] = {
    s.name: s
    for s in [
        RetrievalSet("RSICD", "RSICD/RSICD_img_txt_pairs_test.csv", prefix=CAPTION_PREFIX),
        RetrievalSet("RSITMD", "RSITMD/RSITMD_img_txt_pairs_test.csv", prefix=CAPTION_PREFIX),
        RetrievalSet("ucmcaptions", "ucmcaptions/ucmcaptions_img_txt_pairs_test.csv", prefix=CAPTION_PREFIX),
        RetrievalSet("SkyScript", "SkyScript_test_30K_filtered_by_CLIP_openai.csv", caption_key="title_multi_objects"),
    ]
}

# Splits and label conventions of the converted sets the paper evaluated (SegEarth-OV layout).
SEGMENTATION: dict[str, SegmentationSet] = {
    s.name: s
    for s in [
        SegmentationSet("OpenEarthMap", "val"),
        SegmentationSet("LoveDA", "val", reduce_zero_label=True),
        SegmentationSet("iSAID", "val", ann_suffix="_instance_color_RGB.png"),
        SegmentationSet("Potsdam", "val", reduce_zero_label=True),
        SegmentationSet("Vaihingen", "val", reduce_zero_label=True),
        SegmentationSet("UAVid", "test"),
        SegmentationSet("UDD5", "val"),
        SegmentationSet("VDD", "test"),
    ]
}

TASKS = ("classification", "retrieval", "segmentation")

# The names the paper's tables print, per registered name (report columns); a set not listed
# here (a --csv or --seg-dir set) shows under its own name.
DISPLAY_NAMES: dict[str, str] = {
    "SkyScript_cls": "SkyScript", "aid": "AID", "eurosat": "EuroSAT", "fmow": "fMoW", "millionaid": "Million-AID",
    "patternnet": "PatternNet", "rsicb": "RSI-CB256", "nwpu": "NWPU-RESISC45",
    "RSICD": "RSICD", "RSITMD": "RSITMD", "ucmcaptions": "UCM-Captions", "SkyScript": "SkyScript",
    "OpenEarthMap": "OpenEarthMap", "LoveDA": "LoveDA", "iSAID": "iSAID", "Potsdam": "Potsdam",
    "Vaihingen": "Vaihingen", "UAVid": "UAVid", "UDD5": "UDD5", "VDD": "VDD",
}


def display_name(name: str) -> str:
    """The paper's name of a registered set (``aid`` -> ``AID``), else ``name`` itself."""
    return DISPLAY_NAMES.get(name, name)


def lookup(table: dict, name: str, task: str):
    """``table[name]`` (case-insensitive), or a ValueError listing the registered names."""
    if name in table:
        return table[name]
    for key, value in table.items():
        if key.lower() == name.lower():
            return value
    close = get_close_matches(name.lower(), [key.lower() for key in table], n=1, cutoff=0.6)
    hint = f" (did you mean {next(k for k in table if k.lower() == close[0])!r}?)" if close else ""
    raise ValueError(f"unknown {task} data set {name!r}{hint}; registered: {', '.join(table)}")


def parse_names(text: Optional[str], table: dict) -> list[str]:
    """A comma-separated ``--datasets`` value -> list of names; None/empty -> every registered one."""
    if not text:
        return list(table)
    return [part.strip() for part in text.split(",") if part.strip()]
