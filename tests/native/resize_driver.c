/* Runs the compiled resampler on one job file, without Python: the cross-architecture test builds
 * it for aarch64 (Jetson) and runs it under qemu. Job file (little-endian int32 header, then data):
 *   in_h in_w C out_w out_h kx ky   image[in_h*in_w*C] (uint8)
 *   hx_min[out_w] hx_count[out_w] hx_w[out_w*kx]   hy_min[out_h] hy_count[out_h] hy_w[out_h*ky]
 * kx (ky) 0: that pass is skipped. Writes the out_h*out_w*C result, computed in two row parts.
 * A third argument "portable" runs the portable passes instead of the SIMD ones. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int mivl_resize_rows(const uint8_t *in, int64_t in_stride, int in_h, int in_w, int C, uint8_t *out,
                     int64_t out_stride, int out_w, int y0, int y1, const int32_t *hx_min,
                     const int32_t *hx_count, const int32_t *hx_w, int hx_ksize, const int32_t *hy_min,
                     const int32_t *hy_count, const int32_t *hy_w, int hy_ksize);
int mivl_resample_isa(int portable);

static void *take(FILE *f, size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p || fread(p, 1, n, f) != n) { fprintf(stderr, "short job file\n"); exit(2); }
    return p;
}

int main(int argc, char **argv) {
    if (argc != 3 && argc != 4) { fprintf(stderr, "usage: resize_driver JOB OUT [portable]\n"); return 2; }
    printf("%s\n", mivl_resample_isa(argc == 4) == 2 ? "neon" : "other");
    FILE *f = fopen(argv[1], "rb");
    if (!f) { perror(argv[1]); return 2; }
    int32_t *h = take(f, 7 * 4);
    int in_h = h[0], in_w = h[1], C = h[2], out_w = h[3], out_h = h[4], kx = h[5], ky = h[6];
    uint8_t *img = take(f, (size_t)in_h * in_w * C);
    int32_t *xmin = NULL, *xcount = NULL, *xw = NULL, *ymin = NULL, *ycount = NULL, *yw = NULL;
    if (kx) { xmin = take(f, 4 * out_w); xcount = take(f, 4 * out_w); xw = take(f, 4 * (size_t)out_w * kx); }
    if (ky) { ymin = take(f, 4 * out_h); ycount = take(f, 4 * out_h); yw = take(f, 4 * (size_t)out_h * ky); }
    fclose(f);
    uint8_t *out = malloc((size_t)out_h * out_w * C);
    int mid = out_h / 2;
    int64_t os = (int64_t)out_w * C;
    if (mivl_resize_rows(img, (int64_t)in_w * C, in_h, in_w, C, out, os, out_w, 0, mid, xmin, xcount, xw, kx,
                         ymin, ycount, yw, ky) ||
        mivl_resize_rows(img, (int64_t)in_w * C, in_h, in_w, C, out + mid * os, os, out_w, mid, out_h, xmin,
                         xcount, xw, kx, ymin, ycount, yw, ky))
        return 3;
    FILE *o = fopen(argv[2], "wb");
    fwrite(out, 1, (size_t)out_h * out_w * C, o);
    fclose(o);
    return 0;
}
