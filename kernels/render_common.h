/* Shared drawing logic of the event and jet images: one source for the GPU and the CPU.
 *
 * Compiled by NVRTC (through CuPy) and nvcc for the CUDA kernels (event_image.cu, jet_image.cu)
 * and by g++ for the CPU twin (cpu_twin.cpp). Every number that reaches a pixel is computed by
 * the functions below with plain IEEE-754 single-precision operations (+ - * / sqrt floor ceil,
 * no library log, no trigonometry), both sides are compiled without contraction into FMA
 * (nvcc/NVRTC --fmad=false, g++ -ffp-contract=off) and both flush subnormals to zero (-ftz=true;
 * RcFlushSubnormals on the CPU), so the GPU and the CPU draw bit-identical images.
 *
 * Geometry of an event image (W x H pixels, C channels):
 *   x = (eta + eta_max) / (2 eta_max) * W     (eta across, left to right)
 *   y = (pi - phi) / (2 pi) * H               (phi up: row 0 is phi = +pi); phi wraps around
 *   pixel (i, j) has its centre at (i + 0.5, j + 0.5)
 *   radius r = k * ln(max(pt, 1 GeV)) eta units (never negative; pt < 1 GeV draws a dot)
 *   coverage = clamp(w/2 + 0.5 - dist, 0, 1), dist = |d - r| (outline) or max(d - r, 0) (filled),
 *   d the distance from the pixel centre to the circle centre with dy wrapped to [-H/2, H/2).
 *   compositing: value = value * (1 - a) + colour * a, objects in slot order (electrons, muons,
 *   jets, MET), over the background.
 * Each object also gets an integer bounding box; both sides apply an object only inside it (the
 * coverage outside it is 0 anyway, and 'over' with a = 0 leaves a value unchanged exactly).
 */
#ifndef RENDER_COMMON_H
#define RENDER_COMMON_H

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define RC_FN __host__ __device__ __forceinline__
#else
#include <math.h>
#define RC_FN static inline
#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#endif

/* The kernels run with subnormals flushed to zero (CuPy compiles every module with -ftz=true:
 * single-precision operations read and write subnormals as 0). Host code drawing with this header
 * holds one of these on each of its threads, so it flushes them too (x86: MXCSR FTZ + DAZ;
 * AArch64: FPCR.FZ), and both sides agree on subnormal input as well; the mode is restored after. */
struct RcFlushSubnormals {
#if defined(__x86_64__) || defined(__i386__)
    unsigned int saved;
    RcFlushSubnormals() : saved(_mm_getcsr()) { _mm_setcsr(saved | 0x8040u); }
    ~RcFlushSubnormals() { _mm_setcsr(saved); }
#elif defined(__aarch64__)
    unsigned long saved;
    RcFlushSubnormals() {
        __asm__ volatile("mrs %0, fpcr" : "=r"(saved));
        __asm__ volatile("msr fpcr, %0" : : "r"(saved | (1ul << 24)));
    }
    ~RcFlushSubnormals() { __asm__ volatile("msr fpcr, %0" : : "r"(saved)); }
#endif
};
#endif

/* Object type codes, feature columns and caps: the values of engine/contracts.py
 * (tests/test_contracts.py checks each of them). */
#define RC_PAD 0
#define RC_ELECTRON 1
#define RC_MUON 2
#define RC_JET 3
#define RC_BJET 4
#define RC_MET 5
#define RC_NUM_TYPES 6

/* Columns the kernels read: of a padded object (RC_F_*), a constituent (RC_C_*), a large-radius jet
 * (RC_FJ_*, RC_FJ_WIDTH columns per jet). */
#define RC_F_PT 0
#define RC_F_ETA 1
#define RC_F_PHI 2
#define RC_F_CHARGE 5
#define RC_C_PT 0
#define RC_C_ETA 1
#define RC_C_PHI 2
#define RC_FJ_ETA 1
#define RC_FJ_PHI 2
#define RC_FJ_WIDTH 4

#define RC_MAX_OBJECTS 64        /* objects drawn per event; later slots are skipped (counted) */
#define RC_MAX_CONSTITUENTS 256  /* constituents deposited per jet; later ones are skipped (counted) */
#define RC_MAX_CHANNELS 8

