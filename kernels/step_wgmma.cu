// The fused chain step of spec pow-v1 on Hopper's warpgroup tensor-core instruction (wgmma,
// sm_90a only; built by NVRTC with -arch=sm_90a):
//   X_next[i][c] = mix(sum_k X[i][k] * B[k][c] + sum_r X_{j_r}[(i + o_r) mod n][c] + sigma[i])
// applied from the accumulators: the int32 product never reaches device memory.
//
// Block: 128 x 256 output tile, 256 threads = 2 warpgroups, each wgmma.m64n256k32 (128 int32
// accumulators per thread). Operands X and Bt (B transposed) are both K-major, which is what int8
// wgmma requires. K slices of 128 bytes go through a STAGES-deep cp.async pipeline into shared
// memory in the no-swizzle "core matrix" layout: 8 rows x 16 bytes contiguous (128 bytes), the
// core matrices of one 8-row group along K 128 bytes apart, 8-row groups 1024 bytes apart. One
// group of wgmmas stays in flight while the next is issued (wait_group 1), so loads are issued
// STAGES - 2 slices ahead. Tiles are visited in groups of 8 tile rows, so the blocks running at
// once share their operands in L2. The two
// strides are written into the matrix descriptors as kernel parameters (lbo, sbo), so the host can
// check the hardware's reading of them against cuBLAS before trusting the kernel.

// Types, G_BANDS, RF, mix32 and the pair epilogue: kernels/common.cuh (prepended by the loader).

#define BM 128
#define BN 256
#define BK 128
#define STAGES 4
#define PREFETCH (STAGES - 2)
#define SBO_BYTES ((BK / 16) * 128)
#define GROUP_M 8
#define NTHREADS 256
#define A_BYTES (BM * BK)
#define B_BYTES (BN * BK)
#define STAGE_BYTES (A_BYTES + B_BYTES)

__device__ __forceinline__ void cp_async16(u32 saddr, const void* gmem) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(saddr), "l"(gmem));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

__device__ __forceinline__ u64 make_desc(u32 saddr, u32 lbo, u32 sbo) {
    u64 d = (u64)((saddr & 0x3FFFF) >> 4);
    d |= (u64)((lbo & 0x3FFFF) >> 4) << 16;
    d |= (u64)((sbo & 0x3FFFF) >> 4) << 32;
    return d;  // base offset 0, swizzle mode 0 (none)
}

// Chunk (row r, 16-byte column c) of a tile sits at (r / 8) * SBO_BYTES + c * 128 + (r % 8) * 16.
// Thread mapping: 8 consecutive threads take the 8 rows of one core matrix, so each group of 8
// writes 128 contiguous bytes of shared memory (no bank conflicts).
__device__ __forceinline__ void load_tile(u32 sbase, const char* g, u32 n, u32 row0, u32 k0, int rows, int tid) {
#pragma unroll 4
    for (int idx = tid; idx < rows * (BK / 16); idx += NTHREADS) {
        int r = (idx / (8 * (BK / 16))) * 8 + (idx & 7);
        int c = (idx >> 3) & (BK / 16 - 1);
        cp_async16(sbase + (r >> 3) * SBO_BYTES + c * 128 + (r & 7) * 16, g + (u64)(row0 + r) * n + k0 + c * 16);
    }
}

__device__ __forceinline__ void wgmma_m64n256k32(int* d, u64 da, u64 db) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %130, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n256k32.s32.s8.s8 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, %96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, %112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127}, %128, %129, p;\n}\n"
        : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3]), "+r"(d[4]), "+r"(d[5]), "+r"(d[6]), "+r"(d[7]), "+r"(d[8]), "+r"(d[9]), "+r"(d[10]), "+r"(d[11]), "+r"(d[12]), "+r"(d[13]), "+r"(d[14]), "+r"(d[15]), "+r"(d[16]), "+r"(d[17]), "+r"(d[18]), "+r"(d[19]), "+r"(d[20]), "+r"(d[21]), "+r"(d[22]), "+r"(d[23]), "+r"(d[24]), "+r"(d[25]), "+r"(d[26]), "+r"(d[27]), "+r"(d[28]), "+r"(d[29]), "+r"(d[30]), "+r"(d[31]), "+r"(d[32]), "+r"(d[33]), "+r"(d[34]), "+r"(d[35]), "+r"(d[36]), "+r"(d[37]), "+r"(d[38]), "+r"(d[39]), "+r"(d[40]), "+r"(d[41]), "+r"(d[42]), "+r"(d[43]), "+r"(d[44]), "+r"(d[45]), "+r"(d[46]), "+r"(d[47]), "+r"(d[48]), "+r"(d[49]), "+r"(d[50]), "+r"(d[51]), "+r"(d[52]), "+r"(d[53]), "+r"(d[54]), "+r"(d[55]), "+r"(d[56]), "+r"(d[57]), "+r"(d[58]), "+r"(d[59]), "+r"(d[60]), "+r"(d[61]), "+r"(d[62]), "+r"(d[63]), "+r"(d[64]), "+r"(d[65]), "+r"(d[66]), "+r"(d[67]), "+r"(d[68]), "+r"(d[69]), "+r"(d[70]), "+r"(d[71]), "+r"(d[72]), "+r"(d[73]), "+r"(d[74]), "+r"(d[75]), "+r"(d[76]), "+r"(d[77]), "+r"(d[78]), "+r"(d[79]), "+r"(d[80]), "+r"(d[81]), "+r"(d[82]), "+r"(d[83]), "+r"(d[84]), "+r"(d[85]), "+r"(d[86]), "+r"(d[87]), "+r"(d[88]), "+r"(d[89]), "+r"(d[90]), "+r"(d[91]), "+r"(d[92]), "+r"(d[93]), "+r"(d[94]), "+r"(d[95]), "+r"(d[96]), "+r"(d[97]), "+r"(d[98]), "+r"(d[99]), "+r"(d[100]), "+r"(d[101]), "+r"(d[102]), "+r"(d[103]), "+r"(d[104]), "+r"(d[105]), "+r"(d[106]), "+r"(d[107]), "+r"(d[108]), "+r"(d[109]), "+r"(d[110]), "+r"(d[111]), "+r"(d[112]), "+r"(d[113]), "+r"(d[114]), "+r"(d[115]), "+r"(d[116]), "+r"(d[117]), "+r"(d[118]), "+r"(d[119]), "+r"(d[120]), "+r"(d[121]), "+r"(d[122]), "+r"(d[123]), "+r"(d[124]), "+r"(d[125]), "+r"(d[126]), "+r"(d[127])
        : "l"(da), "l"(db), "r"(1));
}

