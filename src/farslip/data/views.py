"""Local views of one training image: random crops, grid cells and annotated objects (SPEC section 3).

Everything here works on the *decoded original* PIL image: box coordinates are in original
pixels, each view is cut from the original pixels and then transformed (squash resize, plus the
stage-2 jitter when asked), and the stored box is the pixel box normalised by the original width
and height, so box and pixels always describe the same region.

Randomness is per sample: :func:`sample_seed` hashes (seed, epoch, sample identity) into a seed
and :func:`seeded` runs the view construction under it, so a sample's crops and jitter do not
depend on which worker or process builds it, nor on what was built before.
"""
from __future__ import annotations

import hashlib
import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Sequence

import torch
from PIL import Image
from torchvision.transforms import RandomResizedCrop

# Pixel box (left, top, right, bottom); right/bottom exclusive, so width = right - left.
PixelBox = tuple[int, int, int, int]

CROP_METHODS = ("randomcrops", "grids")
RANDOM_CROP_SCALE = (0.3, 0.7)
RANDOM_CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)


def sample_seed(*parts: object) -> int:
    """A stable 63-bit seed from ``parts`` (same value in every process, unlike ``hash``)."""
    digest = hashlib.blake2b(repr(parts).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the body with torch's CPU generator seeded by ``seed``, restoring its state afterwards.

    torchvision's random transforms draw from that generator; only the CPU generator is touched,
    so a loader running in the training process never disturbs the CUDA generator.
    """
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        yield


def grid_shape(n: int) -> tuple[int, int]:
    """(rows M, columns K) of the ``grids`` layout: M = largest divisor of n with M <= sqrt(n), K = n / M."""
    if n < 1:
        raise ValueError(f"grid needs at least one cell, got n={n}")
    rows = max(d for d in range(1, math.isqrt(n) + 1) if n % d == 0)
    return rows, n // rows


def grid_boxes(width: int, height: int, n: int) -> list[PixelBox]:
    """The n cells of an M x K grid over a ``width`` x ``height`` image, row-major.

    Cell edges are rounded to whole pixels so the cells tile the image exactly.
    """
    rows, cols = grid_shape(n)
    xs = [round(c * width / cols) for c in range(cols + 1)]
    ys = [round(r * height / rows) for r in range(rows + 1)]
    return [(xs[c], ys[r], xs[c + 1], ys[r + 1]) for r in range(rows) for c in range(cols)]


def random_crop_boxes(image: Image.Image, n: int) -> list[PixelBox]:
    """n boxes drawn by ``RandomResizedCrop.get_params(scale=(0.3, 0.7), ratio=(3/4, 4/3))``.

    Draws from torch's global CPU generator: call it under :func:`seeded`.
    """
    boxes = []
    for _ in range(n):
        top, left, h, w = RandomResizedCrop.get_params(image, list(RANDOM_CROP_SCALE), list(RANDOM_CROP_RATIO))
        boxes.append((left, top, left + w, top + h))
    return boxes


def crop_boxes(method: str, image: Image.Image, n: int) -> list[PixelBox]:
    """The n local-view boxes of ``--local-method`` ``method`` (``randomcrops`` or ``grids``)."""
    if method == "randomcrops":
        return random_crop_boxes(image, n)
    if method == "grids":
        return grid_boxes(image.width, image.height, n)
    raise ValueError(f"unknown crop method {method!r}; expected one of {CROP_METHODS}")


def normalise_boxes(boxes: Sequence[PixelBox], width: int, height: int) -> torch.Tensor:
    """Pixel boxes -> float tensor [n, 4] of xyxy in [0, 1] of the original image."""
    scale = torch.tensor([width, height, width, height], dtype=torch.float32)
    return torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4) / scale


@dataclass(frozen=True)
class Region:
    """An annotated object after selection: its pixel box, region text and label (-1: free text)."""

    box: PixelBox
    text: str
    label: int


# Picks up to n regions of a decoded image; runs under the sample's seed (it may shuffle).
RegionPicker = Callable[[int, int], list[Region]]


OBJECT_PIXELS = ("all", "labelled", "none")


def _plain_views(transform: Callable[[Image.Image], torch.Tensor], image: Image.Image):
    """``view(box, build)`` for a plain PIL -> tensor transform (crops with ``image.crop``).

    An unbuilt view is still transformed (and dropped): a plain transform's random draws
    cannot be separated from its pixels.
    """
    def view(box: Optional[PixelBox], build: bool = True) -> Optional[torch.Tensor]:
        out = transform(image if box is None else image.crop(box))
        return out if build else None
    return view


def _fast_views(views, image: Image.Image):
    """``view(box, build)`` for a :class:`~farslip.data.pixels.SquashViews`: one decode-side
    source per sample; an unbuilt view only makes its random draws."""
    source = views.source(image)

    def view(box: Optional[PixelBox], build: bool = True) -> Optional[torch.Tensor]:
        draw = views.draw()
        return views.render(source, box, draw) if build else None
    return view


@dataclass
class ViewMaker:
    """Builds one sample's views from its decoded image: the global view, crops, objects.

    ``transform`` maps a PIL image to the model input (a plain callable, applied to the global
    image and independently to ``image.crop(box)`` of every local view, each call drawing its
    own jitter) or is a :class:`~farslip.data.pixels.SquashViews` (same views as uint8, made
    from one decoded source). ``crop_method`` None means no crop views. Returns a dict with
    ``image`` and ``caption``, plus ``crop`` (list of tensors) and ``crop_box`` [n, 4] when
    crops are on, and ``obj``, ``obj_box``, ``obj_text``, ``obj_label`` when ``regions`` is
    given. Padding is left to the collate (masks only).

    ``object_pixels`` says which object crops to build: ``all``, ``labelled`` (label >= 0:
    what MPCL's region loss reads) or ``none`` (RoI local ITC reads only the boxes). Boxes,
    texts and labels are kept for every object; ``obj_rows`` then lists which objects have
    pixels in ``obj``. A skipped crop still makes its random draws, so every built view has
    the pixels it would have had anyway.
    """

    transform: Callable[[Image.Image], torch.Tensor]
    crop_method: Optional[str] = None
    max_boxes: int = 4
    object_pixels: str = "all"

    def __post_init__(self) -> None:
        if self.object_pixels not in OBJECT_PIXELS:
            raise ValueError(f"object_pixels must be one of {OBJECT_PIXELS}, got {self.object_pixels!r}")

    def __call__(
        self, image: Image.Image, caption: str, seed: int, regions: Optional[RegionPicker] = None
    ) -> dict:
        with seeded(seed):
            fast = callable(getattr(self.transform, "render", None))
            view = _fast_views(self.transform, image) if fast else _plain_views(self.transform, image)
            sample = {"image": view(None), "caption": caption}
            if self.crop_method is not None:
                boxes = crop_boxes(self.crop_method, image, self.max_boxes)
                sample["crop"] = [view(b) for b in boxes]
                sample["crop_box"] = normalise_boxes(boxes, image.width, image.height)
            if regions is not None:
                picked = regions(image.width, image.height)
                wanted = [self.object_pixels == "all" or (self.object_pixels == "labelled" and r.label >= 0)
                          for r in picked]
                built = [view(r.box, w) for r, w in zip(picked, wanted)]
                sample["obj"] = [v for v in built if v is not None]
                if self.object_pixels != "all":
                    sample["obj_rows"] = [i for i, w in enumerate(wanted) if w]
                sample["obj_box"] = normalise_boxes([r.box for r in picked], image.width, image.height)
                sample["obj_text"] = [r.text for r in picked]
                sample["obj_label"] = [r.label for r in picked]
        return sample
