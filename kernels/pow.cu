// gpow spec pow-v1 on the GPU: Philox streams, per-step references and salts, the cuBLAS-path
// epilogue, and the SHA-256 Merkle digest of a state. Loaded by node/gpu/kernels.py through
// cupy.RawModule (NVRTC), so no system headers: fixed-width types are spelled out.
//
// Byte conventions: states are int8 row-major; hashes are kept as their 32 raw bytes (the
// big-endian SHA-256 words byte-swapped into little-endian loads/stores).

// Types, G_BANDS, RF, mix32 and sbyte: kernels/common.cuh (prepended by the loader).

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u
#define TAG_SALT 0x544C4153u

__device__ __forceinline__ uint4 philox4x32_10(u32 c0, u32 c1, u32 c2, u32 c3, u32 k0, u32 k1) {
#pragma unroll
    for (int r = 0; r < 10; ++r) {
        u32 lo0 = PHILOX_M0 * c0, hi0 = __umulhi(PHILOX_M0, c0);
        u32 lo1 = PHILOX_M1 * c2, hi1 = __umulhi(PHILOX_M1, c2);
        c0 = hi1 ^ c1 ^ k0;
        c1 = lo1;
        c2 = hi0 ^ c3 ^ k1;
        c3 = lo0;
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    return make_uint4(c0, c1, c2, c3);
}

// Blocks 0..nblocks-1 of stream (tag, id): 16 bytes each, written u32le (the GPU is little-endian).
extern "C" __global__ void philox_stream(uint4* __restrict__ out, u64 nblocks, u32 tag, u32 id, u32 k0, u32 k1) {
    u64 b = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    u64 stride = (u64)gridDim.x * blockDim.x;
    for (; b < nblocks; b += stride) out[b] = philox4x32_10((u32)b, (u32)(b >> 32), id, tag, k0, k1);
}

// ---- SHA-256 ---------------------------------------------------------------------------------

__constant__ u32 K256[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

__device__ __forceinline__ u32 rotr(u32 x, int n) { return __funnelshift_r(x, x, n); }
__device__ __forceinline__ u32 bswap(u32 x) { return __byte_perm(x, 0, 0x0123); }

__device__ __forceinline__ void sha_init(u32* h) {
    h[0] = 0x6a09e667; h[1] = 0xbb67ae85; h[2] = 0x3c6ef372; h[3] = 0xa54ff53a;
    h[4] = 0x510e527f; h[5] = 0x9b05688c; h[6] = 0x1f83d9ab; h[7] = 0x5be0cd19;
}

// One compression; w holds the 16 big-endian message words and is used as the schedule.
__device__ __forceinline__ void sha_compress(u32* h, u32* w) {
    u32 a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
#pragma unroll
    for (int i = 0; i < 64; ++i) {
        u32 wi;
        if (i < 16) {
            wi = w[i];
        } else {
            u32 w15 = w[(i - 15) & 15], w2 = w[(i - 2) & 15];
            u32 s0 = rotr(w15, 7) ^ rotr(w15, 18) ^ (w15 >> 3);
            u32 s1 = rotr(w2, 17) ^ rotr(w2, 19) ^ (w2 >> 10);
            wi = w[i & 15] + s0 + w[(i - 7) & 15] + s1;
            w[i & 15] = wi;
        }
        u32 S1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25);
        u32 ch = (e & f) ^ (~e & g);
        u32 t1 = hh + S1 + ch + K256[i] + wi;
        u32 S0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22);
        u32 mj = (a & b) ^ (a & c) ^ (b & c);
        u32 t2 = S0 + mj;
        hh = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += hh;
}

__device__ __forceinline__ void store_hash(u8* dst, const u32* h) {
    uint4* d = (uint4*)dst;
    d[0] = make_uint4(bswap(h[0]), bswap(h[1]), bswap(h[2]), bswap(h[3]));
    d[1] = make_uint4(bswap(h[4]), bswap(h[5]), bswap(h[6]), bswap(h[7]));
}

// Node hash H(0x01 || l || r) of two 32-byte hashes stored at l and r.
__device__ __forceinline__ void node_hash(u8* dst, const u8* l, const u8* r) {
    const u32* lw = (const u32*)l;
    const u32* rw = (const u32*)r;
    u32 h[8];
    sha_init(h);
    u32 w[16];
    u32 prev = 0x01000000u;
#pragma unroll
    for (int k = 0; k < 16; ++k) {
        u32 cur = k < 8 ? lw[k] : rw[k - 8];
        w[k] = __byte_perm(prev, cur, 0x3456);
        prev = cur;
    }
    sha_compress(h, w);
    w[0] = (prev & 0xFF000000u) | 0x00800000u;
#pragma unroll
    for (int k = 1; k < 15; ++k) w[k] = 0;
    w[15] = 65u * 8u;
    sha_compress(h, w);
    store_hash(dst, h);
}

// The closing block of a leaf H(0x00 || chunk) of cs bytes: the chunk's last byte (the top byte of
// `prev`, shifted by the one-byte prefix), the 0x80 pad, zeros and the bit length.
__device__ __forceinline__ void sha_leaf_close(u32* h, u32 prev, u32 cs) {
    u32 w[16];
    w[0] = (prev & 0xFF000000u) | 0x00800000u;
#pragma unroll
    for (int k = 1; k < 15; ++k) w[k] = 0;
    w[15] = (cs + 1) * 8u;
    sha_compress(h, w);
}

// Leaf hashes -> row nodes: with per_row == 1 the leaf is the row node; otherwise each row's
// group of per_row consecutive threads folds its leaves pairwise in shared memory (32 bytes per
// thread), level by level, and the group's first thread stores the row node. Every thread of the
// block must call it (it synchronises).
__device__ __forceinline__ void row_group_fold(const u32* h, u8* sh, u8* __restrict__ nodes, u32 leaf, bool live,
                                               u32 per_row) {
    if (per_row == 1) {
        if (live) store_hash(nodes + (u64)leaf * 32, h);
        return;
    }
    if (live) store_hash(sh + threadIdx.x * 32, h);
    __syncthreads();
    for (u32 span = 1; span < per_row; span <<= 1) {
        u32 lane = threadIdx.x % per_row;
        bool act = live && (lane % (2 * span) == 0);
        u8 tmp[32];
        if (act) node_hash(tmp, sh + threadIdx.x * 32, sh + (threadIdx.x + span) * 32);
        __syncthreads();
        if (act) {
#pragma unroll
            for (int b = 0; b < 32; ++b) sh[threadIdx.x * 32 + b] = tmp[b];
        }
        __syncthreads();
    }
    if (live && threadIdx.x % per_row == 0) {
        const uint4* src = (const uint4*)(sh + threadIdx.x * 32);
        uint4* d = (uint4*)(nodes + (u64)(leaf / per_row) * 32);
        d[0] = src[0];
        d[1] = src[1];
    }
}

// Row nodes of one state: thread per leaf of cs bytes (H(0x00 || chunk)), then the per-row
// subtree of `per_row` = n/cs leaves (a power of two <= 16) reduced in shared memory.
// blockDim.x is a multiple of per_row; leaves of one row sit in consecutive threads.
extern "C" __global__ void row_nodes(const u8* __restrict__ X, u8* __restrict__ nodes, u32 nleaves, u32 cs, u32 per_row) {
    extern __shared__ uint4 sh4[];
    u8* sh = (u8*)sh4;  // 32 bytes per thread
    u32 leaf = blockIdx.x * blockDim.x + threadIdx.x;
    bool live = leaf < nleaves;
    u32 h[8];
    if (live) {
        // The leaf is H(0x00 || chunk): cs/64 full blocks, then the closing block. The next
        // block's 64 bytes are loaded while the current one is compressed (the loads would
        // otherwise stall every compression on a trip to memory).
        const uint4* src = (const uint4*)(X + (u64)leaf * cs);
        const int nblk = cs / 64;
        uint4 cur[4], nxt[4];
#pragma unroll
        for (int q = 0; q < 4; ++q) cur[q] = __ldg(src + q);
        sha_init(h);
        u32 prev = 0;  // "data word -1": its byte 3 is the 0x00 prefix
        u32 w[16];
        for (int blk = 0; blk < nblk; ++blk) {
            if (blk + 1 < nblk) {
#pragma unroll
                for (int q = 0; q < 4; ++q) nxt[q] = __ldg(src + (blk + 1) * 4 + q);
            }
#pragma unroll
            for (int q = 0; q < 4; ++q) {
                u32 c4[4] = {cur[q].x, cur[q].y, cur[q].z, cur[q].w};
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    w[4 * q + e] = __byte_perm(prev, c4[e], 0x3456);
                    prev = c4[e];
                }
            }
            sha_compress(h, w);
#pragma unroll
            for (int q = 0; q < 4; ++q) cur[q] = nxt[q];
        }
        sha_leaf_close(h, prev, cs);
    }
    row_group_fold(h, sh, nodes, leaf, live, per_row);
}