extern "C" __global__ void __launch_bounds__(NTHREADS, 1) step_wgmma(
    const char* __restrict__ X, const char* __restrict__ Bt, const signed char* __restrict__ pool,
    const u32* __restrict__ refs, const u32* __restrict__ salt, signed char* __restrict__ out,
    int* __restrict__ out32, u32 n, u32 lbo, u32 sbo) {
    extern __shared__ __align__(1024) unsigned char smem[];
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int wg = warp >> 2, wq = warp & 3;
    const int gid = lane >> 2, tig = lane & 3;
    // Grouped raster over a 1-D grid: GROUP_M tile rows at a time, all tile columns.
    const u32 tiles_n = n / BN, tiles_m = n / BM;
    const u32 bid = blockIdx.x;
    const u32 group = bid / (GROUP_M * tiles_n);
    const u32 first_m = group * GROUP_M;
    const u32 gm = (tiles_m - first_m) < GROUP_M ? (tiles_m - first_m) : GROUP_M;
    const u32 pid_m = first_m + (bid % (GROUP_M * tiles_n)) % gm;
    const u32 pid_n = (bid % (GROUP_M * tiles_n)) / gm;
    const u32 m0 = pid_m * BM, n0 = pid_n * BN;
    const int KT = n / BK;
    const u32 sbase = (u32)__cvta_generic_to_shared(smem);

    int d[128];
#pragma unroll
    for (int x = 0; x < 128; ++x) d[x] = 0;

#pragma unroll
    for (int s = 0; s < PREFETCH; ++s) {
        if (s < KT) {
            load_tile(sbase + s * STAGE_BYTES, X, n, m0, s * BK, BM, tid);
            load_tile(sbase + s * STAGE_BYTES + A_BYTES, Bt, n, n0, s * BK, BN, tid);
        }
        cp_async_commit();
    }
    for (int kt = 0; kt < KT; ++kt) {
        cp_async_wait<PREFETCH - 1>();
        asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
        __syncthreads();  // also: every warpgroup's wgmmas of slice kt - 2 are complete
        {
            int nk = kt + PREFETCH;
            if (nk < KT) {
                u32 st = sbase + (nk % STAGES) * STAGE_BYTES;
                load_tile(st, X, n, m0, nk * BK, BM, tid);
                load_tile(st + A_BYTES, Bt, n, n0, nk * BK, BN, tid);
            }
            cp_async_commit();
        }
        const u32 sA = sbase + (kt % STAGES) * STAGE_BYTES + wg * (64 / 8) * SBO_BYTES;
        const u32 sB = sbase + (kt % STAGES) * STAGE_BYTES + A_BYTES;
#pragma unroll
        for (int x = 0; x < 128; ++x) asm volatile("" : "+r"(d[x])::"memory");
        asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#pragma unroll
        for (int ks = 0; ks < BK / 32; ++ks)
            wgmma_m64n256k32(d, make_desc(sA + ks * 256, lbo, sbo), make_desc(sB + ks * 256, lbo, sbo));
        asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
        asm volatile("wgmma.wait_group.sync.aligned 1;\n" ::: "memory");
    }
    asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
#pragma unroll
    for (int x = 0; x < 128; ++x) asm volatile("" : "+r"(d[x])::"memory");
    cp_async_wait<0>();

    // Accumulator layout (per warp of the warpgroup, like mma.sync's m16n8 repeated over N):
    // d[4j], d[4j+1]: row 16 wq + gid, columns 8 j + 2 tig (+1); d[4j+2], d[4j+3]: row + 8.
    const u32 band_rows = n / G_BANDS;
#pragma unroll
    for (int half = 0; half < 2; ++half) {
        const u32 i = m0 + wg * 64 + wq * 16 + gid + half * 8;
        if (out32) {
#pragma unroll
            for (int j = 0; j < 32; ++j) {
                u32 c = n0 + j * 8 + tig * 2;
                *(int2*)(out32 + (u64)i * n + c) = make_int2(d[4 * j + 2 * half], d[4 * j + 2 * half + 1]);
            }
            continue;
        }
        const signed char* rp[RF];
        band_ref_rows(rp, pool, refs, i, band_rows, n);
        const u32 s = __ldg(salt + i);
#pragma unroll
        for (int j = 0; j < 32; ++j) {
            u32 c = n0 + j * 8 + tig * 2;
            store_mixed_pair(out, rp, i, c, n, d[4 * j + 2 * half], d[4 * j + 2 * half + 1], s);
        }
    }
}