/* Layout of the float parameter table built by kernels/presets.py (RenderConfig.param_table). */
#define RC_P_WIDTH 0
#define RC_P_HEIGHT 1
#define RC_P_CHANNELS 2
#define RC_P_ETA_MAX 3
#define RC_P_FILLED 4
#define RC_P_PT_MAX 5
#define RC_P_JET_RANGE 6
#define RC_P_JET_FLAGS 7
#define RC_P_BACKGROUND 8
#define RC_P_TYPES 16
#define RC_P_TYPE_STRIDE 8
#define RC_T_RED 0
#define RC_T_GREEN 1
#define RC_T_BLUE 2
#define RC_T_CHANNEL 3
#define RC_T_RADIUS 4
#define RC_T_STROKE_POS 5
#define RC_T_STROKE_NEG 6
#define RC_T_MAX_COUNT 7
#define RC_P_SIZE 64

#define RC_JET_CENTRE 1
#define RC_JET_ROTATE 2
#define RC_JET_FLIP 4
#define RC_JET_NORMALISE 8

#define RC_PI 3.14159265358979f
#define RC_TWO_PI 6.28318530717959f
#define RC_FLT_MAX 3.402823466e38f

typedef struct {
    float cx, cy;        /* centre in pixels */
    float r, hw;         /* radius and half stroke width in pixels */
    float col[3];        /* RGB colour (channel < 0) or intensity in col[0] */
    int channel;         /* -1: blend col into channels 0..2; k >= 0: blend col[0] into channel k */
    int filled;
    int x0, x1;          /* columns x0..x1 (clamped to the canvas; empty if x0 > x1) */
    int y0, rows;        /* rows y0, y0+1, ... (rows of them, wrapping at H) */
} RcObject;

RC_FN int rc_finite(float x) { return fabsf(x) <= RC_FLT_MAX; }   /* false for NaN and inf */

/* Comparisons, not fminf/fmaxf: same values for finite x, and they vectorise on the CPU. */
RC_FN float rc_clamp01(float x) {
    x = x < 0.0f ? 0.0f : x;
    return x > 1.0f ? 1.0f : x;
}

RC_FN float rc_max0(float x) { return x > 0.0f ? x : 0.0f; }

RC_FN int rc_float_bits(float x) { union { float f; int i; } u; u.f = x; return u.i; }

RC_FN float rc_bits_float(int i) { union { float f; int i; } u; u.i = i; return u.f; }

/* Natural log of a finite x >= 1 with basic operations only (identical on GPU and CPU;
 * relative error below 1e-7, far below a pixel). */
RC_FN float rc_log(float x) {
    int bits = rc_float_bits(x);
    int e = ((bits >> 23) & 0xff) - 127;
    float m = rc_bits_float((bits & 0x007fffff) | 0x3f800000);   /* mantissa in [1, 2) */
    if (m > 1.41421356f) { m = m * 0.5f; e = e + 1; }
    float f = m - 1.0f;
    float s = f / (2.0f + f);
    float s2 = s * s;
    float p = s2 * (0.333333333f + s2 * (0.2f + s2 * (0.142857143f + s2 * (0.111111111f + s2 * 0.0909090909f))));
    return (float)e * 0.693147181f + 2.0f * (s + s * p);
}

/* Angle wrapped into [-pi, pi). */
RC_FN float rc_wrap_phi(float phi) {
    float w = phi - RC_TWO_PI * floorf((phi + RC_PI) / RC_TWO_PI);
    if (w >= RC_PI) w = w - RC_TWO_PI;
    if (w < -RC_PI) w = w + RC_TWO_PI;
    return w;
}

