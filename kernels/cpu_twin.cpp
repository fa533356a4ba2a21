/* CPU twin of the GPU renderers: the same shared logic (render_common.h), multi-threaded over
 * events with OpenMP. Built and loaded by kernels/cpu.py (g++ -O3 -fopenmp -ffp-contract=off).
 *
 * An event image is composited in a float accumulator (planar, one per thread), object by object
 * over each object's bounding box (rows wrapped around phi), which applies the objects to every
 * pixel in the same order and with the same arithmetic as the GPU's per-pixel loop. Rows no object
 * touches are copied from a background row. Output: float32 or uint8, NCHW or
 * channels-last. All entry points return the number of skipped objects (see render_common.h).
 */
#include <stdlib.h>
#include <string.h>
#include <vector>
#include "render_common.h"

namespace {

struct Canvas {
    int W, H, C;
    std::vector<float> acc;            /* C planes of H x W */
    std::vector<char> touched;         /* rows drawn on (the others are background) */
    Canvas(int w, int h, int c) : W(w), H(h), C(c), acc((size_t)w * h * c), touched(h) {}
};

void paint_span(Canvas& cv, const RcObject* o, int j, float dy, int x0, int x1, float* __restrict cov) {
    const int W = cv.W, H = cv.H;
    for (int i = x0; i <= x1; ++i) cov[i] = rc_coverage(o, rc_dx(o, i), dy);
    for (int c = 0; c < cv.C; ++c) {
        float colour;
        if (!rc_channel_colour(o, c, &colour)) continue;
        float* __restrict row = &cv.acc[((size_t)c * H + j) * W];
        for (int i = x0; i <= x1; ++i) row[i] = rc_over(row[i], colour, cov[i]);
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

/* The first object to touch row j resets the whole row to the background (whole rows keep the
 * conversion loops free of scalar remainders). */
void touch_row(Canvas& cv, int j, const float* bg) {
    if (cv.touched[j]) return;
    for (int c = 0; c < cv.C; ++c) {
        float* __restrict row = &cv.acc[((size_t)c * cv.H + j) * cv.W];
        for (int i = 0; i < cv.W; ++i) row[i] = bg[c];
    }
    cv.touched[j] = 1;
}

void paint_object(Canvas& cv, const RcObject* object, const float* bg, float* __restrict cov) {
    const RcObject local = *object;      /* a private copy: no aliasing with the rows, so loops vectorise */
    const RcObject* o = &local;
    const int H = cv.H;
    if (o->x0 > o->x1) return;                     /* entirely off the canvas in eta */
    for (int t = 0; t < o->rows; ++t) {
        int j = o->y0 + t;
        if (j >= H) j -= H;
        touch_row(cv, j, bg);
        const float dy = rc_dy(o, j, H);
        int hole0, hole1;
        ring_hole(o, dy, &hole0, &hole1);
        hole0 = hole0 > o->x0 ? hole0 : o->x0;
        hole1 = hole1 < o->x1 ? hole1 : o->x1;
        if (hole0 > hole1) {
            paint_span(cv, o, j, dy, o->x0, o->x1, cov);
        } else {
            paint_span(cv, o, j, dy, o->x0, hole0 - 1, cov);
            paint_span(cv, o, j, dy, hole1 + 1, o->x1, cov);
        }
    }
}

template <typename T>
inline T convert(float v);
template <>
inline float convert<float>(float v) { return v; }
template <>
inline unsigned char convert<unsigned char>(float v) { return rc_to_u8(v); }

/* Rows never touched are copied from a background row; touched rows are converted whole (first
 * into `conv`, C runs of W, where the conversion vectorises; then into place). */
template <typename T>
void write_image(const Canvas& cv, const T* bg_row, T* __restrict conv, T* out, int channels_last) {
    const int W = cv.W, H = cv.H, C = cv.C;
    for (int j = 0; j < H; ++j) {
        T* dst = out + (size_t)j * W * C;
        if (!cv.touched[j] && channels_last) {
            memcpy(dst, bg_row, sizeof(T) * W * C);
            continue;
        }
        for (int c = 0; c < C; ++c) {
            T* __restrict plane = channels_last ? conv + (size_t)c * W : out + ((size_t)c * H + j) * W;
            if (!cv.touched[j]) { memcpy(plane, bg_row + (size_t)c * W, sizeof(T) * W); continue; }
            const float* __restrict row = &cv.acc[((size_t)c * H + j) * W];
            for (int i = 0; i < W; ++i) plane[i] = convert<T>(row[i]);
        }
        if (!channels_last) continue;
        if (C == 3) {
            const T *r = conv, *g = conv + W, *b = conv + 2 * W;
            for (int i = 0; i < W; ++i) { dst[3 * i] = r[i]; dst[3 * i + 1] = g[i]; dst[3 * i + 2] = b[i]; }
        } else {
            for (int i = 0; i < W; ++i)
                for (int c = 0; c < C; ++c) dst[i * C + c] = conv[(size_t)c * W + i];
        }
    }
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
        Canvas cv(W, H, C);
        std::vector<float> cov(W);
        RcObject objs[RC_MAX_OBJECTS];
        const std::vector<T> bg_row = background_row<T>(bg, W, C, channels_last);
        std::vector<T> conv((size_t)W * C);
#pragma omp for schedule(static)
        for (long long b = 0; b < B; ++b) {
            float delta = 0.0f;
            int flip = 0, bad = 0;
            if (augment) rc_augment_params(seed, index_offset + b, &delta, &flip);
            int n = rc_stage_event(types + b * N, feats + b * N * F, counts[b], N, F, P, augment,
                                   delta, flip, objs, &bad);
            skipped += bad;
            for (int j = 0; j < H; ++j) cv.touched[j] = 0;
            for (int k = 0; k < n; ++k) paint_object(cv, &objs[k], bg, cov.data());
            write_image<T>(cv, bg_row.data(), conv.data(), out + b * (long long)W * H * C, channels_last);
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
        std::vector<float> acc((size_t)S * S, 0.0f);
        float x[RC_MAX_CONSTITUENTS], y[RC_MAX_CONSTITUENTS], w[RC_MAX_CONSTITUENTS];
        int pix[RC_MAX_CONSTITUENTS];
#pragma omp for schedule(static)
        for (long long b = 0; b < B; ++b) {
            int bad = 0;
            int n = rc_stage_jet(cons + b * M * F, counts[b], M, F, fatjet + b * 4, P, x, y, w, pix, &bad);
            skipped += bad;
            for (int k = 0; k < n; ++k) if (pix[k] >= 0) acc[pix[k]] = acc[pix[k]] + w[k];
            T* img = out + b * (long long)S * S;
            for (long long p = 0; p < (long long)S * S; ++p) img[p] = convert<T>(acc[p]);
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
