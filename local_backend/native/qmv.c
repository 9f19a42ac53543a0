/* Matrix-vector products of int8 / int4 weights with int8 activations, for a decode step.
 *
 * Why our own kernel: at batch 1 a product is a stream of weights from memory, and PyTorch's
 * weight-only kernels widen every weight to bf16 and multiply in floating point, which on a
 * 2-core AVX-512 machine reads ~17 GB/s where the memory gives ~44. Quantising the activations
 * to int8 in blocks of 32 (one float scale per block, as llama.cpp's Q8_0 activations) lets the
 * inner loop be integer dot products of bytes (AVX-512 VNNI vpdpbusd: 64 multiply-adds per
 * instruction).
 *
 * Tiles: weights are stored 16 rows at a time so that one vector lane holds one row. For each
 * tile and each block of 32 columns, 32-bit word j of lane i holds row i's bytes for columns
 * 4j..4j+3 (int8) or its nibble pairs for columns 8j..8j+7 (int4); a vpdpbusd of that vector
 * with activation word j broadcast adds four products to every row at once. The whole matrix
 * is then one sequential stream (the hardware prefetcher's best case), no lane ever needs a
 * horizontal sum, and a block's activation scale and a group's weight scales are applied once
 * per 16 rows.
 *
 *   int8: wu = w + 128 (vpdpbusd's unsigned operand), tile block = 8 words x 16 rows (512 B);
 *         scale float [Np].  y_n = scale_n * (sum_b d_b dot_b(wu_n, a) - 128 sum_b d_b asum_b)
 *   int4: codes 0..15, two per byte (column 2j low nibble, 2j+1 high, as local_backend/quant.py
 *         stores them), tile block = 4 words x 16 rows (256 B); scale, zero bf16 [Np/16, G, 16]
 *         with w = (c - 8) * scale + zero in each group of g columns.
 *         y_n = sum_g scale_g sum_{b in g} d_b dot_b(c_n, a) + (zero_g - 8 scale_g) xq_g,
 *         xq_g = sum_{b in g} d_b asum_b (the group's sum of the quantised activations).
 * Np is N rounded up to 16 (padding rows are zero), Kp is K rounded up to the group (int4) or
 * 32 (int8), padding columns have zero weight.
 *
 * Activations x [M, K] (float32 or bf16) become a [M, Kp] int8 with scales d [M, Kp/32]; for
 * int4 each block stores its 16 even columns, then its 16 odd ones, to line up with the low
 * and the high nibbles.
 *
 * Threads: OpenMP over tiles, at the thread count of the calling thread (PyTorch's libgomp,
 * which this library shares, so torch.set_num_threads decides).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)
#include <immintrin.h>
#define QMV_VNNI 1
#else
#define QMV_VNNI 0
#endif

#define BLOCK 32 /* columns per activation scale */
#define PREFETCH 16 /* int4 blocks (256 B each) ahead of the one in use */
enum { PLAIN, SPLIT, WIDE }; /* activation layouts (see quantize_row_generic) */
#define TILE 16  /* rows per tile: one per 32-bit lane of a 512-bit vector */

int qmv_simd(void) { return QMV_VNNI; }

static inline float bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Where a quantised activation goes. Narrow (int4 weights): one int8 per column, split
 * blocks storing their even columns then their odd ones. Wide (int8 weights): 15 bits per
 * column, q = 128 hi + lo with hi in -127..127 and lo in -64..63, each block storing its 32
 * hi bytes then its 32 lo bytes (two vpdpbusd per weight vector, no widening of weights). */
#define NARROW_LEVELS 127.0f
#define WIDE_LEVELS 16256.0f /* 127 * 128: hi stays within -127..127 */

static inline int32_t wide_hi(int32_t q) { return (q + 16448) / 128 - 128; } /* floor((q+64)/128) */

/* One row of activations -> codes a [Kp] (narrow) or [2 Kp] (wide), scales d [Kp/32] and the
 * per-block sums of q. Columns past K are zero. */
