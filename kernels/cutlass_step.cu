// The fused chain step of spec pow-v1 on CUTLASS 3.x's Hopper int8 GEMM (TMA loads, warp-specialised
// persistent mainloop, wgmma), with our own epilogue applied from the accumulators:
//   X_next[i][c] = mix(sum_k X[i][k] * Bt[c][k] + sum_r X_{j_r}[(i + o_r) mod n][c] + sigma[i])
// The int32 product never reaches device memory. The mainloop is CUTLASS's (CollectiveBuilder);
// the epilogue is a "no shared memory" collective in the shape of CUTLASS's DefaultEpilogue that
// maps each accumulator to its (row, column) and does the spec's step epilogue (kernels/common.cuh).
//
// Built as a host shared library (node/gpu/cutlass_step.py loads it with ctypes): a TMA descriptor
// is made by host code (cuTensorMapEncodeTiled), which a RawModule kernel cannot run. The library
// exports one C entry, gpow_cutlass_step(), which launches on the caller's (CuPy's) stream.
//
// Variants (schedule, tile M x N x K, cluster, epilogue), picked by index; all compute the same bits:
//   0: pingpong    128 x 128 x 128, cluster 1 x 1, staged epilogue
//   1: pingpong    128 x 128 x 128, cluster 2 x 1, staged epilogue
//   2: pingpong    128 x 128 x 128, cluster 1 x 2, staged epilogue
//   3: pingpong    128 x 128 x 128, cluster 2 x 1, direct epilogue
//   4: cooperative 128 x 256 x 128, cluster 1 x 2, direct epilogue
//   5: pingpong    128 x 128 x 128, cluster 1 x 1, staged one reference tile at a time
//   6: pingpong    128 x 128 x 128, cluster 1 x 1, staged two reference tiles at a time
// out32 != NULL: store the bare int32 product instead (benchmark and the calibration against cuBLAS).

#include <cstdint>
#include <mutex>
#include <cuda_runtime.h>

#include "cute/tensor.hpp"
#include "cutlass/cutlass.h"
#include "cutlass/epilogue/collective/collective_builder.hpp"
#include "cutlass/epilogue/collective/detail.hpp"
#include "cutlass/epilogue/thread/linear_combination.h"
#include "cutlass/gemm/collective/collective_builder.hpp"
#include "cutlass/gemm/device/gemm_universal_adapter.h"
#include "cutlass/gemm/dispatch_policy.hpp"
#include "cutlass/gemm/kernel/gemm_universal.hpp"
#include "cutlass/util/packed_stride.hpp"

#include "common.cuh"

namespace gpow {

using namespace cute;

struct PowEpilogueParams {
  const signed char* pool = nullptr;  // all states, (T+1) x n x n
  const u32* refs = nullptr;          // 2 * RF words per band: (j, o)
  const u32* salt = nullptr;          // n words
  signed char* out = nullptr;         // X_next, n x n
  int* out32 = nullptr;               // when set: the bare product instead
  u32 n = 0;
};

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
  u32 sa = (u32)__cvta_generic_to_shared(smem);
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(sa), "l"(gmem));
}

