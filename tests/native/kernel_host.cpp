/* Runs the kernels of event_image.cu and jet_image.cu on the CPU (see cuda_host.h) on inputs read
 * from raw little-endian files, and writes the output batch to a raw file, for the tests.
 *
 *   kernel_host event DT C CHANNELS_LAST GRID BLOCK B N F SEED OFFSET AUGMENT \
 *               types counts features params out        -> prints the skipped-object count
 *   kernel_host jet DT GRID BLOCK B M F constituents counts fatjet params out
 *   kernel_host f16|bf16 in out                         -> float32 in, 16-bit patterns out
 *
 * Inputs live in buffers of exactly their file's size and the output in one of exactly
 * B * C * H * W elements, first filled with 0xA5 bytes, so a sanitizer sees any access outside
 * them and a comparison sees any element left unwritten.
 */
#include "cuda_host.h"

#include "../../kernels/event_image.cu"
#include "../../kernels/jet_image.cu"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

struct Buffer {
    unsigned char* data = nullptr;
    size_t size = 0;
    ~Buffer() { delete[] data; }
    unsigned long long ptr() const { return (unsigned long long)data; }
};

[[noreturn]] void fail(const std::string& message) {
    fprintf(stderr, "kernel_host: %s\n", message.c_str());
    exit(2);
}

void read_file(const char* path, Buffer* buffer) {
    FILE* f = fopen(path, "rb");
    if (!f) fail(std::string("cannot read ") + path);
    fseek(f, 0, SEEK_END);
    buffer->size = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    buffer->data = new unsigned char[buffer->size ? buffer->size : 1];
    if (fread(buffer->data, 1, buffer->size, f) != buffer->size) fail(std::string("short read of ") + path);
    fclose(f);
}

void write_file(const char* path, const Buffer& buffer) {
    FILE* f = fopen(path, "wb");
    if (!f || fwrite(buffer.data, 1, buffer.size, f) != buffer.size) fail(std::string("cannot write ") + path);
    fclose(f);
}

void allocate_out(Buffer* out, size_t elements, int dt) {
    static const size_t bytes[] = {4, 2, 2, 1};
    out->size = elements * bytes[dt];
    out->data = new unsigned char[out->size ? out->size : 1];
    memset(out->data, 0xA5, out->size);
}

long long arg(char** argv, int k) { return strtoll(argv[k], nullptr, 10); }

template <int DT, int C>
void launch_event(char** argv, const Buffer* in, unsigned long long skipped_ptr, Buffer* out) {
    const int cl = (int)arg(argv, 4), B = (int)arg(argv, 7), N = (int)arg(argv, 8), F = (int)arg(argv, 9);
    const unsigned long long seed = strtoull(argv[10], nullptr, 10);
    const long long offset = arg(argv, 11);
    const int augment = (int)arg(argv, 12);
    cuda_host_launch((unsigned)arg(argv, 5), (unsigned)arg(argv, 6), [&] {
        rc_event_kernel<DT, C>(in[0].ptr(), in[2].ptr(), in[1].ptr(), B, N, F, in[3].ptr(), seed, offset,
                               augment, out->ptr(), cl, skipped_ptr);
    });
}

template <int DT>
void launch_event_dt(int C, char** argv, const Buffer* in, unsigned long long skipped, Buffer* out) {
    if (C == 1) launch_event<DT, 1>(argv, in, skipped, out);
    else if (C == 3) launch_event<DT, 3>(argv, in, skipped, out);
    else if (C == 5) launch_event<DT, 5>(argv, in, skipped, out);
    else fail("event kernels exist for 1, 3 and 5 channels");
}

int run_event(int argc, char** argv) {
    if (argc != 18) fail("event needs 16 arguments");
    const int dt = (int)arg(argv, 2), C = (int)arg(argv, 3);
    Buffer in[4], out;
    for (int k = 0; k < 4; ++k) read_file(argv[13 + k], &in[k]);
    const float* params = (const float*)in[3].data;
    allocate_out(&out, (size_t)arg(argv, 7) * C * (size_t)params[RC_P_WIDTH] * (size_t)params[RC_P_HEIGHT], dt);
    unsigned long long skipped = 0;
    const unsigned long long sp = (unsigned long long)&skipped;
    if (dt == 0) launch_event_dt<0>(C, argv, in, sp, &out);
    else if (dt == 1) launch_event_dt<1>(C, argv, in, sp, &out);
    else if (dt == 2) launch_event_dt<2>(C, argv, in, sp, &out);
    else if (dt == 3) launch_event_dt<3>(C, argv, in, sp, &out);
    else fail("DT must be 0..3");
    write_file(argv[17], out);
    printf("%llu\n", skipped);
    return 0;
}

template <int DT>
void launch_jet(char** argv, const Buffer* in, unsigned long long skipped_ptr, Buffer* out) {
    const int B = (int)arg(argv, 5), M = (int)arg(argv, 6), F = (int)arg(argv, 7);
    cuda_host_launch((unsigned)arg(argv, 3), (unsigned)arg(argv, 4), [&] {
        rc_jet_kernel<DT>(in[0].ptr(), in[1].ptr(), in[2].ptr(), B, M, F, in[3].ptr(), out->ptr(), skipped_ptr);
    });
}

int run_jet(int argc, char** argv) {
    if (argc != 13) fail("jet needs 11 arguments");
    const int dt = (int)arg(argv, 2);
    Buffer in[4], out;
    for (int k = 0; k < 4; ++k) read_file(argv[8 + k], &in[k]);
    const float* params = (const float*)in[3].data;
    const size_t side = (size_t)params[RC_P_WIDTH];
    allocate_out(&out, (size_t)arg(argv, 5) * side * side, dt);
    unsigned long long skipped = 0;
    const unsigned long long sp = (unsigned long long)&skipped;
    if (dt == 0) launch_jet<0>(argv, in, sp, &out);
    else if (dt == 1) launch_jet<1>(argv, in, sp, &out);
    else if (dt == 2) launch_jet<2>(argv, in, sp, &out);
    else if (dt == 3) launch_jet<3>(argv, in, sp, &out);
    else fail("DT must be 0..3");
    write_file(argv[12], out);
    printf("%llu\n", skipped);
    return 0;
}

int run_convert(int argc, char** argv, bool half) {
    if (argc != 4) fail("f16/bf16 need an input and an output");
    Buffer in, out;
    read_file(argv[2], &in);
    const size_t n = in.size / 4;
    allocate_out(&out, n, 1);
    const float* x = (const float*)in.data;
    unsigned short* y = (unsigned short*)out.data;
    for (size_t k = 0; k < n; ++k) y[k] = half ? rc_f16_bits(x[k]) : rc_bf16_bits(x[k]);
    write_file(argv[3], out);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2) fail("usage: kernel_host event|jet|f16|bf16 ...");
    const std::string mode = argv[1];
    if (mode == "event") return run_event(argc, argv);
    if (mode == "jet") return run_jet(argc, argv);
    if (mode == "f16" || mode == "bf16") return run_convert(argc, argv, mode == "f16");
    fail("unknown mode " + mode);
}
