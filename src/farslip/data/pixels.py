"""Training views as uint8 tensors: crop, bicubic squash resize, stage-2 jitter (SPEC section 3).

:class:`SquashViews` is what the training loader renders views with. It produces, per view,
what ``squash_transform`` (PIL resize, jitter, ``ToTensor``, ``Normalize``) produces, but as
uint8 [3, S, S]: the normalisation happens on the device (``normalize_views``, bit-identical
to ``ToTensor`` + ``Normalize``), so workers neither convert to float nor ship 4x the bytes.

``resize`` chooses the resampling kernel (bicubic either way):

* ``"torch"`` (default): torch's uint8 antialiased bicubic (``F.interpolate(..., antialias=
  True)``) on the decoded image, cropping by slicing, about 3x faster per view (``scripts/bench.py
  data kernels``; the image's array is made once per sample). It follows PIL's
  filter but rounds differently: measured on synthetic scenes and JPEGs, 0.3-5 % of the
  values differ from PIL's, by 1 grey level except ~1e-5 of them (up to 7 levels, in the
  overshoot beside sharp edges), with no bias (mean signed difference < 0.001 level).
  ``tests/test_data_pixels.py`` holds looser bounds (max 12, <= 10 % of values, <= 1e-3 by
  more than 1, mean <= 0.1, |bias| <= 0.01). The stage-2 jitter, which quantises through
  8-bit HSV, can carry a 1-level difference a few levels further at rare pixels.
* ``"pil"``: PIL's ``crop`` + ``resize(BICUBIC)``, the reference implementation's pixels
  exactly (slower: about 3x the resize time).

Either way the stage-2 jitter runs on the resized view's uint8 planes
(:func:`~farslip.data.jitter.jitter_planes`: the pixels of torchvision's PIL jitter, without
a PIL image), and a view leaves as a C-contiguous uint8 [3, H, W] tensor.

Randomness: :meth:`SquashViews.draw` makes a view's random draws, :meth:`SquashViews.render`
applies them, so a view that no loss needs can be skipped without moving the random stream
of the views after it (see ``ViewMaker``'s ``object_pixels``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .jitter import JitterDraw, draw_jitter, jitter_planes, planes_match_pil
from ..transforms import Size, _pair

RESIZES = ("torch", "pil")
PixelBox = tuple[int, int, int, int]


@dataclass
class Source:
    """A decoded training image and, made on first use, its pixels as a uint8 HWC tensor."""

    image: Image.Image
    _array: Optional[torch.Tensor] = field(default=None, repr=False)

    @property
    def array(self) -> torch.Tensor:
        if self._array is None:
            self._array = torch.from_numpy(np.array(self.image))  # one copy, writable
        return self._array


class SquashViews:
    """PIL image (+ box) -> uint8 [3, H, W] view; see the module docstring."""

    def __init__(self, image_size: Size, jitter: bool = False, resize: str = "torch"):
        if resize not in RESIZES:
            raise ValueError(f"resize must be one of {RESIZES}, got {resize!r}")
        self.size = _pair(image_size)  # (h, w)
        self.jitter, self.resize = jitter, resize
        if jitter:
            planes_match_pil()  # checked once, before a loader forks its workers

    def source(self, image: Image.Image) -> Source:
        return Source(image.convert("RGB") if image.mode != "RGB" else image)

    def draw(self) -> Optional[JitterDraw]:
        """This view's random draws (None without jitter: a plain resize draws nothing)."""
        return draw_jitter() if self.jitter else None

    def render(self, source: Source, box: Optional[PixelBox], draw: Optional[JitterDraw]) -> torch.Tensor:
        """The view of ``box`` (None: the whole image) with the drawn jitter, uint8 [3, H, W]."""
        h, w = self.size
        if self.resize == "pil":
            region = source.image if box is None else source.image.crop(box)
            planes = np.asarray(region.resize((w, h), Image.BICUBIC)).transpose(2, 0, 1)
            if draw is not None:
                planes = jitter_planes(planes, draw)  # PIL's jitter of these pixels
            return torch.from_numpy(np.ascontiguousarray(planes))
        pixels = source.array
        if box is not None:
            x1, y1, x2, y2 = box
            pixels = pixels[y1:y2, x1:x2]
        resized = F.interpolate(pixels.permute(2, 0, 1)[None], size=(h, w), mode="bicubic",
                                antialias=True, align_corners=False)[0]
        if draw is None:
            return resized
        planes = resized.numpy()
        jittered = jitter_planes(planes, draw)  # PIL's jitter of exactly these pixels, no PIL image
        return resized if jittered is planes else torch.from_numpy(jittered)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """The whole-image view (a plain transform's signature)."""
        return self.render(self.source(image), None, self.draw())
