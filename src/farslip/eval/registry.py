"""The benchmark registry: every data set of the paper's three tables, by name (SPEC section 6).

Each entry says where its files sit under a data root, so nothing is hard-coded in the
evaluators: classification and retrieval follow the SkyScript benchmark layout (CSV paths relative
to the data root, image ``filepath`` values relative to the same root), segmentation the folders the
paper's evaluation framework reads under its data root (the mmsegmentation converters'
``<dir>/img_dir/<split>`` + ``ann_dir/<split>``; UDD5 and VDD as released, ``<split>/src`` +
``<split>/gt``). This module is the one place that says where those files are; the synthetic world
writes the same layout.
"""
from __future__ import annotations

from dataclasses import dataclass
from difflib import get_close_matches
from importlib import resources
from pathlib import Path
from typing import Optional

# The label-map value of pixels no metric counts (mmsegmentation's ignore_index), in every OVSS set
# as converted and in the synthetic world; with reduce_zero_label, label 0 becomes it too.
IGNORE_INDEX = 255


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
class SegmentationLayout:
    """Where one spelling of a converted OVSS set keeps its files, relative to the data root:
    ``folder`` (holds ``classes.txt`` when present), images in ``folder/images`` and label maps in
    ``folder/labels``; ``{split}`` in either is the split."""

    folder: str
    images: str = "img_dir/{split}"
    labels: str = "ann_dir/{split}"

    def paths(self, root: Path, split: str) -> tuple[Path, Path, Path]:
        folder = root / self.folder
        return folder, folder / self.images.format(split=split), folder / self.labels.format(split=split)


@dataclass(frozen=True)
class SegmentationFolders:
    """A located OVSS set: its folder, image folder and label-map folder."""

    folder: Path
    images: Path
    labels: Path


@dataclass(frozen=True)
class SegmentationSet:
    """A converted OVSS set, as the paper's evaluation framework reads it under its data root.

    ``layouts``: the spellings accepted, the framework's own first (e.g. ``loveDA/img_dir/val``),
    then the capitalised one and the older ``<Name>/img_dir/<split>``. ``img_suffix`` selects the
    images (matched case-insensitively) and is replaced by ``ann_suffix`` to name each label map
    (mmseg's ``img_suffix`` / ``seg_map_suffix``). ``reduce_zero_label``: label 0 means "ignore"
    and classes start at 1 (LoveDA, Potsdam, Vaihingen); elsewhere 0 is a class.
    """

    name: str
    split: str
    layouts: tuple[SegmentationLayout, ...]
    reduce_zero_label: bool = False
    img_suffix: str = ".png"
    ann_suffix: str = ".png"

    @property
    def dir(self) -> str:
        """The set's folder in the framework's own spelling (what the synthetic world writes)."""
        return self.layouts[0].folder

    def candidates(self, root: Path, split: Optional[str] = None) -> list[SegmentationFolders]:
        """Every accepted (folder, images, labels) under ``root``, in the order they are tried."""
        split = split or self.split
        return [SegmentationFolders(*layout.paths(Path(root), split)) for layout in self.layouts]

    def find(self, root: Path, split: Optional[str] = None) -> Optional[SegmentationFolders]:
        """The first spelling whose image and label folders both exist under ``root``, else None."""
        for found in self.candidates(root, split):
            if found.images.is_dir() and found.labels.is_dir():
                return found
        return None

    def locate(self, root: Path, split: Optional[str] = None) -> SegmentationFolders:
        """:meth:`find`, or a FileNotFoundError that lists every path tried."""
        found = self.find(root, split)
        if found is None:
            tried = "; ".join(f"{c.images} + {c.labels}" for c in self.candidates(root, split))
            raise FileNotFoundError(f"segmentation data set {self.name}: no image and label folders under "
                                    f"{root}; tried {tried}")
        return found

    @property
    def packaged_classes(self) -> Path:
        """The class file shipped with farslip (one class a line, comma-separated synonyms)."""
        return Path(str(resources.files("farslip.eval").joinpath("classnames", f"{self.name}.txt")))


def _converted(*folders: str) -> tuple[SegmentationLayout, ...]:
    """``<folder>/img_dir/<split>`` + ``<folder>/ann_dir/<split>`` for each spelling."""
    return tuple(SegmentationLayout(f) for f in folders)


def _src_gt(*folders: str) -> tuple[SegmentationLayout, ...]:
    """``<folder>/<split>/src`` + ``<folder>/<split>/gt`` (UDD5, VDD as released)."""
    return tuple(SegmentationLayout(f, "{split}/src", "{split}/gt") for f in folders)


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

# The converted sets the paper evaluated: folders, splits, suffixes and label conventions of its
# evaluation framework (SegEarth-OV / mmsegmentation converters, SPEC section 6); each accepts its
# capitalised spelling and the ``<Name>/img_dir/<split>`` layout too.
SEGMENTATION: dict[str, SegmentationSet] = {
    s.name: s
    for s in [
        SegmentationSet("OpenEarthMap", "val", _converted("OpenEarthMap"), img_suffix=".tif", ann_suffix=".tif"),
        SegmentationSet("LoveDA", "val", _converted("loveDA", "LoveDA"), reduce_zero_label=True),
        SegmentationSet("iSAID", "val", _converted("iSAID"), ann_suffix="_instance_color_RGB.png"),
        SegmentationSet("Potsdam", "val", _converted("potsdam", "Potsdam"), reduce_zero_label=True),
        SegmentationSet("Vaihingen", "val", _converted("vaihingen", "Vaihingen"), reduce_zero_label=True),
        SegmentationSet("UAVid", "test", _converted("UAVid")),
        SegmentationSet("UDD5", "val", _src_gt("UDD5", "UDD/UDD/UDD5") + _converted("UDD5"), img_suffix=".JPG"),
        SegmentationSet("VDD", "test", _src_gt("VDD") + _converted("VDD"), img_suffix=".JPG"),
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
