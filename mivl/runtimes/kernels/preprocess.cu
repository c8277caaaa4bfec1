// Fused preprocessing kernels: raw camera frames (uint8 HWC, RGB or BGR) -> the normalised tile
// batch (N, 3, S, S) the vision encoder takes. PIL's antialiased BICUBIC resize in its exact
// fixed-point arithmetic (coefficient tables computed on the host, see mivl/edge/resize.py), the
// six-camera stitching with labels, the tile cut, the thumbnail, ImageNet normalisation and the
// NCHW layout, in 4-5 launches with no host round trip.
//
// Launch shapes: one thread per output pixel; blockDim (32, 8); gridDim.z indexes the image.
#ifndef MIVL_EMULATION
#include <cuda_fp16.h>
#endif

#define MIVL_PRECISION_BITS 22

__device__ __forceinline__ unsigned char mivl_clip8(int acc) {
  // PIL: acc starts at 1 << 21 (rounding); >= 255 << 22 saturates; <= 0 is black.
  if (acc >= (255 << MIVL_PRECISION_BITS)) return 255;
  if (acc <= 0) return 0;
  return (unsigned char)(acc >> MIVL_PRECISION_BITS);
}

// Sum of `taps` pixels `step` bytes apart, weighted in PIL's fixed point, per channel -> uint8.
__device__ __forceinline__ void mivl_taps(const unsigned char* __restrict__ p, long step, int taps,
                                          const int* __restrict__ w, unsigned char* v) {
  int acc[3] = {1 << (MIVL_PRECISION_BITS - 1), 1 << (MIVL_PRECISION_BITS - 1), 1 << (MIVL_PRECISION_BITS - 1)};
  for (int k = 0; k < taps; ++k, p += step) {
    acc[0] += p[0] * w[k];
    acc[1] += p[1] * w[k];
    acc[2] += p[2] * w[k];
  }
  v[0] = mivl_clip8(acc[0]);
  v[1] = mivl_clip8(acc[1]);
  v[2] = mivl_clip8(acc[2]);
}

// Horizontal pass: src (n images of src_h x src_w x 3, channel order per `bgr`) -> dst
// (n x src_h x dst_w x 3, RGB). bounds[2o] = first tap, bounds[2o+1] = tap count.
extern "C" __global__ void mivl_resample_h(const unsigned char* __restrict__ src, int src_w, int src_h,
                                           long src_image_stride, int bgr, unsigned char* __restrict__ dst,
                                           int dst_w, long dst_image_stride, const int* __restrict__ bounds,
                                           const int* __restrict__ weights, int ksize) {
  int x = blockIdx.x * blockDim.x + threadIdx.x;
  int y = blockIdx.y * blockDim.y + threadIdx.y;
  int n = blockIdx.z;
  if (x >= dst_w || y >= src_h) return;
  const unsigned char* row = src + n * src_image_stride + (long)y * src_w * 3;
  unsigned char v[3];
  mivl_taps(row + bounds[2 * x] * 3, 3, bounds[2 * x + 1], weights + (long)x * ksize, v);
  unsigned char* out = dst + n * dst_image_stride + ((long)y * dst_w + x) * 3;
  out[0] = v[bgr ? 2 : 0];
  out[1] = v[1];
  out[2] = v[bgr ? 0 : 2];
}

