// What every kernel file of gpow shares: fixed-width types (NVRTC has no system headers), the
// spec's constants for the step, the element mixer, and the fused kernels' pair epilogue.
// node/gpu/kernels.py puts this text in front of each kernels/*.cu source before compiling.

typedef unsigned int u32;
typedef unsigned long long u64;
typedef unsigned char u8;

#define G_BANDS 64  // row bands per step, each with its own references (spec: G)
#define RF 4        // reference rows added per output row (spec: R)

// mix of spec pow-v1: the low byte of a 32-bit finaliser of the wrapped sum.
__device__ __forceinline__ u32 mix32(u32 u) {
    u ^= u >> 16;
    u *= 0x7FEB352Du;
    u ^= u >> 15;
    u *= 0x846CA68Bu;
    u ^= u >> 16;
    return u & 0xFFu;
}

// Byte b of a 32-bit word as a signed int8, widened.
__device__ __forceinline__ u32 sbyte(u32 w, int b) { return (u32)(int)(signed char)(w >> (8 * b)); }

// The RF reference rows of output row i: row (i + o_r) mod n of state j_r, where (j_r, o_r) are
// the references of i's band (refs holds 2 * RF words per band).
__device__ __forceinline__ void band_ref_rows(const signed char** rp, const signed char* __restrict__ pool,
                                              const u32* __restrict__ refs, u32 i, u32 band_rows, u32 n) {
    const u32 g = i / band_rows;
    const u64 nn = (u64)n * n;
#pragma unroll
    for (int r = 0; r < RF; ++r) {
        u32 j = __ldg(refs + 2 * (g * RF + r)), o = __ldg(refs + 2 * (g * RF + r) + 1);
        rp[r] = pool + (u64)j * nn + (u64)((i + o) & (n - 1)) * n;
    }
}

// Two adjacent outputs (row i, columns c and c + 1) from their int32 products a0, a1 and the row's
// salt s and reference rows: the fused kernels' epilogue, written as one 16-bit store.
__device__ __forceinline__ void store_mixed_pair(signed char* __restrict__ out, const signed char** rp, u32 i, u32 c,
                                                 u32 n, int a0, int a1, u32 s) {
    u32 v0 = (u32)a0 + s, v1 = (u32)a1 + s;
#pragma unroll
    for (int r = 0; r < RF; ++r) {
        unsigned short w = __ldg((const unsigned short*)(rp[r] + c));
        v0 += (u32)(int)(signed char)(w & 0xFF);
        v1 += (u32)(int)(signed char)(w >> 8);
    }
    *(unsigned short*)(out + (u64)i * n + c) = (unsigned short)(mix32(v0) | (mix32(v1) << 8));
}
