/* Port of tools/train/scenes.py (single-shape scenes); the geometry must stay the same. */
#include "scenes.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

const char *const scene_colours[SCENE_COLOURS] = {"red",    "orange", "yellow", "green", "blue",
                                                  "purple", "pink",   "white",  "black", "brown"};
const char *const scene_shapes[SCENE_SHAPES] = {"circle", "square", "triangle", "star", "ring"};
static const int rgb_of[SCENE_COLOURS + 1][3] = {
    {215, 35, 35},   {245, 135, 20},  {240, 220, 40}, {40, 160, 60}, {40, 80, 215}, {125, 50, 175},
    {245, 140, 195}, {245, 245, 245}, {20, 20, 20},   {125, 75, 35}, {128, 128, 128} /* gray */};
static const int held_out[][2] = {{0, 3}, {4, 4}, {3, 2}, {2, 1}, {5, 0}}; /* red star, blue ring, ... */
enum { POS_CENTRE, POS_LEFT, POS_RIGHT, POS_TOP, POS_BOTTOM, POS_TL, POS_TR, POS_BL, POS_BR };

bool scene_held_out(int colour, int shape) {
  for (size_t i = 0; i < sizeof held_out / sizeof held_out[0]; i++)
    if (held_out[i][0] == colour && held_out[i][1] == shape) return true;
  return false;
}

void scene_label(int colour, int shape, char *buf, int n) {
  snprintf(buf, (size_t)n, "%s %s %s", colour == 1 ? "an" : "a", scene_colours[colour], scene_shapes[shape]);
}

static uint64_t splitmix64(uint64_t *s) {
  uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
static double uniform(uint64_t *s, double lo, double hi) { return lo + (hi - lo) * (double)(splitmix64(s) >> 11) * 0x1p-53; }
static int below(uint64_t *s, int n) { return (int)(splitmix64(s) % (uint64_t)n); }

/* polygon vertices around the origin (y down); 0 for the round shapes */
static int polygon(int shape, double r, double *vx, double *vy) {
  const double pi = 3.14159265358979323846;
  if (shape == 1) {
    double a = 0.8 * r, x[4] = {-a, a, a, -a}, y[4] = {-a, -a, a, a};
    memcpy(vx, x, sizeof x), memcpy(vy, y, sizeof y);
    return 4;
  }
  if (shape == 2) {
    for (int k = 0; k < 3; k++) {
      double ang = (-90 + 120 * k) * pi / 180;
      vx[k] = 1.15 * r * cos(ang), vy[k] = 1.15 * r * sin(ang) + 0.2 * r;
    }
    return 3;
  }
  if (shape == 3) {
    for (int k = 0; k < 10; k++) {
      double R = k % 2 == 0 ? 1.2 * r : 0.5 * r, ang = (-90 + 36 * k) * pi / 180;
      vx[k] = R * cos(ang), vy[k] = R * sin(ang);
    }
    return 10;
  }
  return 0;
}

static bool inside(int shape, double px, double py, double r, const double *vx, const double *vy, int nv) {
  if (shape == 0 || shape == 4) {
    double d2 = px * px + py * py;
    return d2 <= r * r && (shape == 0 || d2 >= (0.55 * r) * (0.55 * r));
  }
  bool in = false; /* even-odd crossings, as scenes.py */
  for (int i = 0; i < nv; i++) {
    double x0 = vx[i], y0 = vy[i], x1 = vx[(i + 1) % nv], y1 = vy[(i + 1) % nv];
    if (y0 == y1) continue;
    if ((y0 > py) != (y1 > py) && px < x0 + (py - y0) * (x1 - x0) / (y1 - y0)) in = !in;
  }
  return in;
}

static double jitter(uint64_t *s, int v) {
  double x = v + below(s, 25) - 12;
  return x < 0 ? 0 : x > 255 ? 255 : x;
}

void scene_draw(uint64_t *rng, struct scene *s, unsigned char *rgb) {
  s->colour = below(rng, SCENE_COLOURS);
  s->shape = below(rng, SCENE_SHAPES);
  do s->background = below(rng, SCENE_COLOURS + 1);
  while (s->background == s->colour);
  s->large = below(rng, 2);
  s->position = below(rng, SCENE_POSITIONS);
  double r = (s->large ? 15.0 : 8.0) * uniform(rng, 0.95, 1.1), m = 1.2 * r + 2.0;
  int p = s->position;
  double cx = (p == POS_LEFT || p == POS_TL || p == POS_BL) ? m : (p == POS_RIGHT || p == POS_TR || p == POS_BR) ? SCENE_SIZE - m : SCENE_SIZE / 2.0;
  double cy = (p == POS_TOP || p == POS_TL || p == POS_TR) ? m : (p == POS_BOTTOM || p == POS_BL || p == POS_BR) ? SCENE_SIZE - m : SCENE_SIZE / 2.0;
  cx += uniform(rng, -2, 2), cy += uniform(rng, -2, 2);
  double bg[3], fg[3], vx[10], vy[10];
  for (int c = 0; c < 3; c++) bg[c] = jitter(rng, rgb_of[s->background][c]);
  for (int c = 0; c < 3; c++) fg[c] = jitter(rng, rgb_of[s->colour][c]);
  int nv = polygon(s->shape, r, vx, vy);
  for (int y = 0; y < SCENE_SIZE; y++)
    for (int x = 0; x < SCENE_SIZE; x++) {
      int hits = 0;
      for (int sy = 0; sy < 2; sy++)
        for (int sx = 0; sx < 2; sx++)
          hits += inside(s->shape, (2 * x + sx + 0.5) / 2 - cx, (2 * y + sy + 0.5) / 2 - cy, r, vx, vy, nv);
      for (int c = 0; c < 3; c++) rgb[(y * SCENE_SIZE + x) * 3 + c] = (unsigned char)lround(bg[c] + (fg[c] - bg[c]) * hits / 4.0);
    }
}
