"""PNG output without an imaging or plotting library (numpy + zlib): png_bytes, and plot, the
training report's loss curves with titles, axis labels and phase marks in a 5x7 bitmap font."""
import math
import struct
import zlib

import numpy as np

# 5x7 glyphs: a row a number, bit 4 the leftmost pixel; text is drawn upper-cased
FONT = {
    " ": (0, 0, 0, 0, 0, 0, 0),
    "0": (14, 17, 19, 21, 25, 17, 14), "1": (4, 12, 4, 4, 4, 4, 14), "2": (14, 17, 1, 2, 4, 8, 31),
    "3": (31, 2, 4, 2, 1, 17, 14), "4": (2, 6, 10, 18, 31, 2, 2), "5": (31, 16, 30, 1, 1, 17, 14),
    "6": (6, 8, 16, 30, 17, 17, 14), "7": (31, 1, 2, 4, 8, 8, 8), "8": (14, 17, 17, 14, 17, 17, 14),
    "9": (14, 17, 17, 15, 1, 2, 12),
    "A": (14, 17, 17, 31, 17, 17, 17), "B": (30, 17, 17, 30, 17, 17, 30), "C": (14, 17, 16, 16, 16, 17, 14),
    "D": (28, 18, 17, 17, 17, 18, 28), "E": (31, 16, 16, 30, 16, 16, 31), "F": (31, 16, 16, 30, 16, 16, 16),
    "G": (14, 17, 16, 23, 17, 17, 15), "H": (17, 17, 17, 31, 17, 17, 17), "I": (14, 4, 4, 4, 4, 4, 14),
    "J": (7, 2, 2, 2, 2, 18, 12), "K": (17, 18, 20, 24, 20, 18, 17), "L": (16, 16, 16, 16, 16, 16, 31),
    "M": (17, 27, 21, 21, 17, 17, 17), "N": (17, 17, 25, 21, 19, 17, 17), "O": (14, 17, 17, 17, 17, 17, 14),
    "P": (30, 17, 17, 30, 16, 16, 16), "Q": (14, 17, 17, 17, 21, 18, 13), "R": (30, 17, 17, 30, 20, 18, 17),
    "S": (15, 16, 16, 14, 1, 1, 30), "T": (31, 4, 4, 4, 4, 4, 4), "U": (17, 17, 17, 17, 17, 17, 14),
    "V": (17, 17, 17, 17, 17, 10, 4), "W": (17, 17, 17, 21, 21, 21, 10), "X": (17, 17, 10, 4, 10, 17, 17),
    "Y": (17, 17, 17, 10, 4, 4, 4), "Z": (31, 1, 2, 4, 8, 16, 31),
    ".": (0, 0, 0, 0, 0, 12, 12), ",": (0, 0, 0, 0, 12, 4, 8), ":": (0, 12, 12, 0, 12, 12, 0),
    ";": (0, 12, 12, 0, 12, 4, 8), "-": (0, 0, 0, 31, 0, 0, 0), "_": (0, 0, 0, 0, 0, 0, 31),
    "+": (0, 4, 4, 31, 4, 4, 0), "/": (0, 1, 2, 4, 8, 16, 0), "=": (0, 0, 31, 0, 31, 0, 0),
    "(": (2, 4, 8, 8, 8, 4, 2), ")": (8, 4, 2, 2, 2, 4, 8), "[": (14, 8, 8, 8, 8, 8, 14),
    "]": (14, 2, 2, 2, 2, 2, 14), "%": (24, 25, 2, 4, 8, 19, 3), "'": (4, 4, 8, 0, 0, 0, 0),
}
INK, GRID, AXIS = (0, 0, 0), (215, 215, 215), (90, 90, 90)
MEAN_STEPS = 20  # the dark curve's moving mean (fewer for a smoke run's few steps)


def png_bytes(rgb):
    """An RGB uint8 array [h, w, 3] as the bytes of a PNG file."""
    h, w, _ = rgb.shape
    raw = b"".join(b"\0" + rgb[y].tobytes() for y in range(h))

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def text_width(s):
    return 6 * len(s) - 1


def text(canvas, x, y, s, colour=INK):
    """Draws s with its top left corner at (x, y), clipped to the canvas."""
    h, w, _ = canvas.shape
    for ch in s.upper():
        for r, bits in enumerate(FONT[ch]):
            for c in range(5):
                if bits >> (4 - c) & 1 and 0 <= y + r < h and 0 <= x + c < w:
                    canvas[y + r, x + c] = colour
        x += 6


