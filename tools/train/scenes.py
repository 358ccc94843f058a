"""Procedural scenes for the demo model: 64x64 RGB, a plain background and one or two shapes.

The geometry here is the specification; tests/scenes.c draws the same scenes in C (with its own
random numbers) for the zero-shot and closed-loop tests.  Every pixel is the 2x2-supersampled
coverage of the shape, blended over the background:  rgb = bg + (fg - bg) * coverage.
"""
import numpy as np

SIZE = 64
COLOURS = {  # name -> RGB; every drawn colour is jittered by up to +-12 per channel
    "red": (215, 35, 35), "orange": (245, 135, 20), "yellow": (240, 220, 40), "green": (40, 160, 60),
    "blue": (40, 80, 215), "purple": (125, 50, 175), "pink": (245, 140, 195), "white": (245, 245, 245),
    "black": (20, 20, 20), "brown": (125, 75, 35),
}
BACKGROUND_ONLY = {"gray": (128, 128, 128)}
SHAPES = ["circle", "square", "triangle", "star", "ring"]
SIZES = {"small": 8.0, "large": 15.0}  # the shape's radius in pixels
POSITIONS = ["centre", "left", "right", "top", "bottom", "top left", "top right", "bottom left", "bottom right"]
# colour-shape pairs never drawn in training: the generalisation test
HELD_OUT = [("red", "star"), ("blue", "ring"), ("green", "triangle"), ("yellow", "square"), ("purple", "circle")]

SINGLE_TEMPLATES = [
    "a {colour} {shape}",
    "a {size} {colour} {shape}",
    "a {colour} {shape} on a {bg} background",
    "a {size} {colour} {shape} on a {bg} background",
    "a {size} {colour} {shape} {where}",
    "a {colour} {shape} {where} on a {bg} background",
    "a {bg} background with a {size} {colour} {shape} {where}",
    "{size} {colour} {shape} {where}",
]
PAIR_TEMPLATES = [
    "a {c1} {s1} and a {c2} {s2}",
    "a {c1} {s1} and a {c2} {s2} on a {bg} background",
    "a {c1} {s1} {rel} a {c2} {s2}",
]


def where_phrase(pos):
    if pos == "centre":
        return "in the centre"
    if pos in ("left", "right"):
        return "on the " + pos
    if pos in ("top", "bottom"):
        return "at the " + pos
    return "in the " + pos + " corner"


def articles(caption):
    return caption.replace("a orange", "an orange")


def polygon(shape, r):
    """Vertices (x, y) around the origin, y down; None for the round shapes."""
    if shape == "square":
        a = 0.8 * r
        return [(-a, -a), (a, -a), (a, a), (-a, a)]
    if shape == "triangle":
        R = 1.15 * r
        return [(R * np.cos(np.radians(-90 + 120 * k)), R * np.sin(np.radians(-90 + 120 * k)) + 0.2 * r) for k in range(3)]
    if shape == "star":
        pts = []
        for k in range(10):
            R = 1.2 * r if k % 2 == 0 else 0.5 * r
            ang = np.radians(-90 + 36 * k)
            pts.append((R * np.cos(ang), R * np.sin(ang)))
        return pts
    return None


def coverage(shape, cx, cy, r):
    """[64, 64] float coverage of a shape centred at (cx, cy) with radius r (2x2 supersampling)."""
    s = (np.arange(2 * SIZE) + 0.5) / 2.0
    px = s[None, :] - cx
    py = s[:, None] - cy
    if shape in ("circle", "ring"):
        d2 = px * px + py * py
        m = d2 <= r * r
        if shape == "ring":
            m &= d2 >= (0.55 * r) ** 2
    else:  # even-odd crossing test against the polygon's edges
        v = polygon(shape, r)
        m = np.zeros((2 * SIZE, 2 * SIZE), bool)
        PX = np.broadcast_to(px, (2 * SIZE, 2 * SIZE))
        PY = np.broadcast_to(py, (2 * SIZE, 2 * SIZE))
        for i in range(len(v)):
            (x0, y0), (x1, y1) = v[i], v[(i + 1) % len(v)]
            if y0 == y1:
                continue
            cross = ((y0 > PY) != (y1 > PY)) & (PX < x0 + (PY - y0) * (x1 - x0) / (y1 - y0))
            m ^= cross
    return m.reshape(SIZE, 2, SIZE, 2).mean(axis=(1, 3))


