// CPU harness: the CUDA kernels compiled by the host compiler behind cuda_emu.h, with one
// extern "C" launcher per kernel taking the grid and block shape (used by the tests through ctypes).
#define MIVL_EMULATION 1
#include "cuda_emu.h"
#include "preprocess.cu"
#include "unshuffle.cu"

extern "C" {

void launch_resample_h(int gx, int gy, int gz, int bx, int by, const unsigned char* src, int src_w, int src_h,
                       long src_stride, int bgr, unsigned char* dst, int dst_w, long dst_stride, const int* bounds,
                       const int* weights, int ksize) {
  emu::launch_serial(dim3(gx, gy, gz), dim3(bx, by), [&] {
    mivl_resample_h(src, src_w, src_h, src_stride, bgr, dst, dst_w, dst_stride, bounds, weights, ksize);
  });
}

void launch_resample_v(int gx, int gy, int gz, int bx, int by, const unsigned char* src, int width, int src_h,
                       long src_stride, unsigned char* canvas, int canvas_w, int dst_h, int cells_per_row,
                       const int* bounds, const int* weights, int ksize, const unsigned char* label, int label_w,
                       int label_h, int r, int g, int b) {
  emu::launch_serial(dim3(gx, gy, gz), dim3(bx, by), [&] {
    mivl_resample_v(src, width, src_h, src_stride, canvas, canvas_w, dst_h, cells_per_row, bounds, weights, ksize,
                    label, label_w, label_h, r, g, b);
  });
}

void launch_tiles(int half, int gx, int gy, int bx, int by, const unsigned char* src, int width, int dst_h,
                  const int* bounds, const int* weights, int ksize, void* out, int tile, int first_tile,
                  float m0, float m1, float m2, float s0, float s1, float s2) {
  emu::launch_serial(dim3(gx, gy, 1), dim3(bx, by), [&] {
    if (half)
      mivl_tiles_f16(src, width, dst_h, bounds, weights, ksize, (__half*)out, tile, first_tile, m0, m1, m2, s0, s1, s2);
    else
      mivl_tiles_f32(src, width, dst_h, bounds, weights, ksize, (float*)out, tile, first_tile, m0, m1, m2, s0, s1, s2);
  });
}

void launch_unshuffle_layernorm(int tokens, int n, const float* hidden, int g, int C, const float* gamma,
                                const float* beta, float eps, float* out) {
  emu::launch(dim3(tokens, n, 1), dim3(MIVL_LN_THREADS), [&] {
    mivl_unshuffle_layernorm(hidden, g, C, gamma, beta, eps, out);
  });
}
}
