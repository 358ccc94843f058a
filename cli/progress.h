/* The progress line of long work on stderr: "[image 2/4] sample  [#####...] 12/20  3.1 it/s ETA 3s". */
#ifndef VKD_PROGRESS_H
#define VKD_PROGRESS_H

#include <stdbool.h>

struct progress {
  bool on;
  int image, images; /* 1-based */
  const char *phase;
  double t0; /* when the phase started */
};

/* Starts a phase (resets its clock). */
void progress_phase(struct progress *p, const char *phase);
/* Redraws the line: step of steps done (the phase's seconds and a newline when it is complete). */
void progress_draw(struct progress *p, int step, int steps);

#endif
