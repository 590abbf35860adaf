"""The structural causal model behind the embedded datasets.

An image is ``x = f(y, n, u)``: ``y`` is the class (a shape or a digit glyph), ``n`` the
non-causal factors (background colour, object colour, position, scale, texture) and ``u``
exogenous noise (a pixel-noise seed and, for digits, which handwriting sample).  Because we
render every image ourselves, the *true* counterfactual of any image for any other class is
``f(y_cf, n, u)``: the same call with one argument changed.  That is what lets the pipeline
measure how good a generated counterfactual is.

Rendering is pure numpy and deterministic, so it can run in light jobs without torch.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

import numpy as np

# Dark backgrounds and bright objects, so that any pair keeps its contrast and the object
# colour can be sampled independently of the background colour (no rejection coupling).
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "navy": (20, 30, 90),
    "maroon": (100, 20, 30),
    "forest": (20, 80, 35),
    "plum": (80, 25, 90),
    "teal": (10, 85, 90),
    "brown": (95, 60, 20),
    "slate": (55, 60, 70),
    "black": (10, 10, 10),
}
OBJECTS: dict[str, tuple[int, int, int]] = {
    "red": (250, 70, 60),
    "yellow": (245, 225, 60),
    "cyan": (80, 230, 245),
    "white": (245, 245, 245),
    "orange": (250, 150, 40),
    "pink": (250, 140, 210),
    "lime": (160, 250, 90),
    "violet": (180, 140, 255),
}
BACKGROUND_NAMES = list(BACKGROUNDS)
OBJECT_NAMES = list(OBJECTS)
# Colours no split of the main store shows (the domain-generalization store, data/shifts.py):
# the same rule, dark backgrounds no brighter than the brightest seen one and bright objects no
# darker than the darkest seen one, and each at least UNSEEN_MIN_DISTANCE (RGB) from every seen
# colour.  Factors reach them with an index past the seen palette (``bg = LEVELS + i``), so every
# existing factor setting renders exactly as before.
UNSEEN_BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "indigo": (40, 0, 130),
    "olive": (55, 80, 0),
    "crimson": (150, 0, 60),
    "rust": (130, 35, 0),
    "cobalt": (0, 50, 150),
    "midnight": (0, 0, 60),
    "wine": (120, 0, 110),
    "purple": (110, 0, 170),
}
UNSEEN_OBJECTS: dict[str, tuple[int, int, int]] = {
    "sky": (120, 180, 255),
    "mint": (150, 255, 200),
    "gold": (255, 190, 0),
    "salmon": (255, 160, 130),
    "magenta": (255, 60, 255),
    "chartreuse": (210, 255, 0),
    "lavender": (200, 200, 255),
    "rose": (255, 90, 140),
}
UNSEEN_MIN_DISTANCE = 45.0
# Index -> colour and name over both palettes: the seen levels first, so index < LEVELS is unchanged.
_BACKGROUND_PALETTE = [*BACKGROUNDS.values(), *UNSEEN_BACKGROUNDS.values()]
_OBJECT_PALETTE = [*OBJECTS.values(), *UNSEEN_OBJECTS.values()]
ALL_BACKGROUND_NAMES = [*BACKGROUNDS, *UNSEEN_BACKGROUNDS]
ALL_OBJECT_NAMES = [*OBJECTS, *UNSEEN_OBJECTS]

SHAPE_CLASSES = [
    "circle", "square", "triangle", "plus", "cross",
    "ring", "diamond", "bar", "tee", "semicircle",
]
DIGIT_CLASSES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]

# Ranges of the continuous non-causal factors (fractions of the canvas).
POSITION_RANGE = 0.12
SCALE_RANGE = (0.55, 0.85)
TEXTURE_RANGE = (0.0, 0.25)
PIXEL_NOISE_STD = 4.0  # in 0..255 units; exogenous, fixed by the noise seed
UNSEEN_NOISE_STD = 24.0  # the domain-generalization store's noise shift: six times what any split shows
SUPERSAMPLE = 4
# A glyph is coded as a quantile of its class's pool, so the same code picks the
# corresponding sample of any other class (the digits' share of u).
GLYPH_CODES = 10_000

FACTOR_COLUMNS = ["bg", "fg", "cx", "cy", "scale", "texture", "noise_seed", "glyph", "style"]

# Render styles: ``photo`` is what pretraining mostly shows; the downstream datasets are rendered
# in one of the others (data.downstream_style), which pretraining shows rarely
# (data.pretrain_style_share), always captioned with its own words.  That is the gap between
# web pretraining and a downstream dataset (satellite images, sketches, textures) that a
# learned context closes and a hand-written "a photo of a" does not.
STYLES = ("photo", "negative", "outline", "faded")
STYLE_PHRASES = {"negative": "a negative photo of a", "outline": "an outline drawing of a", "faded": "a faded print of a"}


@dataclass(frozen=True)
class Factors:
    """Non-causal factors ``n`` and exogenous noise ``u`` of one image."""

    bg: int  # index into BACKGROUNDS, or LEVELS + index into UNSEEN_BACKGROUNDS
    fg: int  # index into OBJECTS, or LEVELS + index into UNSEEN_OBJECTS
    cx: float
    cy: float
    scale: float
    texture: float
    noise_seed: int
    glyph: int = 0  # which handwriting sample, as a quantile code in [0, GLYPH_CODES): part of u
    style: int = 0  # index into STYLES: how the scene is drawn (a dataset-level, non-causal factor)


# The factors a shortcut can ride on (data.spurious_factor), named as the audit names them
# (audit/scoring.py): a class's paired level biases its few-shot draw (data/splits.py), and the
# paired test split renders every test object at every level (data/embedded.py), so aligned and
# conflict accuracy score the very same objects.  Each factor has LEVELS levels: the colours
# themselves, or equal bins of a continuous factor's range (position: the horizontal place, cx).
SPURIOUS_FACTORS = ("background", "object_colour", "scale", "position")
DEFAULT_SPURIOUS_FACTOR = "background"
LEVELS = 8
_BINNED = {"scale": ("scale", *SCALE_RANGE), "position": ("cx", -POSITION_RANGE, POSITION_RANGE)}  # factor -> (field, low, high)
_COLOURS = {"background": "bg", "object_colour": "fg"}  # factor -> Factors field holding the level itself
assert len(BACKGROUNDS) == len(OBJECTS) == LEVELS


def check_factor(factor: str) -> str:
    """``factor``, refused unless it is one of :data:`SPURIOUS_FACTORS`."""
    if factor not in SPURIOUS_FACTORS:
        raise ValueError(f"unknown data.spurious_factor {factor!r}; known: {', '.join(SPURIOUS_FACTORS)}")
    return factor


def factor_levels(factor: str, table: Any) -> np.ndarray:
    """The level of ``factor`` of every row of a factor table (its ``bg``, ``fg``, ``scale``,
    ``cx`` columns): what the spurious draw pairs with a class and the paired splits vary."""
    check_factor(factor)
    if factor in _COLOURS:
        return np.asarray(table[_COLOURS[factor]])
    field, low, high = _BINNED[factor]
    bins = np.floor((np.asarray(table[field], np.float64) - low) / (high - low) * LEVELS)
    return np.clip(bins, 0, LEVELS - 1).astype(np.int64)


def at_level(factor: str, f: Factors, level: int) -> Factors:
    """``f`` with ``factor`` set to ``level`` (a continuous factor to its bin's centre), nothing else changed."""
    check_factor(factor)
    if factor in _COLOURS:
        return replace(f, **{_COLOURS[factor]: level})
    field, low, high = _BINNED[factor]
    return replace(f, **{field: low + (level + 0.5) * (high - low) / LEVELS})


def _shape_mask(name: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Coverage of a shape on object-frame coordinates in [-1, 1] (v points down)."""
    r = np.hypot(u, v)
    au, av = np.abs(u), np.abs(v)
    if name == "circle":
        return r < 0.85
    if name == "square":
        return np.maximum(au, av) < 0.72
    if name == "triangle":
        return (v < 0.75) & (v > -0.85) & (au < (v + 0.85) * 0.6)
    if name == "plus":
        return ((au < 0.28) & (av < 0.9)) | ((av < 0.28) & (au < 0.9))
    if name == "cross":
        d1, d2 = np.abs(u - v) / np.sqrt(2), np.abs(u + v) / np.sqrt(2)
        return ((d1 < 0.22) | (d2 < 0.22)) & (r < 1.0)
    if name == "ring":
        return (r < 0.9) & (r > 0.5)
    if name == "diamond":
        return au + av < 0.95
    if name == "bar":
        return (av < 0.3) & (au < 0.95)
    if name == "tee":
        return ((v < -0.45) & (v > -0.95) & (au < 0.9)) | ((au < 0.25) & (v > -0.95) & (v < 0.9))
    if name == "semicircle":
        return (r < 0.95) & (v < 0.15)
    raise KeyError(f"unknown shape class {name!r}; known: {SHAPE_CLASSES}")


@lru_cache(maxsize=1)
def digit_glyphs() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 handwritten digits as (glyphs in [0, 1], labels)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return (bunch.images / 16.0).astype(np.float32), bunch.target.astype(np.int64)


def glyphs_of_class(label: int) -> np.ndarray:
    glyphs, labels = digit_glyphs()
    return glyphs[labels == label]


def _bilinear(glyph: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Sample an 8x8 glyph (covering [-1, 1]^2) at object-frame coordinates, zero outside."""
    size = glyph.shape[0]
    gx = (u + 1) / 2 * size - 0.5
    gy = (v + 1) / 2 * size - 0.5
    x0, y0 = np.floor(gx).astype(int), np.floor(gy).astype(int)
    fx, fy = gx - x0, gy - y0
    padded = np.pad(glyph, 1)

    def at(yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
        return padded[np.clip(yy + 1, 0, size + 1), np.clip(xx + 1, 0, size + 1)]

    top = at(y0, x0) * (1 - fx) + at(y0, x0 + 1) * fx
    bottom = at(y0 + 1, x0) * (1 - fx) + at(y0 + 1, x0 + 1) * fx
    return top * (1 - fy) + bottom * fy


def _coverage(dataset: str, label: int, f: Factors, size: int) -> np.ndarray:
    """Anti-aliased object coverage in [0, 1], shape (size, size)."""
    n = size * SUPERSAMPLE
    grid = (np.arange(n) + 0.5) / n * 2 - 1  # canvas coordinates in [-1, 1]
    yy, xx = np.meshgrid(grid, grid, indexing="ij")
    u = (xx - 2 * f.cx) / f.scale
    v = (yy - 2 * f.cy) / f.scale
    if dataset == "shapes":
        fine = _shape_mask(SHAPE_CLASSES[label], u, v).astype(np.float32)
    elif dataset == "digits":
        pool = glyphs_of_class(label)
        fine = np.clip(_bilinear(pool[f.glyph * len(pool) // GLYPH_CODES], u, v) * 1.6, 0, 1)
    else:
        raise KeyError(f"unknown embedded dataset {dataset!r}; known: shapes, digits")
    return fine.reshape(size, SUPERSAMPLE, size, SUPERSAMPLE).mean(axis=(1, 3))


def render(dataset: str, label: int, f: Factors, size: int, noise_std: float = PIXEL_NOISE_STD) -> np.ndarray:
    """``x = f(y, n, u)``: one uint8 image of shape (size, size, 3).

    ``noise_std`` is the pixel noise's scale, a render argument rather than a factor so that
    every stored factor table keeps its columns; only the noise shift (data/shifts.py) raises it.
    """
    cover = _coverage(dataset, label, f, size)[..., None]
    rng = np.random.default_rng(f.noise_seed)
    stripes = np.sin(np.arange(size) * 2.1 + rng.uniform(0, 2 * np.pi))[None, :, None]
    obj = np.asarray(_OBJECT_PALETTE[f.fg], np.float32) * (1 - f.texture * (0.5 + 0.5 * stripes))
    bg = np.asarray(_BACKGROUND_PALETTE[f.bg], np.float32)
    style = STYLES[f.style]
    if style == "outline":  # the object's rim only: coverage minus its 4-neighbour erosion
        padded = np.pad(cover[..., 0], 1, mode="edge")
        inner = np.minimum.reduce([padded[:-2, 1:-1], padded[2:, 1:-1], padded[1:-1, :-2], padded[1:-1, 2:], cover[..., 0]])
        cover = np.clip(cover - inner[..., None] * 0.85, 0, 1)
    img = bg * (1 - cover) + obj * cover
    if style == "faded":  # low contrast, washed towards grey
        img = 0.45 * img + 0.55 * 150.0
    img = img + rng.normal(0, noise_std, size=img.shape)
    if style == "negative":
        img = 255.0 - img
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def render_counterfactual(dataset: str, y_cf: int, f: Factors, size: int) -> np.ndarray:
    """The true counterfactual: the same factors and noise, another class."""
    return render(dataset, y_cf, f, size)


def sample_factors(
    rng: np.random.Generator,
    n: int,
    glyph_range: tuple[float, float] = (0.0, 1.0),
) -> list[Factors]:
    """Draw ``n`` independent factor settings.

    ``glyph_range`` is the quantile range of handwriting samples to draw from, so test
    splits can use glyphs that pretraining never saw.
    """
    out = []
    for _ in range(n):
        out.append(
            Factors(
                bg=int(rng.integers(len(BACKGROUNDS))),
                fg=int(rng.integers(len(OBJECTS))),
                cx=float(rng.uniform(-POSITION_RANGE, POSITION_RANGE)),
                cy=float(rng.uniform(-POSITION_RANGE, POSITION_RANGE)),
                scale=float(rng.uniform(*SCALE_RANGE)),
                texture=float(rng.uniform(*TEXTURE_RANGE)),
                noise_seed=int(rng.integers(2**31 - 1)),
                glyph=int(rng.integers(int(glyph_range[0] * GLYPH_CODES), int(glyph_range[1] * GLYPH_CODES))),
            )
        )
    return out


# Words the web uses for each class besides the name the dataset's prompts use.
SYNONYMS: dict[str, tuple[str, ...]] = {
    "circle": ("disc", "round shape"), "square": ("box", "block"), "triangle": ("wedge", "three-sided shape"),
    "plus": ("plus sign", "upright cross"), "cross": ("x", "saltire"), "ring": ("hoop", "donut"),
    "diamond": ("rhombus", "lozenge"), "bar": ("stripe", "strip"), "tee": ("t shape", "letter t"),
    "semicircle": ("half circle", "dome"),
    **{name: (str(i), f"number {i}") for i, name in enumerate(DIGIT_CLASSES)},
}
# Web alt-text wordings around the class; the zero-shot template's own is one of them.
WEB_TEMPLATES = (
    "a photo of a {}.", "a picture of a {}.", "an image of the {}.", "{}.", "a {} on a plain background.",
    "there is a {} here.", "a drawing of a {}.", "the {} seen up close.", "my {}.", "a rendering of a {}.",
)


def web_caption(dataset: str, label: int, f: Factors, noise: dict[str, float]) -> str:
    """A pretraining caption as the web writes them, not as the downstream prompt does.

    Varied wordings (:data:`WEB_TEMPLATES`), the class named by a synonym
    (``synonym_share``), not at all (``unnamed_share``: "a red object on navy.") or wrongly
    (``label_noise``: another class of the dataset), plus a random subset of the factors; a
    styled image names its style.  Every choice comes from the image's own noise seed, so the
    captions are reproducible.  With every share 0 it is :func:`caption`.
    """
    rng = np.random.default_rng([f.noise_seed, 0xCA9])
    names = class_names(dataset)
    if rng.random() < noise.get("label_noise", 0.0):
        label = int(rng.choice([k for k in range(len(names)) if k != label]))
    name = names[label]
    if rng.random() < noise.get("synonym_share", 0.0):
        name = str(rng.choice(SYNONYMS[name]))
    if rng.random() < noise.get("unnamed_share", 0.0):
        name = "object"
    if not any(noise.get(k, 0.0) for k in ("label_noise", "synonym_share", "unnamed_share", "template_variety")) and not f.style:
        return caption(dataset, label, f)
    template = WEB_TEMPLATES[0]
    if rng.random() < noise.get("template_variety", 0.0):
        template = str(rng.choice(WEB_TEMPLATES))
    if f.style:
        template = STYLE_PHRASES[STYLES[f.style]] + " {}."
    keep = rng.random(4) < 0.5
    words = [size_word(f) if keep[0] else "", ALL_OBJECT_NAMES[f.fg] if keep[1] else "", name]
    text = template.format(" ".join(w for w in words if w)).rstrip(".")
    if keep[2]:
        text += f" on {ALL_BACKGROUND_NAMES[f.bg]}"
    if keep[3]:
        text += f", {horizontal_word(f)}"
    return text + "."


def class_names(dataset: str) -> list[str]:
    if dataset == "shapes":
        return list(SHAPE_CLASSES)
    if dataset == "digits":
        return list(DIGIT_CLASSES)
    raise KeyError(f"unknown embedded dataset {dataset!r}; known: shapes, digits")


def draw_pairing(seed: int | list[int], groups: list[list[int]]) -> list[int]:
    """Each class's paired background (its level of the spurious factor), drawn from ``seed``: ``pairing[label]``.

    Every group (the base classes, the novel classes) gets distinct levels, so each of
    its classes has an aligned rendering (its own colour) and conflict renderings (another
    class's colour from the same group).  The pipeline draws one pairing per training seed
    (:meth:`~dicap.data.store.DatasetStore.pairing`), so the chance affinity of one class
    for one colour, which a single fixed pairing (``label % 8`` before) built into every
    run, averages out over seeds; zero-shot CLIP's own aligned-conflict gap measures it.
    """
    rng = np.random.default_rng([*np.atleast_1d(seed).tolist(), 0x9A1D])
    pairing = [0] * sum(len(g) for g in groups)
    for group in groups:
        if len(group) > LEVELS:
            raise ValueError(f"{len(group)} classes in one group but only {LEVELS} levels of the spurious factor to pair them with")
        for label, level in zip(group, rng.permutation(LEVELS)):
            pairing[label] = int(level)
    return pairing


def paired_masks(labels: np.ndarray, backgrounds: np.ndarray, pairing: list[int],
                 groups: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """(aligned, conflict) row masks of a split rendered on every background (every level of
    the spurious factor: ``backgrounds`` are the rows' levels, :func:`factor_levels`).

    Aligned: the class's own paired colour.  Conflict: the paired colour of another class of
    its group, so every conflict colour is one some class's shots were biased towards.
    """
    labels, backgrounds = np.asarray(labels), np.asarray(backgrounds)
    own = np.asarray(pairing)[labels]
    group_colours = {c: {pairing[o] for o in g} for g in groups for c in g}
    in_group = np.array([bg in group_colours[int(c)] for c, bg in zip(labels, backgrounds)], dtype=bool)
    return backgrounds == own, in_group & (backgrounds != own)


SIZE_WORDS = ("small", "medium", "large")
HORIZONTAL_WORDS = ("left", "middle", "right")


def size_word(f: Factors) -> str:
    """The object's scale as the captions say it: a word a text can carry."""
    return "small" if f.scale < 0.65 else "large" if f.scale > 0.75 else "medium"


def horizontal_word(f: Factors) -> str:
    """The object's horizontal place as the captions say it."""
    return "left" if f.cx < -0.04 else "right" if f.cx > 0.04 else "middle"


def caption(dataset: str, label: int, f: Factors) -> str:
    """A pretraining caption naming the class and a random subset of the factors.

    Like web alt-text, captions vary: each attribute appears with probability 1/2 (decided
    by the image's own noise seed, so captions are reproducible), which teaches CLIP that
    the class word alone also describes the image, as a zero-shot template needs.
    """
    keep = np.random.default_rng(f.noise_seed + 1).random(4) < 0.5
    size, horiz = size_word(f), horizontal_word(f)
    words = [size if keep[0] else "", ALL_OBJECT_NAMES[f.fg] if keep[1] else "", class_names(dataset)[label]]
    text = "a photo of a " + " ".join(w for w in words if w)
    if keep[2]:
        text += f" on {ALL_BACKGROUND_NAMES[f.bg]}"
    if keep[3]:
        text += f", {horiz}"
    return text + "."