// A CUTLASS 3 collective epilogue in the shape of DefaultEpilogue (no TMA store): the kernel hands it
// each output tile's accumulators; it finds their coordinates through the tiled MMA's C partition.
//
// SR > 0, staged (pingpong kernels, one warpgroup per tile): for each 64-row MMA atom of the tile,
// the warpgroup copies SR of the four reference-row tiles it needs (SR x 64 rows x BN bytes) into
// shared memory with coalesced 16-byte cp.async, all in flight at once, and adds them from there into
// the accumulators (ours until the next tile's first MMA overwrites them); after the last round it
// adds the salt, mixes and stores. SR = 4 is one round per atom; SR = 1 or 2 uses a smaller buffer,
// which leaves the mainloop more pipeline stages. SR = 0 reads the reference rows straight from
// global memory per accumulator pair: that left one load latency per pair on the path (the stores
// to X_next may alias the loads, so they stay in order), measured 40 us of a 150 us step at n = 4096.
template <int BN, int SR>
class PowEpilogue {
 public:
  using EpilogueSchedule = cutlass::epilogue::NoSmemWarpSpecialized;
  using DispatchPolicy = EpilogueSchedule;
  // Only for the adapter's type aliases; the arithmetic is below.
  using ThreadEpilogueOp = cutlass::epilogue::thread::LinearCombination<int8_t, 1, int32_t, int32_t>;
  using ElementOutput = int8_t;
  using ElementAccumulator = int32_t;
  using ElementCompute = int32_t;
  using ElementScalar = int32_t;
  using ElementC = void;
  using StrideC = cute::Stride<int64_t, cute::Int<1>, int64_t>;
  using ElementD = int8_t;
  using StrideD = cute::Stride<int64_t, cute::Int<1>, int64_t>;
  using GmemElementC = int8_t;
  using GmemTiledCopyC = void;
  using GmemTiledCopyD = void;

  static constexpr int ATOM_M = 64;       // rows of one wgmma atom
  static constexpr int PITCH = BN + 16;   // padded shared row: conflict-free 2-byte reads, 16-byte aligned rows
  static constexpr int STAGE_BYTES = (SR > 0 ? SR : 1) * ATOM_M * PITCH;
  struct SharedStorageStaged {
    alignas(128) signed char stage[2][STAGE_BYTES];  // one per consumer warpgroup
  };
  struct SharedStorageNone {};
  using SharedStorage = cute::conditional_t<(SR > 0), SharedStorageStaged, SharedStorageNone>;
  using TensorStorage = SharedStorage;
  using Arguments = PowEpilogueParams;
  using Params = PowEpilogueParams;

  template <class ProblemShape>
  static constexpr Params to_underlying_arguments(ProblemShape const&, Arguments const& args, void*) {
    return args;
  }
  template <class ProblemShape>
  static size_t get_workspace_size(ProblemShape const&, Arguments const&) {
    return 0;
  }
  template <class ProblemShape>
  static cutlass::Status initialize_workspace(ProblemShape const&, Arguments const&, void*, cudaStream_t,
                                              cutlass::CudaHostAdapter* = nullptr) {
    return cutlass::Status::kSuccess;
  }
  template <class ProblemShape>
  static bool can_implement(ProblemShape const&, Arguments const& args) {
    return args.n >= 64 && (args.n & (args.n - 1)) == 0;
  }

  CUTLASS_HOST_DEVICE
  PowEpilogue(Params const& params_, SharedStorage const& = SharedStorage()) : params(params_) {}

  CUTLASS_DEVICE bool is_source_needed() { return false; }