// One block reduces 2*blockDim.x consecutive nodes (a power of two) of `in` to one node, written
// to out[blockIdx.x]. Launched repeatedly until one node (the state digest) remains.
extern "C" __global__ void merkle_reduce(const u8* __restrict__ in, u8* __restrict__ out, u32 count) {
    extern __shared__ uint4 sh4[];
    u8* sh = (u8*)sh4;  // 64 bytes per thread: two nodes
    u32 per_block = 2 * blockDim.x;
    if (per_block > count) per_block = count;
    u32 base = blockIdx.x * per_block;
    u32 tid = threadIdx.x;
    u32 pairs = per_block / 2;
    if (per_block == 1) {  // a single node: its own root
        if (tid == 0) {
            const uint4* s = (const uint4*)(in + (u64)base * 32);
            uint4* d = (uint4*)(out + (u64)blockIdx.x * 32);
            d[0] = s[0];
            d[1] = s[1];
        }
        return;
    }
    if (tid < pairs) node_hash(sh + tid * 32, in + (u64)(base + 2 * tid) * 32, in + (u64)(base + 2 * tid + 1) * 32);
    __syncthreads();
    for (u32 live = pairs / 2; live >= 1; live >>= 1) {
        u8 tmp[32];
        if (tid < live) node_hash(tmp, sh + (2 * tid) * 32, sh + (2 * tid + 1) * 32);
        __syncthreads();
        if (tid < live) {
#pragma unroll
            for (int b = 0; b < 32; ++b) sh[tid * 32 + b] = tmp[b];
        }
        __syncthreads();
    }
    if (tid == 0) {
        const uint4* s = (const uint4*)sh;
        uint4* d = (uint4*)(out + (u64)blockIdx.x * 32);
        d[0] = s[0];
        d[1] = s[1];
    }
}