static void quantize_row_generic(const void *x, int bf16, int64_t k, int64_t kp, int mode,
                                 int8_t *a, float *d, int32_t *asum) {
    float levels = mode == WIDE ? WIDE_LEVELS : NARROW_LEVELS;
    for (int64_t b = 0; b < kp / BLOCK; b++) {
        float v[BLOCK];
        float amax = 0.0f;
        for (int j = 0; j < BLOCK; j++) {
            int64_t col = b * BLOCK + j;
            float f = 0.0f;
            if (col < k) f = bf16 ? bf16_to_f32(((const uint16_t *)x)[col]) : ((const float *)x)[col];
            v[j] = f;
            amax = fabsf(f) > amax ? fabsf(f) : amax;
        }
        float scale = amax / levels;
        float inv = scale > 0.0f ? 1.0f / scale : 0.0f;
        int32_t s = 0;
        for (int j = 0; j < BLOCK; j++) {
            int32_t q = (int32_t)nearbyintf(v[j] * inv);
            s += q;
            if (mode == WIDE) {
                a[2 * b * BLOCK + j] = (int8_t)wide_hi(q);
                a[2 * b * BLOCK + BLOCK + j] = (int8_t)(q - 128 * wide_hi(q));
            } else {
                int at = mode == SPLIT ? (j % 2) * (BLOCK / 2) + j / 2 : j;
                a[b * BLOCK + at] = (int8_t)q;
            }
        }
        d[b] = scale;
        asum[b] = s;
    }
}

#if QMV_VNNI
static inline __m512 load16(const void *x, int bf16, int64_t col) {
    if (bf16)
        return _mm512_castsi512_ps(_mm512_slli_epi32(
            _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)((const uint16_t *)x + col))),
            16));
    return _mm512_loadu_ps((const float *)x + col);
}

/* quantize_row_generic's results, 32 columns per step; the ragged end goes the generic way. */
static void quantize_row(const void *x, int bf16, int64_t k, int64_t kp, int mode, int8_t *a,
                         float *d, int32_t *asum) {
    const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    const __m512 sign = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
    const __m512i bias = _mm512_set1_epi32(64);
    float levels = mode == WIDE ? WIDE_LEVELS : NARROW_LEVELS;
    int width = mode == WIDE ? 2 : 1;
    int64_t whole = k / BLOCK;
    for (int64_t b = 0; b < whole; b++) {
        __m512 v0 = load16(x, bf16, b * BLOCK), v1 = load16(x, bf16, b * BLOCK + 16);
        __m512 m = _mm512_max_ps(_mm512_and_ps(v0, sign), _mm512_and_ps(v1, sign));
        float amax = _mm512_reduce_max_ps(m);
        float scale = amax / levels;
        __m512 inv = _mm512_set1_ps(scale > 0.0f ? 1.0f / scale : 0.0f);
        if (mode == SPLIT) {
            __m512 e = _mm512_permutex2var_ps(v0, even, v1), o = _mm512_permutex2var_ps(v0, odd, v1);
            v0 = e;
            v1 = o;
        }
        __m512i q0 = _mm512_cvtps_epi32(_mm512_mul_ps(v0, inv));
        __m512i q1 = _mm512_cvtps_epi32(_mm512_mul_ps(v1, inv));
        int8_t *out = a + width * b * BLOCK;
        if (mode == WIDE) {
            __m512i h0 = _mm512_srai_epi32(_mm512_add_epi32(q0, bias), 7);
            __m512i h1 = _mm512_srai_epi32(_mm512_add_epi32(q1, bias), 7);
            _mm_storeu_si128((__m128i *)out, _mm512_cvtsepi32_epi8(h0));
            _mm_storeu_si128((__m128i *)(out + 16), _mm512_cvtsepi32_epi8(h1));
            _mm_storeu_si128((__m128i *)(out + 32),
                             _mm512_cvtsepi32_epi8(_mm512_sub_epi32(q0, _mm512_slli_epi32(h0, 7))));
            _mm_storeu_si128((__m128i *)(out + 48),
                             _mm512_cvtsepi32_epi8(_mm512_sub_epi32(q1, _mm512_slli_epi32(h1, 7))));
        } else {
            _mm_storeu_si128((__m128i *)out, _mm512_cvtsepi32_epi8(q0));
            _mm_storeu_si128((__m128i *)(out + 16), _mm512_cvtsepi32_epi8(q1));
        }
        d[b] = scale;
        asum[b] = _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
    }
    if (whole * BLOCK < kp) {
        size_t bytes = bf16 ? 2 : 4;
        quantize_row_generic((const char *)x + whole * BLOCK * bytes, bf16, k - whole * BLOCK,
                             kp - whole * BLOCK, mode, a + width * whole * BLOCK, d + whole,
                             asum + whole);
    }
}
#else
#define quantize_row quantize_row_generic
#endif

