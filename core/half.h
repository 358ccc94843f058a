/* IEEE binary16 and bfloat16 conversions (round to nearest even), used when loading weights. */
#ifndef VKD_HALF_H
#define VKD_HALF_H
#include <stdint.h>

uint16_t half_from_float(float f);
float half_to_float(uint16_t h);
float bf16_to_float(uint16_t b);
uint16_t bf16_from_float(float f);

#endif
