// group_norm_subgroup: group_norm.comp with its sums by subgroup arithmetic (reduce.glsl), the
// GPUs' kernel where the device has subgroup arithmetic in compute shaders.
#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#define VKD_SUBGROUP
#include "group_norm.glsl"