  template <class ProblemShapeMNKL, class BlockShapeMNK, class BlockCoordMNKL, class FrgEngine, class FrgLayout,
            class TiledMma, class ResidueMNK>
  CUTLASS_DEVICE void operator()(ProblemShapeMNKL problem_shape_mnkl, BlockShapeMNK blk_shape_MNK,
                                 BlockCoordMNKL blk_coord_mnkl, cute::Tensor<FrgEngine, FrgLayout> const& acc,
                                 TiledMma tiled_mma, ResidueMNK, int thread_idx, char* smem) {
    auto M = get<0>(problem_shape_mnkl);
    auto N = get<1>(problem_shape_mnkl);
    auto m_coord = get<0>(blk_coord_mnkl);
    auto n_coord = get<1>(blk_coord_mnkl);
    Tensor mD_crd = make_identity_tensor(make_shape(M, N));
    Tensor cD = local_tile(mD_crd, take<0, 2>(blk_shape_MNK), make_coord(m_coord, n_coord));  // (BLK_M, BLK_N)
    auto thr_mma = tiled_mma.get_thread_slice(thread_idx);
    Tensor tCcD = thr_mma.partition_C(cD);  // (VEC, MMA_M, MMA_N): global (row, column) of each accumulator
    static_assert(is_static<FrgLayout>::value, "accumulator layout must be static");
    const u32 n = params.n;
    // The persistent scheduler pads the grid of tiles to its cluster and swizzle shapes: a tile past
    // the matrix (n is a multiple of the tile) has nothing to store. The whole warpgroup leaves.
    if ((u32)m_coord * (u32)size<0>(blk_shape_MNK) >= n || (u32)n_coord * (u32)size<1>(blk_shape_MNK) >= n) return;
    // wgmma's accumulator layout gives each thread pairs of adjacent columns of one row: elements
    // 2k and 2k+1 of the fragment (checked against cuBLAS bit for bit by the engine's calibration).
    if (params.out32 != nullptr) {
      CUTLASS_PRAGMA_UNROLL
      for (int k = 0; k < size(acc); k += 2) {
        const u32 i = get<0>(tCcD(k)), c = get<1>(tCcD(k));
        *reinterpret_cast<int2*>(params.out32 + (u64)i * n + c) = make_int2(acc(k), acc(k + 1));
      }
      return;
    }
    const u32 band_rows = n / G_BANDS;
    if constexpr (SR == 0) {
      CUTLASS_PRAGMA_UNROLL
      for (int k = 0; k < size(acc); k += 2) {
        const u32 i = get<0>(tCcD(k)), c = get<1>(tCcD(k));
        const signed char* rp[RF];
        band_ref_rows(rp, params.pool, params.refs, i, band_rows, n);
        store_mixed_pair(params.out, rp, i, c, n, acc(k), acc(k + 1), __ldg(params.salt + i));
      }
    } else {
      static_assert(size<1>(BlockShapeMNK{}) == BN, "staged epilogue: tile N must equal BN");
      constexpr int CH = BN / 16;  // 16-byte chunks per staged row
      const int wg = (threadIdx.x / 128) & 1;  // consumer warpgroup 1 or 2 -> buffer 1 or 0
      signed char* buf = reinterpret_cast<SharedStorageStaged*>(smem)->stage[wg];
      const u32 bar = 9 + wg;  // named barriers past CUTLASS's reserved ids
      const u32 col0 = (u32)n_coord * BN;
      const u64 nn = (u64)n * n;
      static_assert(RF % SR == 0, "SR must divide the reference count");
      auto& accw = const_cast<cute::Tensor<FrgEngine, FrgLayout>&>(acc);
      CUTLASS_PRAGMA_UNROLL
      for (int m = 0; m < size<1>(acc); ++m) {
        const u32 row_lo = (u32)get<0>(tCcD(0, m, 0)) & ~(u32)(ATOM_M - 1);
        CUTLASS_PRAGMA_UNROLL
        for (int r0 = 0; r0 < RF; r0 += SR) {
          for (int idx = thread_idx; idx < SR * ATOM_M * CH; idx += 128) {
            const int rb = idx / (ATOM_M * CH), rem = idx % (ATOM_M * CH), lr = rem / CH, cc = rem % CH;
            const u32 i = row_lo + lr, g = i / band_rows, r = (u32)(r0 + rb);
            const u32 j = __ldg(params.refs + 2 * (g * RF + r)), o = __ldg(params.refs + 2 * (g * RF + r) + 1);
            cp_async16(buf + (rb * ATOM_M + lr) * PITCH + cc * 16,
                       params.pool + (u64)j * nn + (u64)((i + o) & (n - 1)) * n + col0 + cc * 16);
          }
          asm volatile("cp.async.commit_group;\n" ::);
          asm volatile("cp.async.wait_group 0;\n" ::: "memory");
          asm volatile("bar.sync %0, 128;\n" ::"r"(bar) : "memory");
          CUTLASS_PRAGMA_UNROLL
          for (int v = 0; v < size<0>(acc); v += 2) {
            CUTLASS_PRAGMA_UNROLL
            for (int q = 0; q < size<2>(acc); ++q) {
              const u32 i = get<0>(tCcD(v, m, q)), c = get<1>(tCcD(v, m, q));
              const int lr = (int)(i - row_lo), lc = (int)(c - col0);
              u32 v0 = (u32)accw(v, m, q), v1 = (u32)accw(v + 1, m, q);
              CUTLASS_PRAGMA_UNROLL
              for (int rb = 0; rb < SR; ++rb) {
                const unsigned short w = *reinterpret_cast<const unsigned short*>(buf + (rb * ATOM_M + lr) * PITCH + lc);
                v0 += (u32)(int)(signed char)(w & 0xFF);
                v1 += (u32)(int)(signed char)(w >> 8);
              }
              if (r0 + SR < RF) {
                accw(v, m, q) = (int)v0;
                accw(v + 1, m, q) = (int)v1;
              } else {
                const u32 sv = __ldg(params.salt + i);
                *reinterpret_cast<unsigned short*>(params.out + (u64)i * n + c) =
                    (unsigned short)(mix32(v0 + sv) | (mix32(v1 + sv) << 8));
              }
            }
          }
          asm volatile("bar.sync %0, 128;\n" ::"r"(bar) : "memory");  // the buffer is refilled next
        }
      }
    }
  }

