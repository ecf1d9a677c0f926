"""The words the classic engine knows: colours, scenes, subjects and palette modifiers.

Everything here is data. `recipe` reads a prompt against these tables; `scene` draws the themes
and subjects they name. A word missing from every table still gets a colour (from its hash).
"""

from __future__ import annotations

RGB = tuple[float, float, float]  # 0..1


def _wordset(text: str) -> frozenset[str]:
    return frozenset(text.split())


COLOURS: dict[str, RGB] = {
    "red": (0.80, 0.10, 0.12),
    "crimson": (0.62, 0.05, 0.15),
    "scarlet": (0.85, 0.14, 0.08),
    "ruby": (0.70, 0.05, 0.20),
    "maroon": (0.45, 0.05, 0.08),
    "orange": (0.95, 0.50, 0.10),
    "amber": (1.00, 0.68, 0.10),
    "yellow": (0.97, 0.86, 0.15),
    "gold": (0.85, 0.66, 0.20),
    "golden": (0.88, 0.68, 0.22),
    "green": (0.15, 0.62, 0.20),
    "emerald": (0.05, 0.55, 0.35),
    "lime": (0.60, 0.85, 0.15),
    "olive": (0.45, 0.48, 0.15),
    "mint": (0.60, 0.90, 0.75),
    "teal": (0.00, 0.50, 0.50),
    "cyan": (0.10, 0.80, 0.90),
    "turquoise": (0.20, 0.82, 0.78),
    "aqua": (0.30, 0.85, 0.85),
    "blue": (0.12, 0.30, 0.85),
    "azure": (0.20, 0.55, 0.95),
    "navy": (0.05, 0.10, 0.35),
    "cobalt": (0.00, 0.28, 0.67),
    "sapphire": (0.06, 0.20, 0.60),
    "indigo": (0.30, 0.10, 0.60),
    "purple": (0.50, 0.15, 0.65),
    "violet": (0.55, 0.30, 0.85),
    "lavender": (0.72, 0.62, 0.90),
    "magenta": (0.85, 0.10, 0.65),
    "fuchsia": (0.90, 0.20, 0.70),
    "pink": (0.96, 0.50, 0.70),
    "coral": (1.00, 0.50, 0.40),
    "peach": (1.00, 0.75, 0.60),
    "white": (0.96, 0.96, 0.96),
    "black": (0.04, 0.04, 0.05),
    "grey": (0.50, 0.50, 0.52),
    "gray": (0.50, 0.50, 0.52),
    "silver": (0.75, 0.77, 0.80),
    "brown": (0.45, 0.28, 0.14),
    "chocolate": (0.35, 0.20, 0.10),
    "beige": (0.87, 0.80, 0.66),
    "tan": (0.82, 0.70, 0.50),
    "cream": (0.98, 0.94, 0.80),
    "ivory": (0.98, 0.96, 0.88),
    "bronze": (0.70, 0.45, 0.20),
    "copper": (0.72, 0.40, 0.20),
}

