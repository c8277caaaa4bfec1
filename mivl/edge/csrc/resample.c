/* PIL's antialiased resampling (Image.resize with BICUBIC, any separable filter) in the same
 * 22-bit fixed-point arithmetic, bit for bit, written so that the compiler vectorises it.
 *
 * PIL runs a horizontal pass (rounded and clipped to uint8), then a vertical pass, each output
 * value being clip8((HALF + sum_k in[k] * w[k]) >> 22) with int32 sums. Both passes here compute
 * exactly those sums; only the loop order differs:
 *   - vertical pass: for an output row, the sum runs over whole input rows, so the inner loop is
 *     a contiguous multiply-add over the row's bytes (SIMD lanes along the row);
 *   - horizontal pass: a band of BAND rows is first transposed (T[x][row * C + c]), so that the
 *     taps of one output column again multiply contiguous vectors of BAND * C lanes.
 * The weights and windows are PIL's own (computed in Python by mivl.edge.resize.pil_windows).
 *
 * One call resizes output rows [y0, y1) of one image, so callers split a picture or a batch of
 * camera frames over threads; the functions touch no Python state, and ctypes releases the GIL
 * around them. The hot loops (resample_passes.h) are compiled once per instruction set: AVX2 on
 * x86-64 (chosen at run time, so one build runs on any x86-64 CPU), NEON on AArch64 (Jetson), and
 * portable C everywhere (also what the tests compare the others with).
 */
#ifndef MIVL_NO_PYTHON
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#endif
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define PRECISION_BITS (32 - 8 - 2)
#define HALF (1 << (PRECISION_BITS - 1))
#define BAND 16   /* rows per transposed band of the horizontal pass */

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_AVX2_PATH 1
#else
#define HAVE_AVX2_PATH 0
#endif
#if defined(__aarch64__)
#include <arm_neon.h>
#define HAVE_NEON_PATH 1
#else
#define HAVE_NEON_PATH 0
#endif

static inline uint8_t clip8(int32_t ss) {
    ss >>= PRECISION_BITS;
    return ss < 0 ? 0 : (ss > 255 ? 255 : (uint8_t)ss);
}

/* Eight lanes, portable C: plain loops the compiler vectorises as it can (any architecture). */
typedef struct {
    int32_t v[8];
} lanes8;

static inline __attribute__((always_inline)) lanes8 portable_splat(int32_t x) {
    lanes8 r;
    for (int i = 0; i < 8; i++) r.v[i] = x;
    return r;
}

static inline __attribute__((always_inline)) lanes8 portable_muladd(lanes8 a, int32_t w, const uint8_t *p) {
    for (int i = 0; i < 8; i++) a.v[i] += w * (int32_t)p[i];
    return a;
}

static inline __attribute__((always_inline)) void portable_store8(uint8_t *p, lanes8 a) {
    for (int i = 0; i < 8; i++) p[i] = clip8(a.v[i]);
}

#define NAME(f) portable_##f
#define TARGET
#define VEC lanes8
#define SPLAT(x) portable_splat(x)
#define MULADD(acc, w, p) portable_muladd(acc, w, p)
#define STORE8(p, acc) portable_store8(p, acc)
#include "resample_passes.h"

#if HAVE_NEON_PATH
/* Eight lanes in NEON (AArch64: Jetson Orin's Cortex-A78AE): widening moves, vmla, saturating
 * narrows (negative -> 0, then > 255 -> 255: PIL's clip8). */
typedef struct {
    int32x4_t lo, hi;
} neon8;

static inline __attribute__((always_inline)) neon8 neon_splat(int32_t x) {
    neon8 r = {vdupq_n_s32(x), vdupq_n_s32(x)};
    return r;
}

