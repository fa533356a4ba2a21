/* CPU twin of the GPU renderers: the same shared logic (render_common.h), multi-threaded over
 * events with OpenMP. Built and loaded by kernels/cpu.py (g++ -O3 -fopenmp -ffp-contract=off).
 *
 * An event image is drawn row by row: every object whose bounding box holds the row is composited,
 * in slot order, onto a float row (C runs of W, one per thread, in L1 cache) over the object's
 * columns, which applies the objects to every pixel in the same order and with the same arithmetic
 * as the GPU's per-pixel loop. The row is then written out: the background row in the output type,
 * with the columns the objects reached converted over it; those columns go back to the background.
 * Output: float32 or uint8, NCHW or channels-last. With AVX2 the coverage, blending and uint8
 * conversion run 8 pixels at a time with the same IEEE operations in the same order (max/min of the
 * x86 instructions are exactly the header's comparisons), so the values are bit for bit the scalar
 * ones. Every thread flushes subnormals to zero while it draws, as the kernels do. All entry points
 * return the number of skipped objects (see render_common.h).
 */
#include <stdlib.h>
#include <string.h>
#include <algorithm>
#include <vector>
#if defined(__AVX2__)
#include <immintrin.h>
#endif
#include "render_common.h"

namespace {

constexpr int LANES = 8;                /* pixels per vector step */

/* One image row in float: C runs of `stride` >= W + LANES floats (the vector loops may read and
 * write, unchanged, up to LANES - 1 columns past the last one), and the objects' coverage. Between
 * rows it holds the background in columns 0..W-1. */
struct Row {
    int W, C, stride;
    std::vector<float> acc, cov;
    Row(int w, int c, const float* bg)
        : W(w), C(c), stride((w + 2 * LANES - 1) / LANES * LANES), acc((size_t)stride * c), cov(stride) {
        for (int k = 0; k < c; ++k) std::fill(plane(k), plane(k) + stride, bg[k]);
    }
    float* plane(int c) { return &acc[(size_t)c * stride]; }
};

/* The object's coverage of columns x0..x1 of a row at offset dy (rc_coverage). */
void coverage_span(const RcObject& o, float dy, int x0, int x1, float* __restrict cov) {
    int i = x0;
#if defined(__AVX2__)
    const __m256 cx = _mm256_set1_ps(o.cx), r = _mm256_set1_ps(o.r), dy2 = _mm256_set1_ps(dy * dy);
    const __m256 edge = _mm256_set1_ps(o.hw + 0.5f), half = _mm256_set1_ps(0.5f), zero = _mm256_setzero_ps();
    const __m256 sign = _mm256_set1_ps(-0.0f), one = _mm256_set1_ps(1.0f);
    const __m256i step = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for (; i <= x1; i += LANES) {
        const __m256 x = _mm256_cvtepi32_ps(_mm256_add_epi32(_mm256_set1_epi32(i), step));
        const __m256 dx = _mm256_sub_ps(_mm256_add_ps(x, half), cx);
        const __m256 d = _mm256_sqrt_ps(_mm256_add_ps(_mm256_mul_ps(dx, dx), dy2));
        const __m256 e = _mm256_sub_ps(d, r);
        const __m256 dist = o.filled ? _mm256_max_ps(e, zero) : _mm256_andnot_ps(sign, e);
        const __m256 a = _mm256_sub_ps(edge, dist);
        _mm256_storeu_ps(cov + i, _mm256_min_ps(one, _mm256_max_ps(zero, a)));
    }
#endif
    for (; i <= x1; ++i) cov[i] = rc_coverage(&o, rc_dx(&o, i), dy);
}

/* row[i] = rc_over(row[i], colour, cov[i]) for columns x0..x1 (lanes past x1 keep their value). */
void blend_span(float* __restrict row, float colour, const float* __restrict cov, int x0, int x1) {
    int i = x0;
#if defined(__AVX2__)
    const __m256 col = _mm256_set1_ps(colour), one = _mm256_set1_ps(1.0f);
    const __m256i last = _mm256_set1_epi32(x1), step = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for (; i <= x1; i += LANES) {
        const __m256 v = _mm256_loadu_ps(row + i), a = _mm256_loadu_ps(cov + i);
        const __m256 blended = _mm256_add_ps(_mm256_mul_ps(v, _mm256_sub_ps(one, a)), _mm256_mul_ps(col, a));
        const __m256i beyond = _mm256_cmpgt_epi32(_mm256_add_epi32(_mm256_set1_epi32(i), step), last);
        _mm256_storeu_ps(row + i, _mm256_blendv_ps(blended, v, _mm256_castsi256_ps(beyond)));
    }
#endif
    for (; i <= x1; ++i) row[i] = rc_over(row[i], colour, cov[i]);
}

void paint_span(Row& row, const RcObject& o, float dy, int x0, int x1) {
    if (x0 > x1) return;
    coverage_span(o, dy, x0, x1, row.cov.data());
    for (int c = 0; c < row.C; ++c) {
        float colour;
        if (rc_channel_colour(&o, c, &colour)) blend_span(row.plane(c), colour, row.cov.data(), x0, x1);
    }
}

/* Columns hole0..hole1 of row offset dy lie inside an outline's inner edge with a margin of a
 * pixel, so their coverage is exactly 0, and 'over' with 0 leaves a value unchanged bit for bit:
 * skipping them gives the GPU's result. Empty (hole0 > hole1) for filled circles and thin rings. */
void ring_hole(const RcObject* o, float dy, int* hole0, int* hole1) {
    *hole0 = 1;
    *hole1 = 0;
    const float inner = o->r - o->hw - 0.5f;
    if (o->filled || inner <= 0.0f || inner * inner <= dy * dy) return;
    const float half = sqrtf(inner * inner - dy * dy) - 1.0f;
    if (half <= 1.0f) return;
    *hole0 = (int)ceilf(o->cx - half);
    *hole1 = (int)floorf(o->cx + half) - 1;
}

/* Composite the object onto row j (which its box holds). */
void paint_row(Row& row, const RcObject& o, int j, int H) {
    const float dy = rc_dy(&o, j, H);
    int hole0, hole1;
    ring_hole(&o, dy, &hole0, &hole1);
    hole0 = std::max(hole0, o.x0);
    hole1 = std::min(hole1, o.x1);
    if (hole0 > hole1) {
        paint_span(row, o, dy, o.x0, o.x1);
    } else {
        paint_span(row, o, dy, o.x0, hole0 - 1);
        paint_span(row, o, dy, hole1 + 1, o.x1);
    }
}

template <typename T>
inline T convert(float v);
template <>
inline float convert<float>(float v) { return v; }
template <>
inline unsigned char convert<unsigned char>(float v) { return rc_to_u8(v); }

#if defined(__AVX2__)
/* rc_to_u8 of 8 floats, as int32: max_ps(0, x) is x < 0 ? 0 : x and min_ps(1, x) is x > 1 ? 1 : x
 * (NaN included), then the same * 255 + 0.5 (not fused) and truncation. */
inline __m256i to_u8x8(const float* src) {
    __m256 v = _mm256_max_ps(_mm256_setzero_ps(), _mm256_loadu_ps(src));
    v = _mm256_min_ps(_mm256_set1_ps(1.0f), v);
    v = _mm256_add_ps(_mm256_mul_ps(v, _mm256_set1_ps(255.0f)), _mm256_set1_ps(0.5f));
    return _mm256_cvttps_epi32(v);
}
#endif

/* dst[i] = rc_to_u8(src[i]), i < n. */
void u8_run(const float* __restrict src, unsigned char* __restrict dst, int n) {
    int i = 0;
#if defined(__AVX2__)
    for (; i + LANES <= n; i += LANES) {
        const __m256i k = to_u8x8(src + i);
        const __m128i w = _mm_packus_epi32(_mm256_castsi256_si128(k), _mm256_extracti128_si256(k, 1));
        _mm_storel_epi64((__m128i*)(dst + i), _mm_packus_epi16(w, w));
    }
#endif
    for (; i < n; ++i) dst[i] = rc_to_u8(src[i]);
}

/* dst[3i + c] = rc_to_u8(plane c [i]), i < n: 8 pixels as 0BGR words packed to 24 bytes by two
 * overlapping 16-byte stores; the 4 bytes a block writes past its pixels belong to pixels the
 * next block (or the scalar tail, at least 2 pixels) writes afterwards. */
void u8_rgb(const float* __restrict r, const float* __restrict g, const float* __restrict b,
            unsigned char* __restrict dst, int n) {
    int i = 0;
#if defined(__AVX2__)
    const __m256i pack = _mm256_setr_epi8(0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, -1, -1, -1, -1,
                                          0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, -1, -1, -1, -1);
    for (; i + LANES + 2 <= n; i += LANES) {
        __m256i px = _mm256_or_si256(to_u8x8(r + i), _mm256_slli_epi32(to_u8x8(g + i), 8));
        px = _mm256_shuffle_epi8(_mm256_or_si256(px, _mm256_slli_epi32(to_u8x8(b + i), 16)), pack);
        _mm_storeu_si128((__m128i*)(dst + 3 * i), _mm256_castsi256_si128(px));
        _mm_storeu_si128((__m128i*)(dst + 3 * i + 12), _mm256_extracti128_si256(px, 1));
    }
#endif
    for (; i < n; ++i) {
        dst[3 * i] = rc_to_u8(r[i]);
        dst[3 * i + 1] = rc_to_u8(g[i]);
        dst[3 * i + 2] = rc_to_u8(b[i]);
    }
}

/* Row j of the image: the background row, then columns lo..hi of the float row converted over it
 * (NCHW: C runs; channels-last: interleaved); those columns go back to the background. */
template <typename T>
void write_row(Row& row, const float* bg, const T* bg_row, int j, int H, int lo, int hi, T* out,
               int channels_last) {
    const int W = row.W, C = row.C, n = hi - lo + 1;
    if (channels_last) {
        T* dst = out + (size_t)j * W * C;
        memcpy(dst, bg_row, sizeof(T) * W * C);
        if (n <= 0) return;
        dst += (size_t)lo * C;
        if (sizeof(T) == 1 && C == 3) {
            u8_rgb(row.plane(0) + lo, row.plane(1) + lo, row.plane(2) + lo, (unsigned char*)dst, n);
        } else {
            for (int c = 0; c < C; ++c)
                for (int i = 0; i < n; ++i) dst[(size_t)i * C + c] = convert<T>(row.plane(c)[lo + i]);
        }
    } else {
        for (int c = 0; c < C; ++c) {
            T* dst = out + ((size_t)c * H + j) * W;
            memcpy(dst, bg_row + (size_t)c * W, sizeof(T) * W);
            if (n <= 0) continue;
            if constexpr (sizeof(T) == 1) u8_run(row.plane(c) + lo, dst + lo, n);
            else memcpy(dst + lo, row.plane(c) + lo, sizeof(float) * n);
        }
    }
    for (int c = 0; c < C && n > 0; ++c) std::fill(row.plane(c) + lo, row.plane(c) + hi + 1, bg[c]);
}

/* One row of background in the output type: NCHW (C runs of W) or channels-last (W runs of C). */
template <typename T>
std::vector<T> background_row(const float* bg, int W, int C, int channels_last) {
    std::vector<T> row((size_t)W * C);
    for (int i = 0; i < W; ++i)
        for (int c = 0; c < C; ++c) row[channels_last ? (size_t)i * C + c : (size_t)c * W + i] = convert<T>(bg[c]);
    return row;
}

template <typename T>
long long render_events(const signed char* types, const float* feats, const int* counts, long long B,
                        int N, int F, const float* P, unsigned long long seed, long long index_offset,
                        int augment, T* out, int channels_last, int threads) {
    const int W = (int)P[RC_P_WIDTH], H = (int)P[RC_P_HEIGHT], C = (int)P[RC_P_CHANNELS];
    const float* bg = P + RC_P_BACKGROUND;
    long long skipped = 0;
#pragma omp parallel num_threads(threads) reduction(+ : skipped)
    {
        RcFlushSubnormals flush;
        Row row(W, C, bg);
        RcObject objs[RC_MAX_OBJECTS];
        const std::vector<T> bg_row = background_row<T>(bg, W, C, channels_last);
#pragma omp for schedule(static)
        for (long long b = 0; b < B; ++b) {
            float delta = 0.0f;
            int flip = 0, bad = 0;
            if (augment) rc_augment_params(seed, index_offset + b, &delta, &flip);
            int n = rc_stage_event(types + b * N, feats + b * N * F, counts[b], N, F, P, augment,
                                   delta, flip, objs, &bad);
            skipped += bad;
            T* image = out + b * (long long)W * H * C;
            n = std::remove_if(objs, objs + n, [](const RcObject& o) { return o.x0 > o.x1; }) - objs;
            for (int j = 0; j < H; ++j) {
                int lo = W, hi = -1;
                for (int k = 0; k < n; ++k) {
                    const int t = j - objs[k].y0;
                    if ((t < 0 ? t + H : t) >= objs[k].rows) continue;
                    lo = std::min(lo, objs[k].x0);
                    hi = std::max(hi, objs[k].x1);
                    paint_row(row, objs[k], j, H);
                }
                write_row<T>(row, bg, bg_row.data(), j, H, lo, hi, image, channels_last);
            }
        }
    }
    return skipped;
}

template <typename T>
long long render_jets(const float* cons, const int* counts, const float* fatjet, long long B, int M,
                      int F, const float* P, T* out, int threads) {
    const int S = (int)P[RC_P_WIDTH];
    long long skipped = 0;
#pragma omp parallel num_threads(threads) reduction(+ : skipped)
    {
        RcFlushSubnormals flush;
        std::vector<float> acc((size_t)S * S, 0.0f);
        float x[RC_MAX_CONSTITUENTS], y[RC_MAX_CONSTITUENTS], w[RC_MAX_CONSTITUENTS];
        int pix[RC_MAX_CONSTITUENTS];
#pragma omp for schedule(static)
        for (long long b = 0; b < B; ++b) {
            int bad = 0;
            int n = rc_stage_jet(cons + b * M * F, counts[b], M, F, fatjet + b * RC_FJ_WIDTH, P, x, y, w,
                                 pix, &bad);
            skipped += bad;
            for (int k = 0; k < n; ++k) if (pix[k] >= 0) acc[pix[k]] = acc[pix[k]] + w[k];
            T* img = out + b * (long long)S * S;
            if constexpr (sizeof(T) == 1) u8_run(acc.data(), img, S * S);
            else memcpy(img, acc.data(), sizeof(float) * S * S);
            for (int k = 0; k < n; ++k) if (pix[k] >= 0) acc[pix[k]] = 0.0f;
        }
    }
    return skipped;
}

}  // namespace