# Scene words: word -> theme. Each theme brings its own colours into the palette and a structure layer.
_THEME_WORDS: dict[str, tuple[str, ...]] = {
    "sunset": ("sunset", "sunrise", "dusk", "dawn", "twilight"),
    "sun": ("sun", "sunny", "sunlight", "sunshine", "daylight", "summer"),
    "sky": ("sky", "skies", "cloud", "clouds", "cloudy", "heaven", "storm"),
    "water": (
        "ocean", "sea", "lake", "water", "river", "wave", "waves", "beach", "coast", "shore",
        "underwater", "pond", "bay", "harbor", "harbour", "tide", "reflection",
    ),
    "forest": (
        "forest", "jungle", "tree", "trees", "wood", "woods", "woodland", "leaf", "leaves", "foliage",
        "rainforest", "pine", "pines", "oak",
    ),
    "grass": (
        "grass", "grassy", "meadow", "field", "fields", "lawn", "prairie", "garden", "plant", "plants",
        "moss", "park", "wheat", "farm", "countryside",
    ),
    "mountains": (
        "mountain", "mountains", "hill", "hills", "peak", "peaks", "valley", "cliff", "cliffs", "alps",
    ),
    "night": ("night", "midnight", "evening", "nocturnal", "star", "stars", "starry"),
    "space": ("space", "galaxy", "cosmos", "cosmic", "nebula", "universe", "planet", "astronaut"),
    "moon": ("moon", "moonlight", "moonlit", "lunar"),
    "city": (
        "city", "cities", "building", "buildings", "skyline", "street", "streets", "town", "skyscraper",
        "skyscrapers", "urban", "downtown", "metropolis", "architecture", "cyberpunk",
    ),
    "snow": (
        "snow", "snowy", "winter", "ice", "icy", "frozen", "frost", "frosty", "glacier", "arctic", "blizzard",
    ),
    "fire": ("fire", "lava", "flame", "flames", "volcano", "inferno", "burning", "embers", "blaze", "magma"),
    "desert": ("desert", "sand", "sandy", "dune", "dunes", "sahara", "canyon", "arid"),
}  # fmt: skip
THEME_OF: dict[str, str] = {word: theme for theme, words in _THEME_WORDS.items() for word in words}

THEME_COLOURS: dict[str, tuple[RGB, ...]] = {
    "sunset": ((1.00, 0.55, 0.20), (0.95, 0.45, 0.55), (0.45, 0.20, 0.50), (1.00, 0.80, 0.35)),
    "sun": ((1.00, 0.90, 0.50), (0.45, 0.70, 0.95)),
    "sky": ((0.55, 0.75, 0.95), (0.95, 0.96, 1.00)),
    "water": ((0.05, 0.30, 0.60), (0.10, 0.50, 0.70), (0.20, 0.60, 0.80)),
    "forest": ((0.10, 0.40, 0.15), (0.25, 0.55, 0.20), (0.06, 0.25, 0.10), (0.35, 0.28, 0.15)),
    "grass": ((0.30, 0.60, 0.18), (0.45, 0.68, 0.22), (0.18, 0.42, 0.12)),
    "mountains": ((0.35, 0.38, 0.48), (0.50, 0.50, 0.60), (0.25, 0.25, 0.32)),
    "night": ((0.03, 0.04, 0.12), (0.10, 0.10, 0.30), (0.25, 0.20, 0.45)),
    "space": ((0.02, 0.02, 0.06), (0.35, 0.10, 0.50), (0.10, 0.20, 0.55), (0.80, 0.30, 0.70)),
    "moon": ((0.85, 0.88, 0.95), (0.10, 0.12, 0.30)),
    "city": ((0.30, 0.32, 0.38), (0.50, 0.52, 0.58), (0.15, 0.16, 0.20)),
    "snow": ((0.95, 0.97, 1.00), (0.75, 0.85, 0.95), (0.60, 0.72, 0.88)),
    "fire": ((0.90, 0.20, 0.05), (1.00, 0.55, 0.10), (0.30, 0.05, 0.02), (1.00, 0.85, 0.30)),
    "desert": ((0.87, 0.72, 0.48), (0.80, 0.55, 0.30), (0.95, 0.85, 0.65)),
}
# Themes that put a horizon in the picture (sky above, ground below).
SCENIC = ("sunset", "sun", "sky", "water", "forest", "grass", "mountains", "night", "moon", "city", "desert")