def place(rng, pos, r):
    m = 1.2 * r + 2.0
    cx = {"left": m, "right": SIZE - m}.get(pos.split()[-1], SIZE / 2)
    cy = {"top": m, "bottom": SIZE - m}.get(pos.split()[0], SIZE / 2)
    return cx + rng.uniform(-2, 2), cy + rng.uniform(-2, 2)


def jitter(rng, rgb):
    return np.clip(np.array(rgb, float) + rng.integers(-12, 13, 3), 0, 255)


def background(rng, name):
    return np.broadcast_to(jitter(rng, {**COLOURS, **BACKGROUND_ONLY}[name]), (SIZE, SIZE, 3)).copy()


def paint(rng, img, colour, shape, pos, r):
    """img with a shape blended over it: rgb = img + (fg - img) * coverage."""
    cov = coverage(shape, *place(rng, pos, r), r)[..., None]
    return img + (jitter(rng, COLOURS[colour]) - img) * cov


def allowed(colour, shape, train):
    return not (train and (colour, shape) in HELD_OUT)


def draw_scene(rng, train=True, pair_prob=0.25):
    """-> (uint8 image [64, 64, 3], caption, labels dict of the first shape)."""
    names = list(COLOURS)
    if rng.random() < pair_prob:
        while True:
            c1, c2 = rng.choice(names, 2, replace=False)
            s1, s2 = rng.choice(SHAPES), rng.choice(SHAPES)
            if allowed(c1, s1, train) and allowed(c2, s2, train):
                break
        bg = rng.choice([n for n in list(names) + list(BACKGROUND_ONLY) if n not in (c1, c2)])
        horizontal = rng.random() < 0.5
        p1, p2 = ("left", "right") if horizontal else ("top", "bottom")
        img = background(rng, bg)
        r = SIZES["small"] * rng.uniform(0.95, 1.1)
        for c, s, p in ((c1, s1, p1), (c2, s2, p2)):
            img = paint(rng, img, c, s, p, r)
        t = rng.choice(PAIR_TEMPLATES)
        rel = "to the left of" if horizontal else "above"
        if "{rel}" not in t and rng.random() < 0.5:
            c1, s1, c2, s2 = c2, s2, c1, s1
        cap = articles(t.format(c1=c1, s1=s1, c2=c2, s2=s2, bg=bg, rel=rel))
        return img.round().astype(np.uint8), cap, {"colour": c1, "shape": s1}
    while True:
        colour, shape = rng.choice(names), rng.choice(SHAPES)
        if allowed(colour, shape, train):
            break
    bg = rng.choice([n for n in list(names) + list(BACKGROUND_ONLY) if n != colour])
    return draw_single(rng, colour, shape, rng.choice(list(SIZES)), rng.choice(POSITIONS), bg, rng.choice(SINGLE_TEMPLATES))


def draw_single(rng, colour, shape, size, pos, bg, template):
    r = SIZES[size] * rng.uniform(0.95, 1.1)
    img = paint(rng, background(rng, bg), colour, shape, pos, r)
    cap = articles(template.format(colour=colour, shape=shape, size=size, bg=bg, where=where_phrase(pos)))
    return img.round().astype(np.uint8), cap, {"colour": colour, "shape": shape, "size": size, "position": pos, "background": bg}


def all_words():
    words = set()
    for t in SINGLE_TEMPLATES + PAIR_TEMPLATES + ["to the left of above"] + [where_phrase(p) for p in POSITIONS]:
        words.update(w for w in t.replace("{", " {").split() if not w.startswith("{"))
    words.add("an")
    words.update(COLOURS, BACKGROUND_ONLY, SHAPES, SIZES, *(p.split() for p in POSITIONS))
    return sorted(words)