extern "C" {

int rc_abi_version(void) { return 1; }

/* out_dtype: 0 float32, 3 uint8 (the GPU's DT codes). */
long long rc_render_events(const signed char* types, const float* feats, const int* counts, long long B,
                           int N, int F, const float* params, unsigned long long seed,
                           long long index_offset, int augment, void* out, int out_dtype,
                           int channels_last, int threads) {
    if (out_dtype == 3)
        return render_events<unsigned char>(types, feats, counts, B, N, F, params, seed, index_offset,
                                            augment, (unsigned char*)out, channels_last, threads);
    return render_events<float>(types, feats, counts, B, N, F, params, seed, index_offset, augment,
                                (float*)out, channels_last, threads);
}

long long rc_render_jets(const float* cons, const int* counts, const float* fatjet, long long B, int M,
                         int F, const float* params, void* out, int out_dtype, int threads) {
    if (out_dtype == 3)
        return render_jets<unsigned char>(cons, counts, fatjet, B, M, F, params, (unsigned char*)out, threads);
    return render_jets<float>(cons, counts, fatjet, B, M, F, params, (float*)out, threads);
}

/* The augmentation drawn for event `index` (for tests and provenance). */
void rc_augment(unsigned long long seed, long long index, float* delta, int* flip) {
    rc_augment_params(seed, index, delta, flip);
}

}  // extern "C"