typedef struct {
    int8_t *a;     /* [M, Kp] (narrow) or [M, 2 Kp] (wide) */
    float *d;      /* [M, Kp/32] */
    int32_t *asum; /* [M, Kp/32] */
} Activations;

static int quantize_all(const void *x, int bf16, int64_t m, int64_t k, int64_t kp, int mode,
                        Activations *out) {
    int64_t nb = kp / BLOCK, stride = (mode == WIDE ? 2 : 1) * kp;
    out->a = aligned_alloc(64, (size_t)((m * stride + 63) / 64 * 64));
    out->d = malloc(sizeof(float) * (size_t)(m * nb));
    out->asum = malloc(sizeof(int32_t) * (size_t)(m * nb));
    if (!out->a || !out->d || !out->asum) return -1;
    size_t row_bytes = (size_t)k * (bf16 ? 2 : 4);
    for (int64_t i = 0; i < m; i++)
        quantize_row((const char *)x + i * row_bytes, bf16, k, kp, mode, out->a + i * stride,
                     out->d + i * nb, out->asum + i * nb);
    return 0;
}

static void release(Activations *act) {
    free(act->a);
    free(act->d);
    free(act->asum);
}

static inline uint16_t f32_to_bf16(float f) { /* round to nearest even, as PyTorch */
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

/* Where a product's rows go: y [M, N] (float32 or bf16), or y = residual + alpha * W x with
 * residual in y's dtype (the decode step's fused residual add; one rounding). */
typedef struct {
    void *y;
    int bf16;
    const void *residual; /* NULL: none */
    float alpha;
    int64_t n;
} Output;

static void store_tile(const Output *o, int64_t row, int64_t n0, const float *v) {
    int64_t count = o->n - n0 < TILE ? o->n - n0 : TILE;
    int64_t at = row * o->n + n0;
    for (int64_t r = 0; r < count; r++) {
        float f = v[r];
        if (o->residual) {
            float base = o->bf16 ? bf16_to_f32(((const uint16_t *)o->residual)[at + r])
                                 : ((const float *)o->residual)[at + r];
            f = base + o->alpha * f;
        }
        if (o->bf16)
            ((uint16_t *)o->y)[at + r] = f32_to_bf16(f);
        else
            ((float *)o->y)[at + r] = f;
    }
}

/* ---- int8 ------------------------------------------------------------------------------ */

static void int8_tile(const uint8_t *w, const float *scale, int64_t nb, const int8_t *a,
                      const float *d, const int32_t *asum, float *out) {
#if QMV_VNNI
    __m512 acc = _mm512_setzero_ps();
    float corr = 0.0f;
    for (int64_t b = 0; b < nb; b++) {
        const __m512i *wv = (const __m512i *)(w + b * 512);
        const int32_t *hi = (const int32_t *)(a + 2 * b * BLOCK), *lo = hi + 8;
        __m512i sh = _mm512_setzero_si512(), sl = _mm512_setzero_si512();
        for (int j = 0; j < 8; j++) {
            __m512i v = _mm512_loadu_si512(wv + j);
            sh = _mm512_dpbusd_epi32(sh, v, _mm512_set1_epi32(hi[j]));
            sl = _mm512_dpbusd_epi32(sl, v, _mm512_set1_epi32(lo[j]));
        }
        __m512 dot = _mm512_cvtepi32_ps(_mm512_add_epi32(_mm512_slli_epi32(sh, 7), sl));
        acc = _mm512_fmadd_ps(dot, _mm512_set1_ps(d[b]), acc);
        corr += d[b] * (float)asum[b];
    }
    acc = _mm512_sub_ps(acc, _mm512_set1_ps(128.0f * corr));
    _mm512_storeu_ps(out, _mm512_mul_ps(acc, _mm512_loadu_ps(scale)));
#else
    float acc[TILE] = {0};
    float corr = 0.0f;
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = w + b * 512;
        const int8_t *hi = a + 2 * b * BLOCK, *lo = hi + BLOCK;
        for (int r = 0; r < TILE; r++) {
            int32_t dot = 0;
            for (int j = 0; j < 8; j++)
                for (int t = 0; t < 4; t++)
                    dot += blk[(j * TILE + r) * 4 + t] * (128 * hi[4 * j + t] + lo[4 * j + t]);
            acc[r] += d[b] * (float)dot;
        }
        corr += d[b] * (float)asum[b];
    }
    for (int r = 0; r < TILE; r++) out[r] = scale[r] * (acc[r] - 128.0f * corr);
#endif
}