// ---- per-step preparation: references from d_{t-1} and the row salts --------------------------

// refs[2*(g*RF + r)] = j, refs[2*(g*RF + r) + 1] = o  (spec section 2); salt[i] = sigma_t[i].
// d_prev: the 32 bytes of d_{t-1} (unused at t == 0). One launch of >= max(n, 256) threads.
extern "C" __global__ void step_prep(const u8* __restrict__ d_prev, u32 t, u32 n, u32 k0, u32 k1,
                                     u32* __restrict__ refs, u32* __restrict__ salt) {
    u32 tid = blockIdx.x * blockDim.x + threadIdx.x;
    if (tid < n) salt[tid] = philox4x32_10(tid, 0, t, TAG_SALT, k0, k1).x;
    if (tid < G_BANDS * RF) {
        u32 g = tid / RF, r = tid % RF;
        if (t == 0) {
            refs[2 * tid] = 0;
            refs[2 * tid + 1] = 0;
            return;
        }
        // "gpow.ref.v1" (11 bytes) || d (32) || u32le(g) || u32le(r): 51 bytes, one block.
        u8 m[64];
        const char* dom = "gpow.ref.v1";
#pragma unroll
        for (int x = 0; x < 11; ++x) m[x] = (u8)dom[x];
#pragma unroll
        for (int x = 0; x < 32; ++x) m[11 + x] = d_prev[x];
#pragma unroll
        for (int x = 0; x < 4; ++x) {
            m[43 + x] = (u8)(g >> (8 * x));
            m[47 + x] = (u8)(r >> (8 * x));
        }
        m[51] = 0x80;
#pragma unroll
        for (int x = 52; x < 62; ++x) m[x] = 0;
        m[62] = (u8)((51 * 8) >> 8);
        m[63] = (u8)((51 * 8) & 0xFF);
        u32 w[16];
#pragma unroll
        for (int x = 0; x < 16; ++x)
            w[x] = ((u32)m[4 * x] << 24) | ((u32)m[4 * x + 1] << 16) | ((u32)m[4 * x + 2] << 8) | (u32)m[4 * x + 3];
        u32 h[8];
        sha_init(h);
        sha_compress(h, w);
        u64 jv = (u64)bswap(h[0]) | ((u64)bswap(h[1]) << 32);
        u64 ov = (u64)bswap(h[2]) | ((u64)bswap(h[3]) << 32);
        refs[2 * tid] = (u32)(jv % (u64)t);
        refs[2 * tid + 1] = (u32)(ov % (u64)n);
    }
}

