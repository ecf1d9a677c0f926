"""The classic engine: procedural pictures on the CPU, no neural weights.

Every pixel comes from ordinary image processing. A prompt is read against a small lexicon of
colour words, scene words (sunset, ocean, forest, mountains, night, city, snow, fire, desert, ...)
and subject words (cat, fox, person, ...); anything else still gets a colour from a stable hash.
Each image is then painted in layers: a palette-mapped 1/f noise field, a sky, the scene's
structures (ridges, waves, tree lines, skylines, dunes, flames, stars, a central figure), fine
grain, and a stylisation pass in HSV that also pushes `--no` colours out.

Randomness comes from `PCG64` seeded with the seed and a SHA-256 of the prompt's words, so the
same prompt and seed give the same pixels in every process. All noise is built in Fourier space;
with `--tile` every layer is periodic, so the picture wraps around seamlessly.

Modules, from the bottom up: `lexicon` (the words it knows), `recipe` (reading a prompt),
`fields` (noise, blurs, blends), `scene` (the layers), `render` (one picture), `region` (Vary
(Region): heal, then paint a motif), `engine` (the Engine actions).
"""

from journeyd.engines.classic.engine import ClassicEngine

__all__ = ["ClassicEngine"]
