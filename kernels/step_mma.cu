// The fused chain step of spec pow-v1 on int8 tensor cores (mma.sync m16n8k32, sm_80+):
//   X_next[i][c] = mix(sum_k X[i][k] * B[k][c] + sum_r X_{j_r}[(i + o_r) mod n][c] + sigma[i])
// The int32 product never leaves the registers: the epilogue adds the band's four reference rows
// and the salt to the accumulators, mixes and stores int8.
//
// Operands: X (n x n, row-major, k contiguous) and Bt = B transposed (n x n, row c holds column c of
// B, k contiguous), the layouts mma.sync's row.col form wants. 128 x 128 output tile per block of
// 256 threads (8 warps as 2 x 4, 64 x 32 each), k slices of 64 bytes through a STAGES-deep
// cp.async pipeline. Shared rows are padded to 80 bytes: the fragment loads (8 rows x 4 words per
// warp) then hit 32 distinct banks.

// Types, G_BANDS, RF, mix32 and the pair epilogue: kernels/common.cuh (prepended by the loader).

#define BM 128
#define BN 128
#define BK 64
#define PITCH 80
#define STAGES 4
#define NTHREADS 256

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
    u32 s = (u32)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(gmem));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

__device__ __forceinline__ void mma_s8(int* c, u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// Copy one BM x BK slice of X and one BN x BK slice of Bt into a stage (16 bytes per cp.async).
__device__ __forceinline__ void load_stage(char* sA, char* sB, const char* X, const char* Bt, u32 n, u32 m0, u32 n0,
                                           u32 k0, int tid) {
#pragma unroll
    for (int q = 0; q < (BM * BK / 16) / NTHREADS; ++q) {
        int chunk = tid + q * NTHREADS;
        int row = chunk / (BK / 16), col = (chunk % (BK / 16)) * 16;
        cp_async16(sA + row * PITCH + col, X + (u64)(m0 + row) * n + k0 + col);
    }
#pragma unroll
    for (int q = 0; q < (BN * BK / 16) / NTHREADS; ++q) {
        int chunk = tid + q * NTHREADS;
        int row = chunk / (BK / 16), col = (chunk % (BK / 16)) * 16;
        cp_async16(sB + row * PITCH + col, Bt + (u64)(n0 + row) * n + k0 + col);
    }
}

// When `out32` is non-null the raw int32 product is stored instead of the
// step (used only to time the bare product of this kernel against cuBLAS).
extern "C" __global__ void __launch_bounds__(NTHREADS) step_mma(
    const char* __restrict__ X, const char* __restrict__ Bt, const signed char* __restrict__ pool,
    const u32* __restrict__ refs, const u32* __restrict__ salt, signed char* __restrict__ out,
    int* __restrict__ out32, u32 n) {
    extern __shared__ uint4 smem4[];
    char* smem = (char*)smem4;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int warp_m = warp >> 2, warp_n = warp & 3;  // 2 x 4 warps
    const int gid = lane >> 2, tig = lane & 3;
    const u32 m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
    const int KT = n / BK;

    int acc[4][4][4];
#pragma unroll
    for (int a = 0; a < 4; ++a)
#pragma unroll
        for (int b = 0; b < 4; ++b)
#pragma unroll
            for (int c = 0; c < 4; ++c) acc[a][b][c] = 0;

    const int stage_bytes = (BM + BN) * PITCH;
#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s) {
        if (s < KT) load_stage(smem + s * stage_bytes, smem + s * stage_bytes + BM * PITCH, X, Bt, n, m0, n0, s * BK, tid);
        cp_async_commit();
    }

    for (int kt = 0; kt < KT; ++kt) {
        cp_async_wait<STAGES - 2>();
        __syncthreads();
        {
            int nk = kt + STAGES - 1;
            if (nk < KT) {
                char* st = smem + (nk % STAGES) * stage_bytes;
                load_stage(st, st + BM * PITCH, X, Bt, n, m0, n0, nk * BK, tid);
            }
            cp_async_commit();
        }
        const char* sA = smem + (kt % STAGES) * stage_bytes;
        const char* sB = sA + BM * PITCH;
#pragma unroll
        for (int ks = 0; ks < BK / 32; ++ks) {
            u32 af[4][4], bf[4][2];
#pragma unroll
            for (int mt = 0; mt < 4; ++mt) {
                const char* p = sA + (warp_m * 64 + mt * 16 + gid) * PITCH + ks * 32 + tig * 4;
                af[mt][0] = *(const u32*)(p);
                af[mt][1] = *(const u32*)(p + 8 * PITCH);
                af[mt][2] = *(const u32*)(p + 16);
                af[mt][3] = *(const u32*)(p + 8 * PITCH + 16);
            }
#pragma unroll
            for (int nt = 0; nt < 4; ++nt) {
                const char* p = sB + (warp_n * 32 + nt * 8 + gid) * PITCH + ks * 32 + tig * 4;
                bf[nt][0] = *(const u32*)(p);
                bf[nt][1] = *(const u32*)(p + 16);
            }
#pragma unroll
            for (int mt = 0; mt < 4; ++mt)
#pragma unroll
                for (int nt = 0; nt < 4; ++nt)
                    mma_s8(acc[mt][nt], af[mt][0], af[mt][1], af[mt][2], af[mt][3], bf[nt][0], bf[nt][1]);
        }
    }
    cp_async_wait<0>();

    // Epilogue straight from the accumulators: thread holds rows (g, g+8) of each m16 tile and
    // columns (2 tig, 2 tig + 1) of each n8 tile.
    const u32 band_rows = n / G_BANDS;
#pragma unroll
    for (int mt = 0; mt < 4; ++mt) {
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            const u32 i = m0 + warp_m * 64 + mt * 16 + gid + half * 8;
            if (out32) {
#pragma unroll
                for (int nt = 0; nt < 4; ++nt) {
                    u32 c = n0 + warp_n * 32 + nt * 8 + tig * 2;
                    *(int2*)(out32 + (u64)i * n + c) = make_int2(acc[mt][nt][half * 2], acc[mt][nt][half * 2 + 1]);
                }
                continue;
            }
            const signed char* rp[RF];
            band_ref_rows(rp, pool, refs, i, band_rows, n);
            const u32 s = __ldg(salt + i);
#pragma unroll
            for (int nt = 0; nt < 4; ++nt) {
                u32 c = n0 + warp_n * 32 + nt * 8 + tig * 2;
                store_mixed_pair(out, rp, i, c, n, acc[mt][nt][half * 2], acc[mt][nt][half * 2 + 1], s);
            }
        }
    }
}
