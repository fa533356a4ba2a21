/* Jet images on the GPU: one thread block per jet.
 *
 * Thread 0 stages the jet with the shared preprocessing of render_common.h (axis, centroid,
 * principal-axis rotation, flips, pt normalisation) into shared memory; the block clears the
 * image, then each pixel hit by constituents is written once by the thread of its first
 * constituent, which sums the weights in constituent order (the CPU twin's order), so both
 * sides agree bit for bit. DT as in event_image.cu.
 */
#include "render_common.h"

template <int DT>
__global__ void rc_jet_kernel(unsigned long long cons_ptr, unsigned long long counts_ptr,
                              unsigned long long fatjet_ptr, int B, int M, int F,
                              unsigned long long params_ptr, unsigned long long out_ptr,
                              unsigned long long skipped_ptr) {
    __shared__ float x[RC_MAX_CONSTITUENTS], y[RC_MAX_CONSTITUENTS], w[RC_MAX_CONSTITUENTS];
    __shared__ int pix[RC_MAX_CONSTITUENTS];
    __shared__ float P[RC_P_SIZE];
    __shared__ int n;
    const int b = blockIdx.x;
    if (b >= B) return;
    for (int t = threadIdx.x; t < RC_P_SIZE; t += blockDim.x) P[t] = ((const float*)params_ptr)[t];
    __syncthreads();
    if (threadIdx.x == 0) {
        int bad = 0;
        const float* cons = (const float*)cons_ptr + (long long)b * M * F;
        const float* fatjet = (const float*)fatjet_ptr + (long long)b * RC_FJ_WIDTH;
        n = rc_stage_jet(cons, ((const int*)counts_ptr)[b], M, F, fatjet, P, x, y, w, pix, &bad);
        if (bad) atomicAdd((unsigned long long*)skipped_ptr, (unsigned long long)bad);
    }
    const int S = (int)P[RC_P_WIDTH];
    const long long plane = (long long)S * S, base = (long long)b * plane;
    for (long long p = threadIdx.x; p < plane; p += blockDim.x) rc_store<DT>(out_ptr, base + p, 0.0f);
    __syncthreads();   /* orders the clearing before the deposits (and publishes the staging) */
    for (int k = threadIdx.x; k < n; k += blockDim.x) {
        const int q = pix[k];
        if (q < 0) continue;
        int first = 1;
        for (int e = 0; e < k && first; ++e) first = pix[e] != q;
        if (!first) continue;
        float sum = 0.0f;
        for (int e = k; e < n; ++e) if (pix[e] == q) sum = sum + w[e];
        rc_store<DT>(out_ptr, base + q, sum);
    }
}

#define RC_JET_ARGS unsigned long long, unsigned long long, unsigned long long, int, int, int, \
    unsigned long long, unsigned long long, unsigned long long
template __global__ void rc_jet_kernel<0>(RC_JET_ARGS);
template __global__ void rc_jet_kernel<1>(RC_JET_ARGS);
template __global__ void rc_jet_kernel<2>(RC_JET_ARGS);
template __global__ void rc_jet_kernel<3>(RC_JET_ARGS);
