"""Fields and pixel primitives the classic engine paints with: seeded noise, blurs and blends.

Noise fields are float32 HxW arrays. With `tile` the noise and the blurs are periodic (the
picture is a torus), so a picture drawn from them wraps around seamlessly.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

import cv2
import numpy as np


def seeded_rng(seed: int, key: bytes, salt: bytes = b"") -> np.random.Generator:
    """Bit-stable generator for (seed, prompt words, purpose); no salted `hash()` anywhere."""
    seed = int(seed) % (1 << 64)
    digest = hashlib.sha256(key + salt).digest()[:16] if salt else key
    words = [seed & 0xFFFFFFFF, seed >> 32, *np.frombuffer(digest, dtype="<u4").tolist()]
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(words)))


def smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    """0 below `edge0`, 1 above `edge1`, and a smooth (C1) ramp in between."""
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def lerp(image: np.ndarray, colour: np.ndarray | float, alpha: np.ndarray | float) -> np.ndarray:
    """Paint `colour` over `image` with opacity `alpha` (HxW or broadcastable); float32 out."""
    if isinstance(alpha, np.ndarray) and alpha.ndim == 2:
        alpha = alpha[..., None]
    out = np.subtract(colour, image, dtype=np.float32)
    out *= alpha
    out += image
    return out


def luma(image: np.ndarray) -> np.ndarray:
    """Brightness of RGB pixels (Rec. 601 weights)."""
    return image[..., 0] * 0.299 + image[..., 1] * 0.587 + image[..., 2] * 0.114


def wrap_delta(d: np.ndarray, period: float, tile: bool) -> np.ndarray:
    """Coordinate differences; on a tile the shortest way round the torus."""
    return d - period * np.round(d / period) if tile else d


def border_mode(tile: bool) -> int:
    """How OpenCV reads past the edge: round the torus on a tile, mirrored otherwise."""
    return cv2.BORDER_WRAP if tile else cv2.BORDER_REFLECT


def _plain_grid(n: int) -> int:
    """Grid length for non-tiling noise: a third longer than `n`, so the crop's opposite edges are unrelated."""
    return n + n // 3 + 2


def blur(image: np.ndarray, sigma: float, tile: bool) -> np.ndarray:
    """Gaussian blur; with `tile` the image is treated as a torus so blurs do not break the wrap."""
    if sigma <= 0:
        return image
    if not tile:
        return cv2.GaussianBlur(image, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    pad = int(4 * sigma) + 2
    widths = ((pad, pad), (pad, pad)) + ((0, 0),) * (image.ndim - 2)
    blurred = cv2.GaussianBlur(np.pad(image, widths, mode="wrap"), (0, 0), sigma)
    return blurred[pad:-pad, pad:-pad]


def noise(
    rng: np.random.Generator,
    h: int,
    w: int,
    beta: float,
    tile: bool,
    stretch: tuple[float, float] = (1.0, 1.0),
) -> np.ndarray:
    """Zero-mean, unit-variance HxW noise with a 1/f^beta power spectrum (float32).

    Shaped white noise in Fourier space is periodic over its grid: tiles use the grid as is, other
    images crop a larger grid so their opposite edges do not continue each other. `stretch` > 1
    on an axis shortens features along it (stretch x -> horizontal streaks become vertical ones).
    """
    # Smooth fields have next to no energy at fine scales: draw them coarser and interpolate up.
    factor = 4 if beta >= 2.4 else 2 if beta >= 1.8 else 1
    while factor > 1 and min(h, w) // factor < 48:
        factor //= 2
    sh, sw = -(-h // factor), -(-w // factor)
    if tile:
        gh, gw = sh, sw
    else:
        gh, gw = cv2.getOptimalDFTSize(_plain_grid(sh)), cv2.getOptimalDFTSize(_plain_grid(sw))
    amp = _spectrum(gh, gw, beta, stretch[0], stretch[1], max(1, min(sh, sw)))
    spec = rng.standard_normal((*amp.shape, 2), dtype=np.float32).view(np.complex64)[..., 0]
    spec *= amp
    field = np.fft.irfft2(spec, s=(gh, gw)).astype(np.float32, copy=False)
    region = field[:sh, :sw]
    field = (field - region.mean()) / (region.std() + 1e-8)
    if factor == 1:
        return np.ascontiguousarray(field[:h, :w])
    map_x, map_y = _upsample_maps(h, w, sh, sw)
    return cv2.remap(field, map_x, map_y, cv2.INTER_CUBIC, borderMode=border_mode(tile))


@lru_cache(maxsize=16)
def _spectrum(height: int, width: int, beta: float, stretch_x: float, stretch_y: float, ref: int) -> np.ndarray:
    """Amplitudes for a 1/f^beta power spectrum on an rfft2 grid; frequencies in cycles per `ref` px."""
    fy = np.fft.fftfreq(height).astype(np.float32)[:, None] * (ref * stretch_y)
    fx = np.fft.rfftfreq(width).astype(np.float32)[None, :] * (ref * stretch_x)
    f2 = fx * fx + fy * fy
    f2[0, 0] = 1.0
    amp = f2 ** np.float32(-beta / 4.0)
    amp[0, 0] = 0.0
    amp.flags.writeable = False
    return amp


@lru_cache(maxsize=8)
def _upsample_maps(h: int, w: int, sh: int, sw: int) -> tuple[np.ndarray, np.ndarray]:
    """remap() coordinates that stretch an sh x sw grid exactly over h x w (so periods map to periods)."""
    ys = (np.arange(h, dtype=np.float32) + 0.5) * np.float32(sh / h) - 0.5
    xs = (np.arange(w, dtype=np.float32) + 0.5) * np.float32(sw / w) - 0.5
    map_x = np.ascontiguousarray(np.broadcast_to(xs[None, :], (h, w)))
    map_y = np.ascontiguousarray(np.broadcast_to(ys[:, None], (h, w)))
    map_x.flags.writeable = False
    map_y.flags.writeable = False
    return map_x, map_y


def noise1d(rng: np.random.Generator, n: int, beta: float, tile: bool) -> np.ndarray:
    """1-D version of `noise`: fractal profiles for ridges (periodic when tiling)."""
    size = n if tile else _plain_grid(n)
    f = np.fft.rfftfreq(size)[1:] * n
    spec = np.zeros(size // 2 + 1, dtype=np.complex128)
    spec[1:] = (rng.standard_normal(f.size) + 1j * rng.standard_normal(f.size)) * f ** (-beta / 2)
    out = np.fft.irfft(spec, n=size)[:n]
    return ((out - out.mean()) / (out.std() + 1e-12)).astype(np.float32)