def line(canvas, x0, y0, x1, y1, colour):
    n = int(max(abs(x1 - x0), abs(y1 - y0))) + 1
    xs, ys = np.linspace(x0, x1, n + 1).round().astype(int), np.linspace(y0, y1, n + 1).round().astype(int)
    canvas[ys, xs] = colour


def tick_label(v):
    """A loss value at a grid line, in at most 5 characters: 2.5, 0.32, 0.056, 1E-4."""
    s = f"{v:.2g}"
    return s if len(s) <= 5 and "e" not in s else f"{v:.0e}".replace("e-0", "E-").replace("e+0", "E")


def step_ticks(n):
    """Round step numbers for an axis of n steps: about five of them."""
    for d in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 2500, 5000, 10000):
        if n / d <= 6:
            return list(range(0, n + 1, d))
    return [0, n]


def plot(panels, path):
    """panels: (title, losses a step, colour, [(step, label), ...] where a stage's second phase
    starts). One panel each, side by side: every step's loss light, its moving mean dark, a log y
    axis with a grid line every quarter decade, steps on the x axis, a dashed line and the phase's
    name where a phase starts; a footer that says so."""
    W, H, left, right, top, bottom = 460, 280, 50, 16, 26, 36
    canvas = np.full((H + 14, W * len(panels), 3), 255, np.uint8)
    for p, (title, ys, colour, phases) in enumerate(panels):
        ys = np.maximum(np.asarray(ys, np.float64), 1e-8)
        n = len(ys)
        win = max(1, min(MEAN_STEPS, n // 5))
        mean = np.convolve(ys, np.ones(win) / win, mode="valid")
        lo, hi = math.floor(np.log10(ys.min()) * 4) / 4, math.ceil(np.log10(ys.max()) * 4) / 4
        hi = max(hi, lo + 0.25)
        x0, x1, y0, y1 = p * W + left, p * W + W - right, top, H - bottom  # plot area: y0 top, y1 bottom

        def px(step):  # the loss of step i (from 1) sits at i; a phase starting after step s, at s
            return x0 + step / n * (x1 - x0)

        def py(v):
            return y1 - (math.log10(v) - lo) / (hi - lo) * (y1 - y0)

        text(canvas, x0, 8, title)
        for k in range(int(round((hi - lo) * 4)) + 1):  # grid and y labels, a quarter decade apart
            v = 10 ** (lo + k / 4)
            y = int(round(py(v)))
            canvas[y, x0:x1 + 1:3] = GRID
            lab = tick_label(v)
            text(canvas, x0 - 5 - text_width(lab), y - 3, lab, AXIS)
        for s in step_ticks(n):
            x = int(round(px(s)))
            canvas[y1:y1 + 4, x] = AXIS
            lab = str(s)
            text(canvas, min(max(x - text_width(lab) // 2, x0 - 8), p * W + W - 2 - text_width(lab)), y1 + 7, lab, AXIS)
        text(canvas, (x0 + x1 - text_width("step")) // 2, y1 + 19, "step", AXIS)
        for s, name in phases:
            x = int(round(px(s)))
            canvas[y0:y1:4, x] = AXIS
            canvas[y0 + 1:y1:4, x] = AXIS
            text(canvas, min(x + 4, x1 - text_width(name)), y0 + 2, name, AXIS)
        light = tuple(int(c + (255 - c) * 0.7) for c in colour)
        for i in range(n - 1):
            line(canvas, px(i + 1), py(ys[i]), px(i + 2), py(ys[i + 1]), light)
        off = 1 + (win - 1) / 2  # the mean of steps j + 1 .. j + win sits at their middle
        for j in range(len(mean) - 1):
            line(canvas, px(j + off), py(mean[j]), px(j + 1 + off), py(mean[j + 1]), colour)
        canvas[y0:y1 + 1, x0] = INK
        canvas[y1, x0:x1 + 1] = INK
    text(canvas, 8, H + 2, f"Log scale. Light: each step; dark: mean of {MEAN_STEPS} steps; dashed: the stage's second "
         "phase starts.", AXIS)
    with open(path, "wb") as f:
        f.write(png_bytes(canvas))