/* y [M, N] = x [M, K] @ W.T (+ residual) for int8 W in tiles (layout above); 0, or -1 when
 * out of memory. */
int qmv_int8(const uint8_t *w, const float *scale, int64_t n, int64_t k, int64_t kp,
             const void *x, int x_bf16, int64_t m, void *y, int y_bf16, const void *residual,
             float alpha) {
    Output o = {y, y_bf16, residual, alpha, n};
    Activations act;
    if (quantize_all(x, x_bf16, m, k, kp, WIDE, &act) != 0) {
        release(&act);
        return -1;
    }
    int64_t nb = kp / BLOCK, tiles = (n + TILE - 1) / TILE;
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < tiles; t++) {
        float out[TILE];
        for (int64_t i = 0; i < m; i++) {
            int8_tile(w + t * nb * 512, scale + t * TILE, nb, act.a + 2 * i * kp, act.d + i * nb,
                      act.asum + i * nb, out);
            store_tile(&o, i, t * TILE, out);
        }
    }
    release(&act);
    return 0;
}

/* ---- int4 ------------------------------------------------------------------------------ */

static void int4_tile(const uint8_t *q, const uint16_t *scale, const uint16_t *zero,
                      int64_t nb, int g, const int8_t *a, const float *d, const int32_t *asum,
                      float *out) {
    int per_group = g / BLOCK;
    int64_t groups = nb / per_group;
#if QMV_VNNI
    const __m512i low = _mm512_set1_epi8(0x0F);
    __m512 acc = _mm512_setzero_ps();
    for (int64_t gi = 0; gi < groups; gi++) {
        __m512 part = _mm512_setzero_ps();
        float xq = 0.0f;
        for (int bi = 0; bi < per_group; bi++) {
            int64_t b = gi * per_group + bi;
            const __m512i *wv = (const __m512i *)(q + b * 256);
            for (int l = 0; l < 4; l++) /* a few blocks ahead: measured 15-20% faster */
                _mm_prefetch((const char *)(q + (b + PREFETCH) * 256 + 64 * l), _MM_HINT_T0);
            const int32_t *even = (const int32_t *)(a + b * BLOCK);
            const int32_t *odd = even + 4;
            __m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
            for (int j = 0; j < 4; j++) {
                __m512i v = _mm512_loadu_si512(wv + j);
                __m512i lo = _mm512_and_si512(v, low);
                __m512i hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), low);
                s0 = _mm512_dpbusd_epi32(s0, lo, _mm512_set1_epi32(even[j]));
                s1 = _mm512_dpbusd_epi32(s1, hi, _mm512_set1_epi32(odd[j]));
            }
            __m512 dot = _mm512_cvtepi32_ps(_mm512_add_epi32(s0, s1));
            part = _mm512_fmadd_ps(dot, _mm512_set1_ps(d[b]), part);
            xq += d[b] * (float)asum[b];
        }
        __m512 sc = _mm512_castsi512_ps(_mm512_slli_epi32(
            _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(scale + gi * TILE))), 16));
        __m512 zr = _mm512_castsi512_ps(_mm512_slli_epi32(
            _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(zero + gi * TILE))), 16));
        acc = _mm512_fmadd_ps(part, sc, acc);
        __m512 offset = _mm512_fmadd_ps(sc, _mm512_set1_ps(-8.0f), zr);
        acc = _mm512_fmadd_ps(offset, _mm512_set1_ps(xq), acc);
    }
    _mm512_storeu_ps(out, acc);