// ---- the cuBLAS-path epilogue (the mixer is in common.cuh) -------------------------------------

// One thread's share of a step's epilogue: 16 columns of row i (band, references and salt of row i).
__device__ __forceinline__ void epilogue16(const int* __restrict__ A, const signed char* __restrict__ pool,
                                           const u32* __restrict__ refs, const u32* __restrict__ salt,
                                           signed char* __restrict__ out, u32 n, u32 i, u32 c) {
    const signed char* rows[RF];
    band_ref_rows(rows, pool, refs, i, n / G_BANDS, n);
    uint4 rr[RF];
#pragma unroll
    for (int r = 0; r < RF; ++r) rr[r] = __ldg((const uint4*)(rows[r] + c));
    const int4* a4 = (const int4*)(A + (u64)i * n + c);
    u32 s = salt[i];
    u32 res[4];
#pragma unroll
    for (int q = 0; q < 4; ++q) {
        int4 a = __ldg(a4 + q);
        u32 av[4] = {(u32)a.x, (u32)a.y, (u32)a.z, (u32)a.w};
        u32 word = 0;
#pragma unroll
        for (int b = 0; b < 4; ++b) {
            u32 v = av[b] + s;
#pragma unroll
            for (int r = 0; r < RF; ++r) {
                u32 rw = q == 0 ? rr[r].x : q == 1 ? rr[r].y : q == 2 ? rr[r].z : rr[r].w;
                v += sbyte(rw, b);
            }
            word |= mix32(v) << (8 * b);
        }
        res[q] = word;
    }
    *(uint4*)(out + (u64)i * n + c) = make_uint4(res[0], res[1], res[2], res[3]);
}

// X_next[i][c] = mix(A[i][c] + sum_r X_{j_r}[(i + o_r) mod n][c] + sigma[i]); thread per 16 columns.
extern "C" __global__ void epilogue(const int* __restrict__ A, const signed char* __restrict__ pool,
                                    const u32* __restrict__ refs, const u32* __restrict__ salt,
                                    signed char* __restrict__ out, u32 n) {
    u64 idx = (u64)blockIdx.x * blockDim.x + threadIdx.x;  // 16-column group
    u64 groups = (u64)n * n / 16;
    if (idx >= groups) return;
    u32 i = (u32)(idx / (n / 16));
    u32 c = (u32)(idx % (n / 16)) * 16;
    epilogue16(A, pool, refs, salt, out, n, i, c);
}

// Bt[c][k] = B[k][c]: the B matrix transposed once per chain (the tensor-core kernel wants the
// inner dimension contiguous in both operands). 32x32 tiles through shared memory.
extern "C" __global__ void transpose_i8(const signed char* __restrict__ B, signed char* __restrict__ Bt, u32 n) {
    __shared__ signed char tile[32][33];
    u32 x = blockIdx.x * 32 + threadIdx.x, y = blockIdx.y * 32 + threadIdx.y;
    for (int k = 0; k < 32; k += 8) tile[threadIdx.y + k][threadIdx.x] = B[(u64)(y + k) * n + x];
    __syncthreads();
    x = blockIdx.y * 32 + threadIdx.x;
    y = blockIdx.x * 32 + threadIdx.y;
    for (int k = 0; k < 32; k += 8) Bt[(u64)(y + k) * n + x] = tile[threadIdx.x][threadIdx.y + k];
}

