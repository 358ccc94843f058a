/* The demo model's procedural scenes, ported from tools/train/scenes.py (the specification):
 * 64x64 RGB, a plain background and one shape; 2x2-supersampled coverage blended over the
 * background. Used to draw fresh scenes for the zero-shot test. Random numbers are this file's
 * own (splitmix64), so the scenes are new ones, drawn from the same distribution. */
#ifndef VKD_SCENES_H
#define VKD_SCENES_H

#include <stdbool.h>
#include <stdint.h>

enum { SCENE_SIZE = 64, SCENE_COLOURS = 10, SCENE_SHAPES = 5, SCENE_POSITIONS = 9 };

extern const char *const scene_colours[SCENE_COLOURS];
extern const char *const scene_shapes[SCENE_SHAPES];

struct scene {
  int colour, shape, background; /* background: 0..9 a colour, 10 gray */
  bool large;
  int position;
};

/* Whether tools/train never drew this colour-shape pair (the generalisation set). */
bool scene_held_out(int colour, int shape);
/* The caption label as in training: "a red circle", "an orange ring". */
void scene_label(int colour, int shape, char *buf, int n);
/* Draws a random single-shape scene (any pair, held-out ones included) into rgb [64, 64, 3]. */
void scene_draw(uint64_t *rng, struct scene *s, unsigned char *rgb);

#endif