#else
    float acc[TILE] = {0};
    for (int64_t gi = 0; gi < groups; gi++) {
        float part[TILE] = {0};
        float xq = 0.0f;
        for (int bi = 0; bi < per_group; bi++) {
            int64_t b = gi * per_group + bi;
            const uint8_t *blk = q + b * 256;
            const int8_t *even = a + b * BLOCK, *odd = even + BLOCK / 2;
            for (int r = 0; r < TILE; r++) {
                int32_t dot = 0;
                for (int j = 0; j < 4; j++)
                    for (int t = 0; t < 4; t++) {
                        uint8_t byte = blk[(j * TILE + r) * 4 + t];
                        dot += (byte & 0x0F) * even[4 * j + t] + (byte >> 4) * odd[4 * j + t];
                    }
                part[r] += d[b] * (float)dot;
            }
            xq += d[b] * (float)asum[b];
        }
        for (int r = 0; r < TILE; r++) {
            float s = bf16_to_f32(scale[gi * TILE + r]), z = bf16_to_f32(zero[gi * TILE + r]);
            acc[r] += s * part[r] + (z - 8.0f * s) * xq;
        }
    }
    for (int r = 0; r < TILE; r++) out[r] = acc[r];
#endif
}

/* As qmv_int8, for int4 W in tiles; scale/zero bf16 [Np/16, G, 16]. */
int qmv_int4(const uint8_t *q, const uint16_t *scale, const uint16_t *zero, int64_t n, int64_t k,
             int64_t kp, int g, const void *x, int x_bf16, int64_t m, void *y, int y_bf16,
             const void *residual, float alpha) {
    Output o = {y, y_bf16, residual, alpha, n};
    Activations act;
    if (quantize_all(x, x_bf16, m, k, kp, SPLIT, &act) != 0) {
        release(&act);
        return -1;
    }
    int64_t nb = kp / BLOCK, groups = kp / g, tiles = (n + TILE - 1) / TILE;
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < tiles; t++) {
        float out[TILE];
        for (int64_t i = 0; i < m; i++) {
            int4_tile(q + t * nb * 256, scale + t * groups * TILE, zero + t * groups * TILE, nb, g,
                      act.a + i * kp, act.d + i * nb, act.asum + i * nb, out);
            store_tile(&o, i, t * TILE, out);
        }
    }
    release(&act);
    return 0;
}

/* ---- dense (bf16 and float32) ---------------------------------------------------------- */

typedef void (*DenseRows)(const void *w, int64_t k, int64_t n0, int64_t n1, const void *x,
                          float *out);

/* Rows n0..n1 of a dense product, 16 at a time over the threads, into the output. */
static void dense_product(DenseRows rows, const void *w, int64_t n, int64_t k, const void *x,
                          const Output *o) {
    int64_t tiles = (n + TILE - 1) / TILE;
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < tiles; t++) {
        float out[TILE];
        int64_t n0 = t * TILE, n1 = n0 + TILE < n ? n0 + TILE : n;
        rows(w, k, n0, n1, x, out);
        store_tile(o, 0, n0, out);
    }
}

/* y = W x for a dense bf16 W [N, K], row-major as the model holds it (prefill's GEMM reads the
 * same tensor), one vector x: PyTorch's bf16 matrix-vector paths widen and multiply at ~10 GB/s
 * on AVX-512 CPUs without AMX; AVX512-BF16's vdpbf16ps multiplies pairs of bf16 into float32
 * lanes directly. */
#if defined(__AVX512F__) && defined(__AVX512BF16__)
#define QMV_DENSE_BF16 1
#else
#define QMV_DENSE_BF16 0
#endif

int qmv_dense_simd(void) { return QMV_DENSE_BF16; }