/* Counter-based random bits of (seed, event index): splitmix64 (identical on GPU and CPU). */
RC_FN unsigned long long rc_mix64(unsigned long long z) {
    z = z + 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* Per-event augmentation: a global phi rotation uniform in [-pi, pi) and an eta flip (p = 0.5). */
RC_FN void rc_augment_params(unsigned long long seed, long long index, float* delta, int* flip) {
    unsigned long long h = rc_mix64(seed ^ rc_mix64((unsigned long long)index));
    float u = (float)(unsigned int)(h >> 40) * (1.0f / 16777216.0f);   /* 24 bits: [0, 1) */
    *delta = (u * 2.0f - 1.0f) * RC_PI;
    *flip = (int)((h >> 7) & 1ULL);
}

RC_FN float rc_type_param(const float* P, int type, int field) {
    return P[RC_P_TYPES + type * RC_P_TYPE_STRIDE + field];
}

/* Integer bounding box of an object: columns clamped to the canvas, rows wrapped at H. */
RC_FN void rc_bbox(RcObject* o, int W, int H) {
    float reach = o->r + o->hw + 0.5f;
    float x0 = fmaxf(floorf(o->cx - reach) - 1.0f, 0.0f);
    float x1 = fminf(ceilf(o->cx + reach) + 1.0f, (float)(W - 1));
    o->x0 = x0 > x1 ? 1 : (int)x0;
    o->x1 = x0 > x1 ? 0 : (int)x1;
    float y0 = floorf(o->cy - reach) - 1.0f;
    float rows = ceilf(o->cy + reach) + 1.0f - y0 + 1.0f;
    if (rows >= (float)H) { o->y0 = 0; o->rows = H; return; }
    int iy = (int)y0 % H;
    o->y0 = iy < 0 ? iy + H : iy;
    o->rows = (int)rows;
}

RC_FN int rc_in_bbox(const RcObject* o, int i, int j, int H) {
    int t = j - o->y0;
    if (t < 0) t = t + H;
    return i >= o->x0 && i <= o->x1 && t < o->rows;
}

/* Distances from pixel centres to the object centre, in pixels (dy wrapped around phi). */
RC_FN float rc_dx(const RcObject* o, int i) { return ((float)i + 0.5f) - o->cx; }

RC_FN float rc_dy(const RcObject* o, int j, int H) {
    float dy = ((float)j + 0.5f) - o->cy;
    float half = 0.5f * (float)H;
    if (dy >= half) dy = dy - (float)H;
    if (dy < -half) dy = dy + (float)H;
    return dy;
}

/* Anti-aliased coverage in [0, 1] of a pixel at offset (dx, dy) from the centre. */
RC_FN float rc_coverage(const RcObject* o, float dx, float dy) {
    float d = sqrtf(dx * dx + dy * dy);
    float dist = o->filled ? rc_max0(d - o->r) : fabsf(d - o->r);
    return rc_clamp01(o->hw + 0.5f - dist);
}

/* Whether the object paints channel c, and with which value. */
RC_FN int rc_channel_colour(const RcObject* o, int c, float* colour) {
    if (o->channel < 0) {
        if (c >= 3) return 0;
        *colour = o->col[c];
        return 1;
    }
    *colour = o->col[0];
    return c == o->channel;
}

/* Porter-Duff 'over' of an opaque colour with coverage a onto value v. */
RC_FN float rc_over(float v, float colour, float a) { return v * (1.0f - a) + colour * a; }

/* value * 255 rounded half up; the argument of the cast is >= 0.5, so truncation is floor. */
RC_FN unsigned char rc_to_u8(float v) { return (unsigned char)(int)(rc_clamp01(v) * 255.0f + 0.5f); }

/* Turn one padded object into its drawing parameters; returns 0 if it is not drawn. */
RC_FN int rc_make_object(const float* P, int type, const float* f, int F, int augment, float delta,
                         int flip, RcObject* o) {
    int W = (int)P[RC_P_WIDTH], H = (int)P[RC_P_HEIGHT];
    float eta_max = P[RC_P_ETA_MAX];
    float pt = f[RC_F_PT], eta = type == RC_MET ? 0.0f : f[RC_F_ETA], phi = f[RC_F_PHI];
    float charge = F > RC_F_CHARGE ? f[RC_F_CHARGE] : 0.0f;
    if (augment) { phi = phi + delta; if (flip) eta = -eta; }
    float px_per_eta = (float)W / (2.0f * eta_max);
    o->cx = (eta + eta_max) * px_per_eta;
    o->cy = (RC_PI - rc_wrap_phi(phi)) * ((float)H / RC_TWO_PI);
    if (o->cy >= (float)H) o->cy = o->cy - (float)H;
    if (o->cy < 0.0f) o->cy = o->cy + (float)H;
    o->r = rc_type_param(P, type, RC_T_RADIUS) * rc_log(fmaxf(pt, 1.0f)) * px_per_eta;
    o->hw = 0.5f * rc_type_param(P, type, charge < 0.0f ? RC_T_STROKE_NEG : RC_T_STROKE_POS);
    o->channel = (int)rc_type_param(P, type, RC_T_CHANNEL);
    o->filled = P[RC_P_FILLED] != 0.0f;
    if (o->channel < 0) {
        o->col[0] = rc_type_param(P, type, RC_T_RED);
        o->col[1] = rc_type_param(P, type, RC_T_GREEN);
        o->col[2] = rc_type_param(P, type, RC_T_BLUE);
    } else {
        float scale = rc_log(1.0f + P[RC_P_PT_MAX]);
        o->col[0] = rc_clamp01(rc_log(1.0f + fmaxf(pt, 0.0f)) / scale);
        o->col[1] = 0.0f;
        o->col[2] = 0.0f;
    }
    rc_bbox(o, W, H);
    return 1;
}

/* Stage one event's objects in draw order. Objects with an unknown type or NaN/inf kinematics
 * are skipped and added to *skipped; so are objects beyond RC_MAX_OBJECTS. Objects beyond a
 * type's max count (jets and b-jets count together) are not drawn and not counted as skipped. */
RC_FN int rc_stage_event(const signed char* types, const float* feats, int count, int N, int F,
                         const float* P, int augment, float delta, int flip, RcObject* objs,
                         int* skipped) {
    int n = count < 0 ? 0 : (count > N ? N : count);
    int drawn[RC_NUM_TYPES] = {0, 0, 0, 0, 0, 0};
    int m = 0, bad = 0;
    for (int k = 0; k < n; ++k) {
        int t = types[k];
        const float* f = feats + (long long)k * F;
        if (t <= RC_PAD || t >= RC_NUM_TYPES || !rc_finite(f[RC_F_PT]) ||
            !rc_finite(f[RC_F_PHI]) || (t != RC_MET && !rc_finite(f[RC_F_ETA]))) { bad = bad + 1; continue; }
        int group = t == RC_BJET ? RC_JET : t;
        float max_count = rc_type_param(P, t, RC_T_MAX_COUNT);
        if (max_count >= 0.0f && (float)drawn[group] >= max_count) continue;
        drawn[group] = drawn[group] + 1;
        if (m >= RC_MAX_OBJECTS) { bad = bad + 1; continue; }
        m = m + rc_make_object(P, t, f, F, augment, delta, flip, &objs[m]);
    }
    *skipped = bad;
    return m;
}

/* ---- jet images --------------------------------------------------------------------------- */

/* Stage one jet: pixel index (or -1) and weight of each constituent, in constituent order.
 * Scratch arrays x, y, w and pix hold RC_MAX_CONSTITUENTS entries. Returns the number staged. */
RC_FN int rc_stage_jet(const float* cons, int count, int M, int F, const float* fatjet,
                       const float* P, float* x, float* y, float* w, int* pix, int* skipped) {
    int n = count < 0 ? 0 : (count > M ? M : count);
    int bad = 0;
    if (n > RC_MAX_CONSTITUENTS) { bad = n - RC_MAX_CONSTITUENTS; n = RC_MAX_CONSTITUENTS; }
    int axis_ok = rc_finite(fatjet[RC_FJ_ETA]) && rc_finite(fatjet[RC_FJ_PHI]);
    int m = 0;
    for (int k = 0; k < n; ++k) {
        const float* c = cons + (long long)k * F;
        if (!axis_ok || !rc_finite(c[RC_C_PT]) || !rc_finite(c[RC_C_ETA]) || !rc_finite(c[RC_C_PHI])) {
            bad = bad + 1;
            continue;
        }
        if (!(c[RC_C_PT] > 0.0f)) continue;
        w[m] = c[RC_C_PT];
        x[m] = c[RC_C_ETA] - fatjet[RC_FJ_ETA];
        y[m] = rc_wrap_phi(c[RC_C_PHI] - fatjet[RC_FJ_PHI]);
        m = m + 1;
    }
    *skipped = bad;
    int flags = (int)P[RC_P_JET_FLAGS];
    if (flags & RC_JET_CENTRE) {
        float sw = 0.0f, sx = 0.0f, sy = 0.0f;
        for (int k = 0; k < m; ++k) { sw = sw + w[k]; sx = sx + w[k] * x[k]; sy = sy + w[k] * y[k]; }
        if (sw > 0.0f) {
            float mx = sx / sw, my = sy / sw;
            for (int k = 0; k < m; ++k) { x[k] = x[k] - mx; y[k] = y[k] - my; }
        }
    }
    if (flags & RC_JET_ROTATE) {
        float sxx = 0.0f, syy = 0.0f, sxy = 0.0f;
        for (int k = 0; k < m; ++k) {
            sxx = sxx + w[k] * x[k] * x[k]; syy = syy + w[k] * y[k] * y[k]; sxy = sxy + w[k] * x[k] * y[k];
        }
        /* principal eigenvector (c, s) of [[sxx, sxy], [sxy, syy]], without trigonometry */
        float half = 0.5f * (sxx - syy);
        float lambda = 0.5f * (sxx + syy) + sqrtf(half * half + sxy * sxy);
        float ax = sxy, ay = lambda - sxx, bx = lambda - syy, by = sxy;
        float na = ax * ax + ay * ay, nb = bx * bx + by * by;
        float vx = na >= nb ? ax : bx, vy = na >= nb ? ay : by, nv = sqrtf(na >= nb ? na : nb);
        if (nv > 0.0f) {
            float c = vx / nv, s = vy / nv;   /* rotate (c, s) onto (0, 1): the axis becomes vertical */
            for (int k = 0; k < m; ++k) {
                float xr = s * x[k] - c * y[k], yr = c * x[k] + s * y[k];
                x[k] = xr; y[k] = yr;
            }
        }
    }
    if (flags & RC_JET_FLIP) {
        float left = 0.0f, right = 0.0f, down = 0.0f, up = 0.0f;
        for (int k = 0; k < m; ++k) {
            if (x[k] < 0.0f) left = left + w[k]; else if (x[k] > 0.0f) right = right + w[k];
            if (y[k] < 0.0f) down = down + w[k]; else if (y[k] > 0.0f) up = up + w[k];
        }
        for (int k = 0; k < m; ++k) {
            if (left > right) x[k] = -x[k];
            if (down > up) y[k] = -y[k];
        }
    }
    int S = (int)P[RC_P_WIDTH];
    float R = P[RC_P_JET_RANGE];
    float total = 0.0f;
    for (int k = 0; k < m; ++k) {
        float u = (x[k] + R) / (2.0f * R) * (float)S;
        float v = (R - y[k]) / (2.0f * R) * (float)S;
        int inside = u >= 0.0f && u < (float)S && v >= 0.0f && v < (float)S;
        pix[k] = inside ? (int)floorf(v) * S + (int)floorf(u) : -1;
        if (pix[k] >= S * S) pix[k] = -1;
        if (pix[k] >= 0) total = total + w[k];
    }
    if ((flags & RC_JET_NORMALISE) && total > 0.0f)
        for (int k = 0; k < m; ++k) w[k] = w[k] / total;
    return m;
}

/* ---- output conversion of the kernels (the CPU twin writes float32 or uint8 with rc_to_u8 and
 * lets torch round to bfloat16/float16, which also rounds to nearest even). Plain integer code,
 * so host builds of the kernels (tests/native, which runs them on the CPU) convert exactly as the
 * GPU does; float16 uses the hardware conversion on the GPU. ------------------------------------- */
RC_FN unsigned short rc_bf16_bits(float v) {
    unsigned int u = (unsigned int)rc_float_bits(v);
    if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;          /* NaN */
    u = u + 0x7fffu + ((u >> 16) & 1u);                             /* round to nearest even */
    return (unsigned short)(u >> 16);
}

/* float -> IEEE half bits, round to nearest even, subnormals and overflow to inf included. */
RC_FN unsigned short rc_f16_bits(float v) {
#if defined(__CUDA_ARCH__)
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v));
    return h;
