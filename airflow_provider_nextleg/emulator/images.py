"""Pictures the emulator serves: deterministic, cheap, and telling a person what happened.

A tile's colours and shapes come from a hash of the prompt, the job's seed and the tile's index, so the
same job always draws the same picture and two prompts never look alike. Every picture carries its prompt
and a label (``imagine``, ``V1``, ``U2``, ``Zoom Out 2x``...) so a person looking at a pipeline's output can
see which button produced it. Rendering happens only when an image is downloaded, behind a small LRU cache.
"""

from __future__ import annotations

import hashlib
import io
import textwrap
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Literal

from PIL import Image, ImageDraw, ImageFilter, ImageFont

GRID_SIZE = 512
QUADRANT_SIZE = 512
UPSCALE_SIZE = 1024
PROGRESS_SIZE = 256


#: The side of a Vary (Region) mask as kept: masks arrive at any size and are scaled to the picture's.
MASK_SIZE = 128
#: The largest mask accepted, as decoded bytes and as pixels a side.
MAX_MASK_BYTES = 8 * 1024 * 1024
MAX_MASK_SIDE = 4096
ImageFormat = Literal["PNG", "WEBP"]


@dataclass(frozen=True)
class Inpaint:
    """A picture redrawn in a region (``🖌️ Vary (Region)``): what it was, and where it is redrawn.

    :param base: the upscale the region was drawn on.
    :param mask: the region, :data:`MASK_SIZE` square, 8-bit grey, row by row: above 127 is redrawn.
    """

    base: ImageSpec
    mask: bytes


@dataclass(frozen=True)
class ImageSpec:
    """Everything a picture is drawn from.

    :param kind: ``grid`` (four tiles, numbered 1 to 4 like the bot's grid) or ``tile`` (one image).
    :param prompt: the prompt written on the picture and hashed into its colours.
    :param seed: the job's seed, hashed into the colours too.
    :param label: what produced the picture, drawn large.
    :param size: width and height in pixels.
    :param index: which tile of its grid a ``tile`` is (0 to 3), so an upscale looks like its quadrant.
    :param progress: below 100 the picture is blurred and faded as an unfinished job's preview.
    :param inpaint: for a Vary (Region) job: each tile is the upscale it started from, with the region
        drawn anew from this spec's prompt and seed and outlined, so a person sees what changed.
    """

    kind: Literal["grid", "tile"]
    prompt: str
    seed: str
    label: str
    size: int
    index: int = 0
    progress: int = 100
    inpaint: Inpaint | None = None