// The cuBLAS-path epilogue fused with the leaf hashing: thread per leaf of cs bytes. The thread
// computes its leaf's 64-byte blocks of X_next (as `epilogue` does), stores them, and feeds them
// straight into SHA-256, so the new state is hashed while it is written (the leaves' chained
// compressions are latency-bound, the epilogue memory-bound: together they overlap). Then each
// row's subtree of per_row leaves is folded in shared memory (as in `row_nodes`).
extern "C" __global__ void epilogue_rows(const int* __restrict__ A, const signed char* __restrict__ pool,
                                         const u32* __restrict__ refs, const u32* __restrict__ salt,
                                         signed char* __restrict__ out, u8* __restrict__ nodes, u32 n, u32 cs,
                                         u32 per_row) {
    extern __shared__ uint4 sh4[];
    u8* sh = (u8*)sh4;
    const u32 nleaves = n * (n / cs);
    const u32 leaf = blockIdx.x * blockDim.x + threadIdx.x;
    const bool live = leaf < nleaves;
    u32 h[8];
    if (live) {
        const u32 i = leaf / per_row;
        const u32 c0 = (leaf % per_row) * cs;
        const signed char* rows[RF];
        band_ref_rows(rows, pool, refs, i, n / G_BANDS, n);
        const uint4* rp[RF];
#pragma unroll
        for (int r = 0; r < RF; ++r) rp[r] = (const uint4*)(rows[r] + c0);
        const int4* ap = (const int4*)(A + (u64)i * n + c0);
        uint4* op = (uint4*)(out + (u64)i * n + c0);
        const u32 s = salt[i];
        sha_init(h);
        u32 prev = 0;  // "data word -1": its byte 3 is the 0x00 leaf prefix
        u32 w[16];
        const int nblk = cs / 64;
        for (int blk = 0; blk < nblk; ++blk) {
            u32 words[16];
#pragma unroll
            for (int q = 0; q < 4; ++q) {  // 16 bytes at a time
                uint4 rr[RF];
#pragma unroll
                for (int r = 0; r < RF; ++r) rr[r] = __ldg(rp[r] + blk * 4 + q);
#pragma unroll
                for (int e = 0; e < 4; ++e) {  // 4 bytes = one output word
                    int4 a = __ldg(ap + blk * 16 + q * 4 + e);
                    u32 av[4] = {(u32)a.x, (u32)a.y, (u32)a.z, (u32)a.w};
                    u32 word = 0;
#pragma unroll
                    for (int b = 0; b < 4; ++b) {
                        u32 v = av[b] + s;
#pragma unroll
                        for (int r = 0; r < RF; ++r) {
                            u32 rw = e == 0 ? rr[r].x : e == 1 ? rr[r].y : e == 2 ? rr[r].z : rr[r].w;
                            v += sbyte(rw, b);
                        }
                        word |= mix32(v) << (8 * b);
                    }
                    words[q * 4 + e] = word;
                }
                op[blk * 4 + q] = make_uint4(words[q * 4], words[q * 4 + 1], words[q * 4 + 2], words[q * 4 + 3]);
            }
#pragma unroll
            for (int k = 0; k < 16; ++k) {
                w[k] = __byte_perm(prev, words[k], 0x3456);
                prev = words[k];
            }
            sha_compress(h, w);
        }
        sha_leaf_close(h, prev, cs);
    }
    row_group_fold(h, sh, nodes, leaf, live, per_row);
}

// The cuBLAS-path epilogue over one panel of rows [row0, row0 + nrows) (variant "panels": each
// panel's epilogue runs on its own stream as soon as that panel's GEMM is done, overlapping the
// next panel's GEMM). The same arithmetic as `epilogue`, thread per 16 columns; A and out are the
// whole n x n matrices, so row i keeps its band, references and salt.
extern "C" __global__ void epilogue_panel(const int* __restrict__ A, const signed char* __restrict__ pool,
                                          const u32* __restrict__ refs, const u32* __restrict__ salt,
                                          signed char* __restrict__ out, u32 n, u32 row0, u32 nrows) {
    u64 idx = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (u64)nrows * n / 16) return;
    u32 i = row0 + (u32)(idx / (n / 16));
    u32 c = (u32)(idx % (n / 16)) * 16;
    epilogue16(A, pool, refs, salt, out, n, i, c);
}