 private:
  Params params;
};

template <class TileShape, class ClusterShape, class Schedule, int SR>
struct Step {
  using Epi = PowEpilogue<decltype(size<1>(TileShape{}))::value, SR>;
  using Epilogue = cutlass::epilogue::collective::detail::Sm90TmaWarpSpecializedAdapter<Epi>;
  using Mainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, int8_t, cutlass::layout::RowMajor, 16, int8_t,
      cutlass::layout::ColumnMajor, 16, int32_t, TileShape, ClusterShape,
      cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(sizeof(typename Epi::SharedStorage))>,
      Schedule>::CollectiveOp;
  using Kernel = cutlass::gemm::kernel::GemmUniversal<Shape<int, int, int, int>, Mainloop, Epilogue>;
  using Gemm = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;

  static int run(const void* X, const void* Bt, const PowEpilogueParams& ep, int sm_count, int swizzle, int raster,
                 cudaStream_t stream) {
    // One adapter per variant: update() re-encodes the TMA descriptors for new pointers; a new
    // device gets initialize() (it sets the kernel's shared-memory limit there). Engines of several
    // devices may run in threads of one process: the lock keeps one launch at a time per variant.
    static std::mutex lock;
    static Gemm gemm;
    static int ready_device = -1;
    std::lock_guard<std::mutex> guard(lock);
    int device = 0;
    if (cudaGetDevice(&device) != cudaSuccess) return 7;
    const int n = (int)ep.n;
    using StrideA = typename Kernel::StrideA;
    using StrideB = typename Kernel::StrideB;
    StrideA sa = cutlass::make_cute_packed_stride(StrideA{}, make_shape(n, n, 1));
    StrideB sb = cutlass::make_cute_packed_stride(StrideB{}, make_shape(n, n, 1));
    typename Gemm::Arguments args{cutlass::gemm::GemmUniversalMode::kGemm,
                                  {n, n, n, 1},
                                  {reinterpret_cast<const int8_t*>(X), sa, reinterpret_cast<const int8_t*>(Bt), sb},
                                  ep};
    args.hw_info.device_id = device;
    args.hw_info.sm_count = sm_count;
    // Tile order of the persistent scheduler: swizzle 1, 2, 4 or 8; raster 0 heuristic, 1 along M, 2 along N.
    using Raster = typename cutlass::gemm::kernel::detail::PersistentTileSchedulerSm90Params::RasterOrderOptions;
    args.scheduler.max_swizzle_size = swizzle;
    args.scheduler.raster_order = raster == 1 ? Raster::AlongM : raster == 2 ? Raster::AlongN : Raster::Heuristic;
    if (gemm.can_implement(args) != cutlass::Status::kSuccess) return 2;
    if (Gemm::get_workspace_size(args) != 0) return 3;
    cutlass::Status st = ready_device == device ? gemm.update(args, nullptr) : gemm.initialize(args, nullptr, stream);
    if (st != cutlass::Status::kSuccess) return 4;
    ready_device = device;
    st = gemm.run(stream);
    if (st != cutlass::Status::kSuccess) return 5;
    return cudaGetLastError() == cudaSuccess ? 0 : 6;
  }
};