@lru_cache(maxsize=64)
def render(spec: ImageSpec, format: ImageFormat = "PNG") -> bytes:
    """The bytes of ``spec`` in ``format``, rendered on first use and then served from the cache."""
    image = _grid(spec) if spec.kind == "grid" else _picture(spec, spec.index, spec.size)
    _caption(image, spec.label, spec.prompt)
    if spec.progress < 100:
        image = image.filter(
            ImageFilter.GaussianBlur(radius=max(1, (100 - spec.progress) * spec.size // 800))
        )
        _caption(image, f"{spec.progress}%", "")
    buffer = io.BytesIO()
    if format == "WEBP":
        image.save(buffer, format="WEBP", quality=60, method=0)
    else:
        image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def render_png(spec: ImageSpec) -> bytes:
    """The PNG bytes of ``spec``."""
    return render(spec, "PNG")


@lru_cache(maxsize=16)
def render_face_swap(source: ImageSpec, target: ImageSpec) -> bytes:
    """``target`` with an oval "face" of ``source`` in its middle, outlined and labelled, as PNG bytes."""
    picture = _decoded(render(replace(target, progress=100)))
    width, height = picture.size
    box = (width * 3 // 10, height // 5, width * 7 // 10, height * 4 // 5)
    face = _decoded(render(replace(source, progress=100))).resize((box[2] - box[0], box[3] - box[1]))
    oval = Image.new("L", face.size, 0)
    ImageDraw.Draw(oval).ellipse((0, 0, face.width - 1, face.height - 1), fill=255)
    picture.paste(face, box[:2], oval)
    ImageDraw.Draw(picture).ellipse(box, outline="white", width=max(2, width // 128))
    _caption(picture, "Face Swap", "")
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _decoded(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")


def read_mask(data: bytes) -> bytes | None:
    """A Vary (Region) mask as :class:`Inpaint` keeps it, or None if Midjourney could not use it.

    The documentation's mask is "a base64 encoded string" of an image drawn with its tool (its example is
    a WebP); the provider sends a PNG. Either is accepted: white (or any pixel above mid-grey) marks the
    region to redraw, black the rest. Refused: bytes that are no PNG or WebP, a picture over
    :data:`MAX_MASK_SIDE` pixels a side (checked from the header, before decoding), and a mask that marks
    nothing.
    """
    if len(data) > MAX_MASK_BYTES:
        return None
    try:
        with Image.open(io.BytesIO(data), formats=("PNG", "WEBP")) as image:
            if max(image.size) > MAX_MASK_SIDE:
                return None
            grey = image.convert("L").resize((MASK_SIZE, MASK_SIZE), Image.Resampling.BILINEAR)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None
    mask = grey.point(lambda value: 255 if value > 127 else 0)
    return mask.tobytes() if mask.getbbox() else None


def _grid(spec: ImageSpec) -> Image.Image:
    half = spec.size // 2
    grid = Image.new("RGB", (spec.size, spec.size))
    draw = ImageDraw.Draw(grid)
    font = ImageFont.load_default(size=max(12, half // 5))
    for index in range(4):
        left, top = (index % 2) * half, (index // 2) * half
        grid.paste(_picture(spec, index, half), (left, top))
        # The bot numbers a grid's images 1 to 4, left to right then top to bottom (U1..U4, V1..V4).
        draw.text(
            (left + half // 2, top + half // 2),
            str(index + 1),
            font=font,
            anchor="mm",
            fill="white",
            stroke_width=2,
            stroke_fill="black",
        )
    return grid


def _picture(spec: ImageSpec, index: int, size: int) -> Image.Image:
    """One tile of ``spec``: drawn from its prompt, or for Vary (Region), its base redrawn in the region."""
    if spec.inpaint is None:
        return _tile(spec.prompt, spec.seed, index, size)
    base = spec.inpaint.base
    picture = _tile(base.prompt, base.seed, base.index, size)
    region = Image.frombytes("L", (MASK_SIZE, MASK_SIZE), spec.inpaint.mask).resize(
        (size, size), Image.Resampling.NEAREST
    )
    picture.paste(_tile(spec.prompt, spec.seed, index, size), (0, 0), region)
    outline = region.filter(ImageFilter.FIND_EDGES).filter(ImageFilter.MaxFilter(3))
    picture.paste((255, 255, 255), (0, 0), outline)
    return picture


def _tile(prompt: str, seed: str, index: int, size: int) -> Image.Image:
    digest = hashlib.sha256(f"{prompt}\0{seed}\0{index}".encode()).digest()
    top = Image.new("RGB", (size, size), _colour(digest, 0))
    bottom = Image.new("RGB", (size, size), _colour(digest, 3))
    gradient = Image.linear_gradient("L").resize((size, size)).rotate(digest[6] % 4 * 90)
    image = Image.composite(top, bottom, gradient)
    draw = ImageDraw.Draw(image)
    for shape in range(6):
        x, y, w, h = (digest[7 + shape * 4 + i] * size // 255 for i in range(4))
        box = (x - w // 2, y - h // 2, x + w // 2, y + h // 2)
        fill = _colour(digest, 8 + shape * 3)
        if shape % 3 == 0:
            draw.ellipse(box, fill=fill)
        elif shape % 3 == 1:
            draw.rectangle(box, fill=fill)
        else:
            draw.polygon([(x, box[1]), (box[2], box[3]), (box[0], box[3])], fill=fill)
    return image


def _colour(digest: bytes, offset: int) -> tuple[int, int, int]:
    return digest[offset % 32], digest[(offset + 1) % 32], digest[(offset + 2) % 32]


#: Words for the emoji of button labels, which the built-in font cannot draw.
_EMOJI_WORDS = {"🔄": "Reroll", "⬅️": "Pan Left", "➡️": "Pan Right", "⬆️": "Pan Up", "⬇️": "Pan Down"}


def _drawable(label: str) -> str:
    for emoji, word in _EMOJI_WORDS.items():
        label = label.replace(emoji, word)
    return label.encode("ascii", "ignore").decode().strip()


def _caption(image: Image.Image, label: str, prompt: str) -> None:
    """Draw ``label`` large in the top-left corner and ``prompt`` in a dark band at the bottom."""
    label = _drawable(label)
    draw = ImageDraw.Draw(image)
    size = image.width
    margin, label_px, prompt_px = size // 40, max(12, size // 10), max(10, size // 32)
    draw.text(
        (margin, margin),
        label,
        font=ImageFont.load_default(size=label_px),
        fill="white",
        stroke_width=max(1, size // 200),
        stroke_fill="black",
    )
    if prompt:
        lines = textwrap.wrap(prompt, width=48)[:3]
        band = (len(lines) + 1) * prompt_px
        draw.rectangle((0, size - band, size, size), fill=(0, 0, 0))
        draw.multiline_text(
            (margin, size - band + prompt_px // 2),
            "\n".join(lines),
            font=ImageFont.load_default(size=prompt_px),
            fill="white",
        )