#else
    unsigned int u = (unsigned int)rc_float_bits(v);
    unsigned int sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (unsigned short)(sign | 0x7e00u);                  /* NaN */
    if (a >= 0x47800000u) return (unsigned short)(sign | 0x7c00u);                 /* >= 65536: inf */
    if (a >= 0x38800000u) {                                                          /* normal half */
        unsigned int r = a - 0x38000000u;                            /* exponent bias 127 -> 15 */
        r = r + 0xfffu + ((r >> 13) & 1u);                           /* may carry up to inf: right */
        return (unsigned short)(sign | (r >> 13));
    }
    int e = (int)(a >> 23);
    if (e < 102) return (unsigned short)sign;                        /* below 2^-25: rounds to 0 */
    unsigned int mant = (a & 0x007fffffu) | 0x00800000u;
    int shift = 126 - e;                                             /* units of 2^-24: 14..24 */
    unsigned int m = mant >> shift, rest = mant & ((1u << shift) - 1u), half = 1u << (shift - 1);
    if (rest > half || (rest == half && (m & 1u))) m = m + 1u;       /* 1024 is the least normal */
    return (unsigned short)(sign | m);
#endif
}

/* DT: 0 float32, 1 bfloat16, 2 float16, 3 uint8 */
template <int DT>
RC_FN void rc_store(unsigned long long base, long long idx, float v) {
    if (DT == 0) ((float*)base)[idx] = v;
    else if (DT == 1) ((unsigned short*)base)[idx] = rc_bf16_bits(v);
    else if (DT == 2) ((unsigned short*)base)[idx] = rc_f16_bits(v);
    else ((unsigned char*)base)[idx] = rc_to_u8(v);
}

#endif /* RENDER_COMMON_H */