# Subjects are drawn as one central figure; the value is the subject's own colour, if it has one.
SUBJECTS: dict[str, RGB | None] = {
    "cat": None, "kitten": None, "dog": None, "puppy": None, "fox": (0.85, 0.42, 0.12),
    "wolf": (0.50, 0.50, 0.55), "lion": (0.80, 0.60, 0.30), "tiger": (0.90, 0.50, 0.10),
    "bear": (0.40, 0.25, 0.12), "rabbit": None, "deer": (0.60, 0.40, 0.22), "horse": (0.45, 0.30, 0.18),
    "elephant": (0.55, 0.55, 0.58), "frog": (0.30, 0.65, 0.20), "bird": None, "owl": (0.55, 0.42, 0.28),
    "fish": None, "whale": (0.25, 0.35, 0.50), "butterfly": None, "dragon": None,
    "unicorn": (0.95, 0.92, 0.96),
    "monster": None, "creature": None, "animal": None, "person": None, "man": None, "woman": None,
    "girl": None, "boy": None, "child": None, "portrait": None, "face": None, "knight": (0.65, 0.67, 0.70),
    "warrior": None, "wizard": None, "witch": None, "king": None, "queen": None, "princess": None,
    "angel": (0.96, 0.94, 0.88), "robot": (0.70, 0.72, 0.76), "skull": (0.90, 0.88, 0.80),
    "statue": (0.80, 0.78, 0.74), "castle": (0.60, 0.58, 0.55), "house": None, "car": None, "ship": None,
    "boat": None, "tower": None, "flower": None, "rose": (0.80, 0.08, 0.18), "tulip": (0.90, 0.25, 0.35),
    "sunflower": (0.98, 0.80, 0.10), "apple": (0.80, 0.10, 0.10), "lemon": (0.98, 0.90, 0.25),
}  # fmt: skip
PEOPLE = _wordset(
    "person man woman girl boy child portrait face knight warrior wizard witch king queen princess angel "
    "robot statue astronaut"
)
ANIMALS = _wordset(
    "cat kitten dog puppy fox wolf lion tiger bear rabbit deer horse elephant frog bird owl dragon unicorn "
    "monster creature animal"
)

# What Vary (Region) can paint into a region: word -> motif (see `region`). Anything else is healed.
_MOTIF_WORDS: dict[str, tuple[str, ...]] = {
    "sun": ("sun",),
    "moon": ("moon",),
    "boat": ("boat", "sailboat", "ship", "yacht", "sail"),
    "lighthouse": ("lighthouse",),
    "tree": ("tree", "pine", "oak"),
    "house": ("house", "cottage", "cabin", "hut", "barn"),
    "bird": ("bird", "seagull", "gull", "crow", "eagle"),
}  # fmt: skip
MOTIF_OF: dict[str, str] = {word: motif for motif, words in _MOTIF_WORDS.items() for word in words}

# Words that change the whole palette rather than add a colour: (saturation, brightness) factors.
MODIFIERS: dict[str, tuple[float, float]] = {
    "dark": (1.0, 0.7), "dim": (0.9, 0.75), "gloomy": (0.75, 0.75), "moody": (0.85, 0.8),
    "light": (0.85, 1.12), "bright": (1.1, 1.15), "pale": (0.55, 1.1), "pastel": (0.55, 1.12),
    "vivid": (1.35, 1.0), "vibrant": (1.35, 1.0), "neon": (1.45, 1.05), "saturated": (1.4, 1.0),
    "colorful": (1.3, 1.0), "colourful": (1.3, 1.0), "muted": (0.6, 0.95), "faded": (0.6, 1.05),
    "desaturated": (0.4, 1.0), "monochrome": (0.08, 1.0), "grayscale": (0.0, 1.0), "greyscale": (0.0, 1.0),
}  # fmt: skip

STOPWORDS = _wordset(
    "a an the of and or in on at with by for to from into onto over under above below near is are be very "
    "highly ultra hyper super extremely detailed detail details hd uhd 4k 8k 16k photo photograph "
    "photography photorealistic realistic render rendering style image picture art artwork painting "
    "illustration digital concept beautiful stunning epic cinematic masterpiece best quality high resolution "
    "trending artstation octane unreal engine its it this that some"
)
