"""Reading the benchmark files: CSVs, class lists, image folders and label maps.

Every reader checks its input up front and names the file (and row) that is wrong, so that a run
on a badly prepared benchmark fails in its first second rather than after an hour of encoding.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from farslip.data.csv_data import check_files
from farslip.data.image_files import FileItem, open_image

from .registry import IGNORE_INDEX

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")


def require_dir(path: Path, what: str) -> Path:
    """``path`` if it is a directory, else a FileNotFoundError naming it and what it should hold."""
    if not path.is_dir():
        raise FileNotFoundError(f"{what}: directory {path} does not exist")
    return path


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{what}: file {path} does not exist")
    return path


def resolve_user_path(path, data_root, what: str) -> Path:
    """A path the user gave (``--csv``, ``--classnames``): as given (absolute, or relative to the
    current directory), else relative to ``data_root``; FileNotFoundError naming every path tried."""
    given = Path(path).expanduser()
    tried = [given]
    if given.exists():
        return given
    if data_root is not None and not given.is_absolute():
        under = Path(data_root) / given
        tried.append(under)
        if under.exists():
            return under
    raise FileNotFoundError(f"{what} {path}: not found (tried {', '.join(str(t) for t in tried)})")


def csv_set_present(data_root: Path, csv: str) -> bool:
    """A registered CSV set is there: its CSV exists, or at least its own folder (then a missing CSV is
    an error of that set, not an absent set)."""
    path = Path(data_root) / csv
    return path.is_file() or (path.parent != Path(data_root) and path.parent.is_dir())


def read_classnames(path: Path) -> list[str]:
    """One class name per line (``classnames.txt``); line i is class index i.

    Blank lines at the end are ignored; a blank line before the last name is an error (dropping it
    would shift every later class index, and labels would be scored under another class's name),
    as is a name that appears twice (a string label would be ambiguous).
    """
    names = [line.strip() for line in require_file(path, "class names").read_text(encoding="utf-8").splitlines()]
    while names and not names[-1]:
        names.pop()
    if not names:
        raise ValueError(f"{path}: no class names")
    blank = [i + 1 for i, name in enumerate(names) if not name]
    if blank:
        raise ValueError(f"{path}: line {blank[0]} is blank; each line is one class, in index order, so a blank "
                         f"line would shift every later class index. Remove it or write the class there")
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in seen:
            raise ValueError(f"{path}: class {name!r} appears on lines {seen[name] + 1} and {i + 1}")
        seen[name] = i
    return names


def read_class_synonyms(path: Path) -> list[list[str]]:
    """One class per line, comma-separated synonyms (the OVSS class files; rules of :func:`read_classnames`)."""
    classes = [[s.strip() for s in line.split(",") if s.strip()] for line in read_classnames(path)]
    bad = [i for i, c in enumerate(classes) if not c]
    if bad:
        raise ValueError(f"{path}: class line(s) {bad} hold no name")
    return classes


def checked_paths(paths: Sequence[str], image_root: Path, csv: Path) -> list[Path]:
    """A CSV's image paths resolved under ``image_root``; FileNotFoundError naming the missing ones."""
    check_files([FileItem(path, "") for path in paths], str(image_root), str(csv))
    return [image_root / path for path in paths]


def label_indices(labels: Sequence[str], classnames: Sequence[str], csv: Path) -> list[int]:
    """Labels -> class indices: a label that is exactly a class name maps to it, else it must be an
    integer index into the class list (``"3"`` or ``"3.0"``)."""
    lookup = {name: i for i, name in enumerate(classnames)}
    indices = []
    for row, label in enumerate(labels):
        if label in lookup:
            indices.append(lookup[label])
            continue
        try:
            value = float(label)
        except ValueError:
            value = float("nan")  # not a number: fails the range check below
        if not (value.is_integer() and 0 <= value < len(classnames)):
            raise ValueError(f"{csv}: label {label!r} (data row {row + 1}) is neither a class name of the "
                             f"class list nor an index in [0, {len(classnames)})")
        indices.append(int(value))
    return indices


class ImageFiles(Dataset):
    """Images from a list of paths through ``transform``; ``(tensor, index)`` per item."""

    def __init__(self, paths: Sequence[Path], transform: Callable):
        self.paths = list(paths)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        return self.transform(open_image(str(self.paths[index]), str(self.paths[index]))), index


def segmentation_pairs(img_dir: Path, ann_dir: Path, ann_suffix: str,
                       img_suffix: Optional[str] = None) -> list[tuple[Path, Path]]:
    """(image, label map) pairs, sorted by image path, as mmsegmentation lists them.

    Every file under ``img_dir`` (sub-folders included) whose name ends in ``img_suffix``
    (case-insensitive), paired with the same relative path under ``ann_dir`` with that suffix
    replaced by ``ann_suffix``. ``img_suffix`` None: any image extension, the label map named
    ``<stem><ann_suffix>``.
    """
    def suffix_of(path: Path) -> Optional[str]:
        name = path.name.lower()
        if img_suffix is not None:
            return path.name[len(path.name) - len(img_suffix):] if name.endswith(img_suffix.lower()) else None
        return path.suffix if path.suffix.lower() in IMAGE_EXTENSIONS else None

    images = sorted(p for p in img_dir.rglob("*") if p.is_file() and suffix_of(p))
    if not images:
        wanted = f"*{img_suffix}" if img_suffix is not None else ", ".join(IMAGE_EXTENSIONS)
        raise FileNotFoundError(f"no images ({wanted}) in {img_dir}")
    pairs = []
    for image in images:
        relative = image.relative_to(img_dir)
        stem = relative.name[: len(relative.name) - len(suffix_of(image))]
        pairs.append((image, ann_dir / relative.parent / f"{stem}{ann_suffix}"))
    missing = [ann for _, ann in pairs if not ann.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} label map(s) missing in {ann_dir}, e.g. {missing[0]}")
    return pairs


def load_label_map(path: Path, reduce_zero_label: bool) -> np.ndarray:
    """A single-channel label map as uint8 [H, W]; with ``reduce_zero_label`` 0 -> 255, k -> k-1."""
    with Image.open(path) as image:
        if image.mode not in ("L", "P", "I", "I;16"):
            raise ValueError(f"{path}: label map must be single-channel (mode L or P), got mode {image.mode}")
        labels = np.asarray(image).astype(np.int64)
    if reduce_zero_label:
        labels = np.where(labels == 0, IGNORE_INDEX, labels - 1)
        labels[labels == IGNORE_INDEX - 1] = IGNORE_INDEX
    if labels.min() < 0 or labels.max() > IGNORE_INDEX:
        raise ValueError(f"{path}: labels outside 0..255")
    return labels.astype(np.uint8)


def first(batch: list):
    """Collate for batch size 1 that returns the item itself."""
    return batch[0]