static inline __attribute__((always_inline)) neon8 neon_muladd(neon8 a, int32_t w, const uint8_t *p) {
    uint16x8_t b = vmovl_u8(vld1_u8(p));
    a.lo = vmlaq_n_s32(a.lo, vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(b))), w);
    a.hi = vmlaq_n_s32(a.hi, vreinterpretq_s32_u32(vmovl_u16(vget_high_u16(b))), w);
    return a;
}

static inline __attribute__((always_inline)) void neon_store8(uint8_t *p, neon8 a) {
    uint16x8_t n = vcombine_u16(vqmovun_s32(vshrq_n_s32(a.lo, PRECISION_BITS)),
                                vqmovun_s32(vshrq_n_s32(a.hi, PRECISION_BITS)));
    vst1_u8(p, vqmovn_u16(n));
}

#define NAME(f) neon_##f
#define TARGET
#define VEC neon8
#define SPLAT(x) neon_splat(x)
#define MULADD(acc, w, p) neon_muladd(acc, w, p)
#define STORE8(p, acc) neon_store8(p, acc)
#include "resample_passes.h"
#endif

#if HAVE_AVX2_PATH
/* Eight lanes in AVX2: widening loads (vpmovzxbd), vpmulld, saturating packs. */
static inline __attribute__((always_inline, target("avx2"))) void avx2_store8(uint8_t *p, __m256i ss) {
    ss = _mm256_srai_epi32(ss, PRECISION_BITS);
    __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(ss), _mm256_extracti128_si256(ss, 1));
    _mm_storel_epi64((__m128i *)p, _mm_packus_epi16(w, w));   /* clip to 0..255 */
}

#define NAME(f) avx2_##f
#define TARGET __attribute__((target("avx2")))
#define VEC __m256i
#define SPLAT(v) _mm256_set1_epi32(v)
#define MULADD(acc, w, p) _mm256_add_epi32(acc, _mm256_mullo_epi32(_mm256_set1_epi32(w), \
                              _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(p)))))
#define STORE8(p, acc) avx2_store8(p, acc)
#include "resample_passes.h"
#endif

typedef void (*horizontal_fn)(const uint8_t *, int64_t, int, int, int, uint8_t *, int64_t, int,
                              const int32_t *, const int32_t *, const int32_t *, int, uint8_t *);
typedef void (*vertical_fn)(const uint8_t *, int64_t, int, int, uint8_t *, int64_t, int, int,
                            const int32_t *, const int32_t *, const int32_t *, int);

enum { ISA_PORTABLE = 0, ISA_AVX2 = 1, ISA_NEON = 2 };
static int portable_only = 0;

static int isa(void) {
    if (portable_only) return ISA_PORTABLE;
#if HAVE_AVX2_PATH
    if (__builtin_cpu_supports("avx2")) return ISA_AVX2;
#endif
#if HAVE_NEON_PATH
    return ISA_NEON;
#endif
    return ISA_PORTABLE;
}

/* portable 1: run the portable passes even where a SIMD path is there (tests hold every path to
 * PIL). Returns the path the passes take now: 0 portable, 1 AVX2, 2 NEON. */
int mivl_resample_isa(int portable) {
    portable_only = portable;
    return isa();
}

/* The passes of the instruction set in use. */
typedef struct {
    horizontal_fn horizontal;
    vertical_fn vertical;
} passes;

static passes chosen(void) {
    passes p = {portable_pass_horizontal, portable_pass_vertical};
#if HAVE_AVX2_PATH
    if (isa() == ISA_AVX2) p = (passes){avx2_pass_horizontal, avx2_pass_vertical};
#endif
#if HAVE_NEON_PATH
    if (isa() == ISA_NEON) p = (passes){neon_pass_horizontal, neon_pass_vertical};
#endif
    return p;
}

/* Output rows [y0, y1) of the resize of `in` (in_h, in_w, C), stride in_stride, into `out`
 * (whose row 0 is output row y0), stride out_stride. hx: the horizontal windows (NULL: the
 * width is unchanged), hy: the vertical ones (NULL: the height is unchanged). C: 1 to 4 channels.
 * Returns 0; -1 when scratch memory could not be had; -2 for another channel count. */
