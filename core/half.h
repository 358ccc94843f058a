/* IEEE binary16 and bfloat16 conversions (round to nearest even), used when loading weights, and
 * a float's bits. */
#ifndef VKD_HALF_H
#define VKD_HALF_H
#include <stdint.h>

uint16_t half_from_float(float f);
float half_to_float(uint16_t h);
float bf16_to_float(uint16_t b);
uint16_t bf16_from_float(float f);
uint32_t float_bits(float f);
float float_from_bits(uint32_t u);

#endif