// Vertical pass into a uint8 RGB canvas: image n lands at (x0 + n_col * cell_w, y0 + n_row * cell_h)
// with n_col = n % cells_per_row. When `label` is given, image n's label mask (label_h x label_w,
// one per image) is blended in at the cell's top-left in `label_rgb`, as PIL draws text.
extern "C" __global__ void mivl_resample_v(const unsigned char* __restrict__ src, int width, int src_h,
                                           long src_image_stride, unsigned char* __restrict__ canvas,
                                           int canvas_w, int dst_h, int cells_per_row,
                                           const int* __restrict__ bounds, const int* __restrict__ weights,
                                           int ksize, const unsigned char* __restrict__ label, int label_w,
                                           int label_h, int label_r, int label_g, int label_b) {
  int x = blockIdx.x * blockDim.x + threadIdx.x;
  int y = blockIdx.y * blockDim.y + threadIdx.y;
  int n = blockIdx.z;
  if (x >= width || y >= dst_h) return;
  const unsigned char* col = src + n * src_image_stride + (long)x * 3;
  unsigned char v[3];
  mivl_taps(col + (long)bounds[2 * y] * width * 3, (long)width * 3, bounds[2 * y + 1], weights + (long)y * ksize, v);
  if (label && x < label_w && y < label_h) {
    int m = label[(long)n * label_w * label_h + (long)y * label_w + x];
    int ink[3] = {label_r, label_g, label_b};
    for (int c = 0; c < 3; ++c) {  // PIL's BLEND: (a * (255 - m) + b * m + 128) / 255, rounded its way
      int t = v[c] * (255 - m) + ink[c] * m + 128;
      v[c] = (unsigned char)((t + (t >> 8)) >> 8);
    }
  }
  int cx = (n % cells_per_row) * width + x, cy = (n / cells_per_row) * dst_h + y;
  unsigned char* out = canvas + ((long)cy * canvas_w + cx) * 3;
  out[0] = v[0];
  out[1] = v[1];
  out[2] = v[2];
}

// Vertical pass (or, with bounds == 0, a plain read) fused with the tile cut, normalisation and
// NCHW layout: canvas pixel (x, y) -> tile first_tile + (y / S) * (width / S) + x / S.
template <typename T>
__device__ __forceinline__ void mivl_store(T* p, float v);
template <>
__device__ __forceinline__ void mivl_store<float>(float* p, float v) { *p = v; }
template <>
__device__ __forceinline__ void mivl_store<__half>(__half* p, float v) { *p = __float2half_rn(v); }

template <typename T>
__device__ void mivl_tiles(const unsigned char* __restrict__ src, int width, int dst_h,
                           const int* __restrict__ bounds, const int* __restrict__ weights, int ksize,
                           T* __restrict__ out, int tile, int first_tile, float m0, float m1, float m2,
                           float s0, float s1, float s2) {
  int x = blockIdx.x * blockDim.x + threadIdx.x;
  int y = blockIdx.y * blockDim.y + threadIdx.y;
  if (x >= width || y >= dst_h) return;
  unsigned char v[3];
  if (bounds) {
    mivl_taps(src + (long)x * 3 + (long)bounds[2 * y] * width * 3, (long)width * 3, bounds[2 * y + 1],
              weights + (long)y * ksize, v);
  } else {
    const unsigned char* p = src + ((long)y * width + x) * 3;
    v[0] = p[0];
    v[1] = p[1];
    v[2] = p[2];
  }
  int cols = width / tile;
  long t = first_tile + (y / tile) * cols + x / tile;
  long plane = (long)tile * tile, pix = (long)(y % tile) * tile + (x % tile);
  // (v / 255 - mean) / std in float32, the reference's order of operations
  mivl_store<T>(out + (t * 3 + 0) * plane + pix, ((float)v[0] / 255.0f - m0) / s0);
  mivl_store<T>(out + (t * 3 + 1) * plane + pix, ((float)v[1] / 255.0f - m1) / s1);
  mivl_store<T>(out + (t * 3 + 2) * plane + pix, ((float)v[2] / 255.0f - m2) / s2);
}

extern "C" __global__ void mivl_tiles_f32(const unsigned char* __restrict__ src, int width, int dst_h,
                                          const int* __restrict__ bounds, const int* __restrict__ weights,
                                          int ksize, float* __restrict__ out, int tile, int first_tile,
                                          float m0, float m1, float m2, float s0, float s1, float s2) {
  mivl_tiles<float>(src, width, dst_h, bounds, weights, ksize, out, tile, first_tile, m0, m1, m2, s0, s1, s2);
}

extern "C" __global__ void mivl_tiles_f16(const unsigned char* __restrict__ src, int width, int dst_h,
                                          const int* __restrict__ bounds, const int* __restrict__ weights,
                                          int ksize, __half* __restrict__ out, int tile, int first_tile,
                                          float m0, float m1, float m2, float s0, float s1, float s2) {
  mivl_tiles<__half>(src, width, dst_h, bounds, weights, ksize, out, tile, first_tile, m0, m1, m2, s0, s1, s2);
}
