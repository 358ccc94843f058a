#include "progress.h"

#include <stdio.h>

#include "bench.h"

void progress_phase(struct progress *p, const char *phase) {
  p->phase = phase;
  p->t0 = bench_now();
}

void progress_draw(struct progress *p, int step, int steps) {
  if (!p->on) return;
  double el = bench_now() - p->t0, rate = step > 0 ? step / el : 0;
  int width = 24, fill = steps ? step * width / steps : 0;
  char bar[32];
  for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '.';
  bar[width] = 0;
  fprintf(stderr, "\r[image %d/%d] %-7s [%s] %d/%d %5.2f it/s ETA %4.0fs  ", p->image, p->images, p->phase, bar, step,
          steps, rate, rate > 0 ? (steps - step) / rate : 0.0);
  if (step == steps) fprintf(stderr, "%6.2f s\n", el); /* the phase's time */
  fflush(stderr);
}
