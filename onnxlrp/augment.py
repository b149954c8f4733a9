"""Image augmentations for explanations (the seed paper's Figure 7): mirror and hue shift.

Both work on the uint8 image *before* the model's preprocessing: an array [H, W] (grey) or
[H, W, 3] (RGB). They are deterministic: the hue shift is a fixed fraction of the colour
circle (default 0.3), applied in HSV space.
"""

from __future__ import annotations

import numpy as np

AUGMENTATIONS = ("flip", "hue")
DEFAULT_HUE_SHIFT = 0.3


def flip(image: np.ndarray) -> np.ndarray:
    """Horizontal mirror (left <-> right) of an [H, W] or [H, W, C] image."""
    return np.ascontiguousarray(np.asarray(image)[:, ::-1])


def rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
    """float RGB in [0, 1], [..., 3] -> HSV in [0, 1] (h as a fraction of the circle)."""
    rgb = np.asarray(rgb, dtype=np.float64)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    maxc = rgb.max(axis=-1)
    minc = rgb.min(axis=-1)
    v = maxc
    delta = maxc - minc
    s = np.where(maxc > 0, delta / np.where(maxc > 0, maxc, 1.0), 0.0)
    safe = np.where(delta > 0, delta, 1.0)
    rc = (maxc - r) / safe
    gc = (maxc - g) / safe
    bc = (maxc - b) / safe
    h = np.where(r == maxc, bc - gc, np.where(g == maxc, 2.0 + rc - bc, 4.0 + gc - rc))
    h = np.where(delta > 0, (h / 6.0) % 1.0, 0.0)
    return np.stack([h, s, v], axis=-1)


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """HSV in [0, 1], [..., 3] -> float RGB in [0, 1]."""
    hsv = np.asarray(hsv, dtype=np.float64)
    h, s, v = hsv[..., 0] % 1.0, hsv[..., 1], hsv[..., 2]
    i = np.floor(h * 6.0)
    f = h * 6.0 - i
    p = v * (1.0 - s)
    q = v * (1.0 - s * f)
    t = v * (1.0 - s * (1.0 - f))
    i = i.astype(np.int64) % 6
    choices_r = [v, q, p, p, t, v]
    choices_g = [t, v, v, q, p, p]
    choices_b = [p, p, t, v, v, q]
    r = np.choose(i, choices_r)
    g = np.choose(i, choices_g)
    b = np.choose(i, choices_b)
    return np.stack([r, g, b], axis=-1)


def hue_shift(image: np.ndarray, shift: float = DEFAULT_HUE_SHIFT) -> np.ndarray:
    """Rotate the hue of a uint8 RGB image by ``shift`` of the colour circle (grey: unchanged)."""
    image = np.asarray(image)
    if image.ndim == 2 or image.shape[-1] == 1:
        return image.copy()
    rgb = image[..., :3].astype(np.float64) / 255.0
    hsv = rgb_to_hsv(rgb)
    hsv[..., 0] = (hsv[..., 0] + shift) % 1.0
    out = np.round(hsv_to_rgb(hsv) * 255.0).clip(0, 255).astype(np.uint8)
    return out


def parse_augmentations(spec: str | None) -> list[str]:
    """ "flip,hue" -> ["flip", "hue"]; raises ValueError for unknown names."""
    if not spec:
        return []
    names = [part.strip() for part in spec.split(",") if part.strip()]
    for name in names:
        if name not in AUGMENTATIONS:
            raise ValueError(f"unknown augmentation {name!r} (choose from {', '.join(AUGMENTATIONS)})")
    return names


def augment(
    image: np.ndarray, names: list[str], hue: float = DEFAULT_HUE_SHIFT
) -> list[tuple[str, np.ndarray]]:
    """The original and one copy per augmentation: [("orig", img), ("flip", ...), ("hue", ...)]."""
    out = [("orig", np.asarray(image))]
    for name in names:
        out.append((name, flip(image) if name == "flip" else hue_shift(image, hue)))
    return out