int mivl_resize_rows(const uint8_t *in, int64_t in_stride, int in_h, int in_w, int C,
                     uint8_t *out, int64_t out_stride, int out_w, int y0, int y1,
                     const int32_t *hx_min, const int32_t *hx_count, const int32_t *hx_w, int hx_ksize,
                     const int32_t *hy_min, const int32_t *hy_count, const int32_t *hy_w, int hy_ksize) {
    if (C < 1 || C > 4) return -2;
    if (y1 <= y0) return 0;
    if (!hx_min && !hy_min) {                            /* same size: a copy */
        for (int y = y0; y < y1; y++)
            memcpy(out + (int64_t)(y - y0) * out_stride, in + (int64_t)y * in_stride, (size_t)in_w * C);
        return 0;
    }
    passes p = chosen();
    int lo = y0, hi = y1;                                /* the input rows the outputs y0..y1 read */
    if (hy_min) {
        lo = hy_min[y0], hi = 0;
        for (int y = y0; y < y1; y++) {
            if (hy_min[y] < lo) lo = hy_min[y];
            if (hy_min[y] + hy_count[y] > hi) hi = hy_min[y] + hy_count[y];
        }
        if (hi > in_h) hi = in_h;
    }
    if (!hx_min) {                                       /* vertical pass only */
        p.vertical(in + (int64_t)lo * in_stride, in_stride, lo, in_w * C, out, out_stride, y0, y1,
                   hy_min, hy_count, hy_w, hy_ksize);
        return 0;
    }
    /* horizontal pass, straight into out or into `mid` for the vertical pass */
    int64_t mid_stride = (int64_t)out_w * C;
    uint8_t *mid = hy_min ? malloc((size_t)(hi - lo) * mid_stride) : NULL;
    uint8_t *tmp = malloc((size_t)BAND * C * (in_w + out_w) + 8);
    if (!tmp || (hy_min && !mid)) {
        free(mid);
        free(tmp);
        return -1;
    }
    p.horizontal(in + (int64_t)lo * in_stride, in_stride, hi - lo, in_w, C, mid ? mid : out,
                 mid ? mid_stride : out_stride, out_w, hx_min, hx_count, hx_w, hx_ksize, tmp);
    if (mid)
        p.vertical(mid, mid_stride, lo, out_w * C, out, out_stride, y0, y1, hy_min, hy_count, hy_w, hy_ksize);
    free(mid);
    free(tmp);
    return 0;
}

/* (h, w, 3) uint8 tile region (row stride `stride` bytes) -> planar (3, h, w) float32 through a
 * per-channel table of the 256 normalised values, lut[3][256]. */
void mivl_normalise(const uint8_t *in, int64_t stride, int h, int w, float *out, const float *lut) {
    float *p0 = out, *p1 = out + (int64_t)h * w, *p2 = out + 2 * (int64_t)h * w;
    const float *l0 = lut, *l1 = lut + 256, *l2 = lut + 512;
    for (int y = 0; y < h; y++) {
        const uint8_t *s = in + (int64_t)y * stride;
        int64_t o = (int64_t)y * w;
        for (int x = 0; x < w; x++) {
            p0[o + x] = l0[s[3 * x]];
            p1[o + x] = l1[s[3 * x + 1]];
            p2[o + x] = l2[s[3 * x + 2]];
        }
    }
}

#ifndef MIVL_NO_PYTHON
/* A Python extension module only so that the build installs it beside the package; the
 * functions above are called through ctypes (mivl.edge.native). Built with -DMIVL_NO_PYTHON it is
 * a plain C library (the cross-architecture test builds it so for aarch64). */
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_resample",
                                    "PIL-exact resampling and tile normalisation (called through ctypes).",
                                    -1, NULL};

PyMODINIT_FUNC PyInit__resample(void) { return PyModule_Create(&module); }
#endif