static void dense_rows_bf16(const void *wv, int64_t k, int64_t n0, int64_t n1, const void *xv,
                            float *out) {
    const uint16_t *w = wv, *xb = xv;
#if QMV_DENSE_BF16
    int64_t whole = k / 128 * 128;
    for (int64_t n = n0; n < n1; n++) { /* row after row: the matrix is one sequential stream */
        const uint16_t *row = w + n * k;
        __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
        __m512 a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
        int64_t c = 0;
        for (; c < whole; c += 128) { /* four chains hide vdpbf16ps's latency */
            a0 = _mm512_dpbf16_ps(a0, (__m512bh)_mm512_loadu_si512((const void *)(row + c)),
                                  (__m512bh)_mm512_loadu_si512((const void *)(xb + c)));
            a1 = _mm512_dpbf16_ps(a1, (__m512bh)_mm512_loadu_si512((const void *)(row + c + 32)),
                                  (__m512bh)_mm512_loadu_si512((const void *)(xb + c + 32)));
            a2 = _mm512_dpbf16_ps(a2, (__m512bh)_mm512_loadu_si512((const void *)(row + c + 64)),
                                  (__m512bh)_mm512_loadu_si512((const void *)(xb + c + 64)));
            a3 = _mm512_dpbf16_ps(a3, (__m512bh)_mm512_loadu_si512((const void *)(row + c + 96)),
                                  (__m512bh)_mm512_loadu_si512((const void *)(xb + c + 96)));
        }
        for (; c < k; c += 32) {
            __mmask32 m = k - c >= 32 ? 0xffffffffu : (__mmask32)((1u << (k - c)) - 1);
            a0 = _mm512_dpbf16_ps(a0, (__m512bh)_mm512_maskz_loadu_epi16(m, row + c),
                                  (__m512bh)_mm512_maskz_loadu_epi16(m, xb + c));
        }
        out[n - n0] = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
    }
#else
    for (int64_t n = n0; n < n1; n++) {
        float acc = 0.0f;
        for (int64_t c = 0; c < k; c++) acc += bf16_to_f32(w[n * k + c]) * bf16_to_f32(xb[c]);
        out[n - n0] = acc;
    }
#endif
}

/* y [N] = W x (+ residual) for a dense row-major bf16 W; x float32 or bf16 (rounded to bf16,
 * the weights' precision, as a bf16 model's activations are). 0, or -1 out of memory. */
int qmv_dense_bf16(const uint16_t *w, int64_t n, int64_t k, const void *x, int x_bf16, void *y,
                   int y_bf16, const void *residual, float alpha) {
    uint16_t *xb = malloc(sizeof(uint16_t) * (size_t)(k + 32));
    if (!xb) return -1;
    for (int64_t c = 0; c < k; c++)
        xb[c] = x_bf16 ? ((const uint16_t *)x)[c] : f32_to_bf16(((const float *)x)[c]);
    Output o = {y, y_bf16, residual, alpha, n};
    dense_product(dense_rows_bf16, w, n, k, xb, &o);
    free(xb);
    return 0;
}

/* y = W x for a dense float32 W [N, K], row-major, x float32: for small models, whose matrices
 * sit in the caches and whose cost is the call, not the bytes (torch.mv measured 20-28 us on
 * the bundled model's 256-1024 KB matrices). Rows in order, four accumulators per row. */
#if defined(__AVX512F__)
#define QMV_DENSE_F32 1
#else
#define QMV_DENSE_F32 0
#endif

int qmv_dense_f32_simd(void) { return QMV_DENSE_F32; }

static void dense_rows_f32(const void *wv, int64_t k, int64_t n0, int64_t n1, const void *xv,
                           float *out) {
    const float *w = wv, *x = xv;
#if QMV_DENSE_F32
    int64_t whole = k / 64 * 64;
    for (int64_t n = n0; n < n1; n++) {
        const float *row = w + n * k;
        __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
        __m512 a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
        int64_t c = 0;
        for (; c < whole; c += 64) {
            a0 = _mm512_fmadd_ps(_mm512_loadu_ps(row + c), _mm512_loadu_ps(x + c), a0);
            a1 = _mm512_fmadd_ps(_mm512_loadu_ps(row + c + 16), _mm512_loadu_ps(x + c + 16), a1);
            a2 = _mm512_fmadd_ps(_mm512_loadu_ps(row + c + 32), _mm512_loadu_ps(x + c + 32), a2);
            a3 = _mm512_fmadd_ps(_mm512_loadu_ps(row + c + 48), _mm512_loadu_ps(x + c + 48), a3);
        }
        for (; c < k; c += 16) {
            __mmask16 m = k - c >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (k - c)) - 1);
            a0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, row + c), _mm512_maskz_loadu_ps(m, x + c), a0);
        }
        out[n - n0] = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
    }
#else
    for (int64_t n = n0; n < n1; n++) {
        float acc = 0.0f;
        for (int64_t c = 0; c < k; c++) acc += w[n * k + c] * x[c];
        out[n - n0] = acc;
    }
#endif
}

/* y [N] = W x (+ residual) for a dense row-major float32 W and x; y float32. */
int qmv_dense_f32(const float *w, int64_t n, int64_t k, const float *x, void *y,
                  const void *residual, float alpha) {
    Output o = {y, 0, residual, alpha, n};
    dense_product(dense_rows_f32, w, n, k, x, &o);
    return 0;
}
