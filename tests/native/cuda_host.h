/* Just enough of CUDA to run the kernels (event_image.cu, jet_image.cu) on the CPU, for tests on
 * machines without a GPU.
 *
 * A launch of `grid` blocks of `block` threads starts `block` POSIX threads that walk through
 * the blocks in order: threadIdx/blockIdx are thread-local, __syncthreads() is a barrier of the
 * block's threads, and __shared__ variables become function statics, which the threads of the
 * running block share (one block runs at a time; a barrier ends each block before the next one
 * reuses them). The kernels' own code runs unchanged: their indexing, layouts, output stores and
 * synchronisation, which the CPU twin does not exercise. Built plain, with AddressSanitizer and
 * with ThreadSanitizer by tests/test_render_emulated.py.
 */
#ifndef CUDA_HOST_H
#define CUDA_HOST_H

#include <pthread.h>

#include <thread>
#include <vector>

struct CudaHostDim3 { unsigned int x, y, z; };

static thread_local CudaHostDim3 threadIdx, blockIdx;
static CudaHostDim3 blockDim, gridDim;
static pthread_barrier_t cuda_host_block_barrier;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __syncthreads() pthread_barrier_wait(&cuda_host_block_barrier)

#include "../../kernels/render_common.h"   /* host branch: RcFlushSubnormals */

static inline unsigned long long atomicAdd(unsigned long long* address, unsigned long long value) {
    return __atomic_fetch_add(address, value, __ATOMIC_RELAXED);
}

/* Run body() as the kernel of a (grid) x (block) launch. */
template <typename Body>
static void cuda_host_launch(unsigned int grid, unsigned int block, const Body& body) {
    gridDim = {grid, 1, 1};
    blockDim = {block, 1, 1};
    pthread_barrier_init(&cuda_host_block_barrier, nullptr, block);
    std::vector<std::thread> threads;
    for (unsigned int t = 0; t < block; ++t) {
        threads.emplace_back([t, grid, &body] {
            RcFlushSubnormals flush;                             /* as CuPy's -ftz=true */
            threadIdx = {t, 0, 0};
            for (unsigned int b = 0; b < grid; ++b) {
                blockIdx = {b, 0, 0};
                body();
                pthread_barrier_wait(&cuda_host_block_barrier);   /* the block ends */
            }
        });
    }
    for (std::thread& thread : threads) thread.join();
    pthread_barrier_destroy(&cuda_host_block_barrier);
}

#endif /* CUDA_HOST_H */
