/* Event images on the GPU: one thread block per event, drawn straight into the output batch.
 *
 * Thread 0 stages the event's objects (centre, radius, stroke, colour, bounding box) in shared
 * memory with the shared logic of render_common.h; then every thread computes whole pixels
 * (all channels), looping over the staged objects in draw order with a bounding-box reject, and
 * writes each output element once: planes for NCHW, packed channels for channels-last.
 * Pointers travel as 64-bit integers so the Python side can pass torch tensors of any dtype.
 * DT: 0 float32, 1 bfloat16, 2 float16, 3 uint8 (round half up of value * 255).
 */
#include "render_common.h"

template <int DT, int C>
__global__ void rc_event_kernel(unsigned long long types_ptr, unsigned long long feats_ptr,
                                unsigned long long counts_ptr, int B, int N, int F,
                                unsigned long long params_ptr, unsigned long long seed,
                                long long index_offset, int augment, unsigned long long out_ptr,
                                int channels_last, unsigned long long skipped_ptr) {
    __shared__ RcObject objs[RC_MAX_OBJECTS];
    __shared__ float P[RC_P_SIZE];
    __shared__ int nobj;
    const int b = blockIdx.x;
    if (b >= B) return;
    for (int t = threadIdx.x; t < RC_P_SIZE; t += blockDim.x) P[t] = ((const float*)params_ptr)[t];
    __syncthreads();
    if (threadIdx.x == 0) {
        float delta = 0.0f;
        int flip = 0, bad = 0;
        if (augment) rc_augment_params(seed, index_offset + b, &delta, &flip);
        const signed char* types = (const signed char*)types_ptr + (long long)b * N;
        const float* feats = (const float*)feats_ptr + (long long)b * N * F;
        int count = ((const int*)counts_ptr)[b];
        nobj = rc_stage_event(types, feats, count, N, F, P, augment, delta, flip, objs, &bad);
        if (bad) atomicAdd((unsigned long long*)skipped_ptr, (unsigned long long)bad);
    }
    __syncthreads();
    const int W = (int)P[RC_P_WIDTH], H = (int)P[RC_P_HEIGHT], n = nobj;
    const long long plane = (long long)W * H;
    float bg[C];
#pragma unroll
    for (int c = 0; c < C; ++c) bg[c] = P[RC_P_BACKGROUND + c];
    for (int p = threadIdx.x; p < plane; p += blockDim.x) {
        const int i = p % W, j = p / W;
        float v[C];
#pragma unroll
        for (int c = 0; c < C; ++c) v[c] = bg[c];
        for (int k = 0; k < n; ++k) {
            const RcObject* o = &objs[k];
            if (!rc_in_bbox(o, i, j, H)) continue;
            const float a = rc_coverage(o, rc_dx(o, i), rc_dy(o, j, H));
#pragma unroll
            for (int c = 0; c < C; ++c) {
                float colour;
                if (rc_channel_colour(o, c, &colour)) v[c] = rc_over(v[c], colour, a);
            }
        }
        if (channels_last) {
            const long long base = ((long long)b * plane + p) * C;
#pragma unroll
            for (int c = 0; c < C; ++c) rc_store<DT>(out_ptr, base + c, v[c]);
        } else {
#pragma unroll
            for (int c = 0; c < C; ++c) rc_store<DT>(out_ptr, ((long long)b * C + c) * plane + p, v[c]);
        }
    }
}

#define RC_EVENT_ARGS unsigned long long, unsigned long long, unsigned long long, int, int, int, \
    unsigned long long, unsigned long long, long long, int, unsigned long long, int, unsigned long long
template __global__ void rc_event_kernel<0, 1>(RC_EVENT_ARGS);
template __global__ void rc_event_kernel<1, 1>(RC_EVENT_ARGS);
template __global__ void rc_event_kernel<2, 1>(RC_EVENT_ARGS);
template __global__ void rc_event_kernel<3, 1>(RC_EVENT_ARGS);
template __global__ void rc_event_kernel<0, 3>(RC_EVENT_ARGS);
template __global__ void rc_event_kernel<1, 3>(RC_EVENT_ARGS);
template __global__ void rc_event_kernel<2, 3>(RC_EVENT_ARGS);
template __global__ void rc_event_kernel<3, 3>(RC_EVENT_ARGS);
template __global__ void rc_event_kernel<0, 5>(RC_EVENT_ARGS);
template __global__ void rc_event_kernel<1, 5>(RC_EVENT_ARGS);
template __global__ void rc_event_kernel<2, 5>(RC_EVENT_ARGS);
template __global__ void rc_event_kernel<3, 5>(RC_EVENT_ARGS);
