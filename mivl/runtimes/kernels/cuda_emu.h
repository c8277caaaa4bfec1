// Host emulation of the CUDA built-ins the SDK's kernels use, so that the very kernel source runs
// on a CPU under test. A launch runs every block in turn; the threads of a block are real OS
// threads that process the block together, so __syncthreads() is a barrier and __shared__
// variables (static locals here) are shared by the block's threads, as on a GPU.
#pragma once
#include <pthread.h>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <vector>

struct dim3 {
  unsigned x, y, z;
  dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

namespace emu {
inline thread_local dim3 tIdx, bIdx;
inline dim3 bDim, gDim;
inline pthread_barrier_t barrier;
}  // namespace emu

#define threadIdx (emu::tIdx)
#define blockIdx (emu::bIdx)
#define blockDim (emu::bDim)
#define gridDim (emu::gDim)
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __shared__ static
#define __syncthreads() pthread_barrier_wait(&emu::barrier)

typedef uint16_t __half_bits;

// Round-to-nearest-even float -> IEEE half bits (what __float2half_rn does).
inline uint16_t emu_float2half(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  uint32_t sign = (x >> 16) & 0x8000u, mant = x & 0x7fffffu;
  int exp = int((x >> 23) & 0xff) - 127 + 15;
  if (((x >> 23) & 0xff) == 0xff) return uint16_t(sign | 0x7c00u | (mant ? 0x200u : 0u));
  if (exp >= 31) return uint16_t(sign | 0x7c00u);
  if (exp <= 0) {
    if (exp < -10) return uint16_t(sign);
    mant |= 0x800000u;
    int shift = 14 - exp;
    uint32_t half = mant >> shift, rem = mant & ((1u << shift) - 1), mid = 1u << (shift - 1);
    if (rem > mid || (rem == mid && (half & 1u))) half++;
    return uint16_t(sign | half);
  }
  uint32_t half = sign | (uint32_t(exp) << 10) | (mant >> 13), rem = mant & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (half & 1u))) half++;
  return uint16_t(half);
}

struct __half {
  uint16_t bits;
};
inline __half __float2half_rn(float f) { return __half{emu_float2half(f)}; }

namespace emu {
struct Launch {
  std::function<void()> body;
};
inline void* worker(void* arg) {
  auto* a = static_cast<std::pair<Launch*, unsigned>*>(arg);
  unsigned t = a->second;
  tIdx = dim3(t % bDim.x, (t / bDim.x) % bDim.y, t / (bDim.x * bDim.y));
  for (unsigned z = 0; z < gDim.z; ++z)
    for (unsigned y = 0; y < gDim.y; ++y)
      for (unsigned x = 0; x < gDim.x; ++x) {
        bIdx = dim3(x, y, z);
        a->first->body();
        pthread_barrier_wait(&barrier);  // the whole block finishes before the next begins
      }
  return nullptr;
}
// Run body() as grid x block threads; body reads threadIdx/blockIdx like a kernel.
inline void launch(dim3 grid, dim3 block, std::function<void()> body) {
  gDim = grid;
  bDim = block;
  unsigned n = block.x * block.y * block.z;
  Launch l{std::move(body)};
  pthread_barrier_init(&barrier, nullptr, n);
  std::vector<pthread_t> th(n);
  std::vector<std::pair<Launch*, unsigned>> args(n);
  for (unsigned t = 0; t < n; ++t) {
    args[t] = {&l, t};
    pthread_create(&th[t], nullptr, worker, &args[t]);
  }
  for (auto& t : th) pthread_join(t, nullptr);
  pthread_barrier_destroy(&barrier);
}
}  // namespace emu

inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }

namespace emu {
// For kernels without __syncthreads or __shared__: every thread of every block, one after another.
inline void launch_serial(dim3 grid, dim3 block, const std::function<void()>& body) {
  gDim = grid;
  bDim = block;
  for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        bIdx = dim3(bx, by, bz);
        for (unsigned tz = 0; tz < block.z; ++tz)
          for (unsigned ty = 0; ty < block.y; ++ty)
            for (unsigned tx = 0; tx < block.x; ++tx) {
              tIdx = dim3(tx, ty, tz);
              body();
            }
      }
}
}  // namespace emu