using PP = cutlass::gemm::KernelTmaWarpSpecializedPingpong;
using CO = cutlass::gemm::KernelTmaWarpSpecializedCooperative;
using V0 = Step<Shape<_128, _128, _128>, Shape<_1, _1, _1>, PP, 4>;
using V1 = Step<Shape<_128, _128, _128>, Shape<_2, _1, _1>, PP, 4>;
using V2 = Step<Shape<_128, _128, _128>, Shape<_1, _2, _1>, PP, 4>;
using V3 = Step<Shape<_128, _128, _128>, Shape<_2, _1, _1>, PP, 0>;
using V4 = Step<Shape<_128, _256, _128>, Shape<_1, _2, _1>, CO, 0>;
using V5 = Step<Shape<_128, _128, _128>, Shape<_1, _1, _1>, PP, 1>;
using V6 = Step<Shape<_128, _128, _128>, Shape<_1, _1, _1>, PP, 2>;

}  // namespace gpow

#ifndef GPOW_SOURCE_HASH
#define GPOW_SOURCE_HASH "unknown"
#endif

extern "C" {

// The SHA-256 of the sources this library was built from (node/gpu/cutlass_step.py checks it).
const char* gpow_cutlass_source_hash() { return GPOW_SOURCE_HASH; }

// Rows and columns of each variant's cluster of tiles (tile x cluster shape): n must be a multiple of
// both (the epilogue stores without bounds checks, and a cluster's CTAs must all have a tile).
int gpow_cutlass_variants(int* tile_m, int* tile_n, int cap) {
  const int tm[] = {128, 256, 128, 256, 128, 128, 128}, tn[] = {128, 128, 256, 128, 512, 128, 128};
  const int count = 7;
  for (int v = 0; v < count && v < cap; ++v) {
    tile_m[v] = tm[v];
    tile_n[v] = tn[v];
  }
  return count;
}

// One step (or, with out32, the bare product) on `stream`. 0 on success, else a code for the log.
int gpow_cutlass_step(int variant, const void* X, const void* Bt, const void* pool, const void* refs, const void* salt,
                      void* out, void* out32, int n, int sm_count, int swizzle, int raster, void* stream) {
  gpow::PowEpilogueParams ep;
  ep.pool = static_cast<const signed char*>(pool);
  ep.refs = static_cast<const u32*>(refs);
  ep.salt = static_cast<const u32*>(salt);
  ep.out = static_cast<signed char*>(out);
  ep.out32 = static_cast<int*>(out32);
  ep.n = (u32)n;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  switch (variant) {
    case 0: return gpow::V0::run(X, Bt, ep, sm_count, swizzle, raster, s);
    case 1: return gpow::V1::run(X, Bt, ep, sm_count, swizzle, raster, s);
    case 2: return gpow::V2::run(X, Bt, ep, sm_count, swizzle, raster, s);
    case 3: return gpow::V3::run(X, Bt, ep, sm_count, swizzle, raster, s);
    case 4: return gpow::V4::run(X, Bt, ep, sm_count, swizzle, raster, s);
    case 5: return gpow::V5::run(X, Bt, ep, sm_count, swizzle, raster, s);
    case 6: return gpow::V6::run(X, Bt, ep, sm_count, swizzle, raster, s);
    default: return 1;
  }
}

}  // extern "C"
