/* The resampling passes of resample.c, included once per instruction set. The includer defines
 * NAME(f) (the function's name for this instruction set), TARGET (its target attribute), VEC (eight
 * int32 sums), SPLAT(v), MULADD(acc, w, p) (acc + w * the eight bytes at p, widened) and
 * STORE8(p, acc) (the eight sums as clip8'd pixels at p); they are undefined again at the end. */

/* Sums of `nv` groups of eight lanes over `taps` rows of `rows` (row i at rows + i * stride),
 * weighted by w[0..taps), written as pixels to dst. nv is a constant where inlined. */
static inline __attribute__((always_inline)) TARGET void
NAME(weigh_rows)(const uint8_t *rows, int64_t stride, const int32_t *w, int taps, const int nv, uint8_t *dst) {
    VEC acc[8];
    for (int j = 0; j < nv; j++) acc[j] = SPLAT(HALF);
    for (int k = 0; k < taps; k++) {
        const int32_t wk = w[k];
        const uint8_t *s = rows + k * stride;
        for (int j = 0; j < nv; j++) acc[j] = MULADD(acc[j], wk, s + 8 * j);
    }
    for (int j = 0; j < nv; j++) STORE8(dst + 8 * j, acc[j]);
}

/* Horizontal pass over `rows` rows: in (rows, in_w * C) with stride in_stride, out (rows,
 * out_w * C) with stride out_stride. xmin/xcount/weights: PIL's window per output column,
 * weights [out_w][ksize]. A band of BAND rows is transposed to band[x][row * C + c], the sums
 * run over its columns (BAND * C lanes), and the result band is transposed back. tmp:
 * BAND * C * (in_w + out_w) + 8 bytes. Inlined with a constant C. */
static inline __attribute__((always_inline)) TARGET void
NAME(horizontal_bands)(const uint8_t *in, int64_t in_stride, int rows, int in_w, const int C,
                 uint8_t *out, int64_t out_stride, int out_w,
                 const int32_t *xmin, const int32_t *xcount, const int32_t *weights, int ksize, uint8_t *tmp) {
    const int L = BAND * C;                    /* a multiple of 8 */
    uint8_t *band = tmp, *res = tmp + (int64_t)in_w * L;
    for (int r0 = 0; r0 < rows; r0 += BAND) {
        int nr = rows - r0 < BAND ? rows - r0 : BAND;
        const uint8_t *src[BAND];
        for (int r = 0; r < BAND; r++) src[r] = in + (int64_t)(r0 + (r < nr ? r : 0)) * in_stride;
        for (int x = 0; x < in_w; x++) {       /* transpose in, a column at a time */
            uint8_t *col = band + (int64_t)x * L;
            if (C == 3 && x + 1 < in_w)        /* 4-byte moves; the spare byte is overwritten next */
                for (int r = 0; r < BAND; r++) memcpy(col + 3 * r, src[r] + 3 * x, 4);
            else
                for (int r = 0; r < BAND; r++) memcpy(col + C * r, src[r] + (int64_t)C * x, C);
        }
        for (int x = 0; x < out_w; x++)
            NAME(weigh_rows)(band + (int64_t)xmin[x] * L, L, weights + (int64_t)x * ksize, xcount[x], L / 8,
                       res + (int64_t)x * L);
        for (int r = 0; r < nr; r++) {         /* transpose back */
            uint8_t *dst = out + (int64_t)(r0 + r) * out_stride;
            const uint8_t *s = res + C * r;
            int x = 0;
            if (C == 3)
                for (; x + 1 < out_w; x++) memcpy(dst + 3 * x, s + (int64_t)x * L, 4);
            for (; x < out_w; x++) memcpy(dst + (int64_t)C * x, s + (int64_t)x * L, C);
        }
    }
}

TARGET static void NAME(pass_horizontal)(const uint8_t *in, int64_t in_stride, int rows, int in_w, int C,
                            uint8_t *out, int64_t out_stride, int out_w,
                            const int32_t *xmin, const int32_t *xcount, const int32_t *weights,
                            int ksize, uint8_t *tmp) {
    if (C == 3)
        NAME(horizontal_bands)(in, in_stride, rows, in_w, 3, out, out_stride, out_w, xmin, xcount, weights, ksize, tmp);
    else if (C == 1)
        NAME(horizontal_bands)(in, in_stride, rows, in_w, 1, out, out_stride, out_w, xmin, xcount, weights, ksize, tmp);
    else if (C == 4)
        NAME(horizontal_bands)(in, in_stride, rows, in_w, 4, out, out_stride, out_w, xmin, xcount, weights, ksize, tmp);
    else
        NAME(horizontal_bands)(in, in_stride, rows, in_w, 2, out, out_stride, out_w, xmin, xcount, weights, ksize, tmp);
}

/* Vertical pass: output rows [y0, y1) of out (stride out_stride) from `in`, whose row 0 is input
 * row `row0` (stride in_stride); each row is `width` bytes. */
TARGET static void NAME(pass_vertical)(const uint8_t *in, int64_t in_stride, int row0, int width,
                          uint8_t *out, int64_t out_stride, int y0, int y1,
                          const int32_t *ymin, const int32_t *ycount, const int32_t *weights, int ksize) {
    for (int y = y0; y < y1; y++) {
        const int32_t *w = weights + (int64_t)y * ksize;
        const uint8_t *first = in + (int64_t)(ymin[y] - row0) * in_stride;
        uint8_t *dst = out + (int64_t)(y - y0) * out_stride;
        int l = 0;
        for (; l + 64 <= width; l += 64) NAME(weigh_rows)(first + l, in_stride, w, ycount[y], 8, dst + l);
        for (; l + 8 <= width; l += 8) NAME(weigh_rows)(first + l, in_stride, w, ycount[y], 1, dst + l);
        for (; l < width; l++) {               /* the last few bytes of a row */
            int32_t ss = HALF;
            for (int k = 0; k < ycount[y]; k++) ss += w[k] * (int32_t)first[k * in_stride + l];
            dst[l] = clip8(ss);
        }
    }
}

#undef NAME
#undef TARGET
#undef VEC
#undef SPLAT
#undef MULADD
#undef STORE8
