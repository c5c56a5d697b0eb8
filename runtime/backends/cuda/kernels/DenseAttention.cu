//===- DenseAttention.cu - flash-style attention, forward and backward ----===//
//
// Flash-style (docs/cuda-attention.md): a block owns 64 rows of one
// (batch, head) and streams the other side through shared memory 32 rows at
// a time; the forward keeps a running max and sum per query (online
// softmax), so nothing of size [S, S] is ever stored and the sequence length
// is unbounded. The backward first runs the forward once more to write each
// query's log-sum-exp and dy . out to scratch, then one kernel sums dq by
// query tiles and one sums dk, dv by key tiles, each recomputing the
// probabilities: every output element is written by one thread, in a fixed
// order, without atomics (deterministic). Key tiles no query of the block
// sees (causal, window) are never visited. Math is fp32 SIMT at either
// MathPrecision.
//
//===----------------------------------------------------------------------===//

#include "runtime/backends/cuda/kernels/DenseCommon.cuh"

#include <climits>
#include <cmath>

namespace flexmoe::cuda {

namespace {

constexpr int kOwn = kAttentionOwnRows, kStream = kAttentionStreamRows;
/// Row stride of the [kOwn][kStream] tiles (padded against bank conflicts).
constexpr int kStreamLd = kStream + 1;
constexpr unsigned kFullMask = 0xffffffffu;

static_assert(kAttentionThreads == 256 && kOwn == 64 && kStream == 32,
              "the thread layouts below assume 256 threads on 64 x 32 tiles");

// Score layout: the [kOwn][kStream] tile, 2 x 4 entries per thread.
__device__ inline int scoreRow(int a) { return threadIdx.x / 8 + 32 * a; }
__device__ inline int scoreCol(int b) { return threadIdx.x % 8 + 8 * b; }
// Accumulator layout: the [kOwn][T] tile, 4 x T/16 entries per thread; the
// 16 threads of a row are 16 consecutive lanes (half a warp).
__device__ inline int accRow(int a) { return threadIdx.x / 16 + 16 * a; }
__device__ inline int accCol(int b) { return threadIdx.x % 16 + 16 * b; }

__device__ inline bool sees(int64_t query, int64_t key,
                            const AttentionConfig &config) {
  const AttentionRange keys = attentionKeysSeenBy(query, config);
  return key >= keys.lo && key <= keys.hi;
}

/// tile[r][c] = x[(first + r) · ld + col0 + c] for r < count, c < width, and
/// 0 elsewhere in the [rows][T + 1] tile, so that padding adds nothing to
/// any product (and never reads past the tensor).
template <int T>
__device__ void loadRows(float *tile, int rows, const float *x, int64_t ld,
                         int64_t first, int64_t count, int64_t col0,
                         int64_t width) {
  for (int e = threadIdx.x; e < rows * T; e += kAttentionThreads) {
    const int r = e / T, c = e % T;
    float value = 0.0f;
    if (r < count && c < width)
      value = x[(first + r) * ld + col0 + c];
    tile[r * (T + 1) + c] = value;
  }
}

/// acc[a][b] += Σ_{d < width} own[scoreRow(a)][d] · stream[scoreCol(b)][d]
/// (own is [kOwn][T + 1], stream [kStream][T + 1]).
template <int T>
__device__ void scoreProduct(const float *own, const float *stream, int width,
                             float (&acc)[2][4]) {
  for (int d = 0; d < width; ++d) {
    float x[2], y[4];
#pragma unroll
    for (int a = 0; a < 2; ++a)
      x[a] = own[scoreRow(a) * (T + 1) + d];
#pragma unroll
    for (int b = 0; b < 4; ++b)
      y[b] = stream[scoreCol(b) * (T + 1) + d];
#pragma unroll
    for (int a = 0; a < 2; ++a)
#pragma unroll
      for (int b = 0; b < 4; ++b)
        acc[a][b] = fmaf(x[a], y[b], acc[a][b]);
  }
}

/// acc[a][b] += Σ_{j < kStream} weights[accRow(a)][j] · stream[j][accCol(b)]
/// (weights is [kOwn][kStreamLd], stream [kStream][T + 1]).
template <int T>
__device__ void accumulateProduct(const float *weights, const float *stream,
                                  float (&acc)[4][T / 16]) {
  for (int j = 0; j < kStream; ++j) {
    float w[4];
#pragma unroll
    for (int a = 0; a < 4; ++a)
      w[a] = weights[accRow(a) * kStreamLd + j];
#pragma unroll
    for (int b = 0; b < T / 16; ++b) {
      const float y = stream[j * (T + 1) + accCol(b)];
#pragma unroll
      for (int a = 0; a < 4; ++a)
        acc[a][b] = fmaf(w[a], y, acc[a][b]);
    }
  }
}

/// dy . out of a row: the column chunks' partial sums, in chunk order.
__device__ inline float rowDotOf(const float *partials, int64_t rows,
                                 int64_t chunks, int64_t row) {
  float sum = 0.0f;
  for (int64_t c = 0; c < chunks; ++c)
    sum += partials[c * rows + row];
  return sum;
}

/// Where a block is: its (batch, head) task, its own rows and its columns.
struct BlockPlace {
  int64_t head;  // offset of the head's column 0, row 0 in [B, S, D]
  int64_t task;  // b · heads + h
  int64_t first; // first own row
  int64_t count; // own rows in the sequence (1..kOwn)
  int64_t col0;  // first output column of the head
  int64_t width; // output columns (1..T)
};

template <int T>
__device__ BlockPlace placeOf(const AttentionConfig &config,
                              const AttentionPlan &plan) {
  BlockPlace place;
  place.task = blockIdx.x / plan.ownTiles;
  place.first = (blockIdx.x % plan.ownTiles) * kOwn;
  place.count = min(static_cast<int64_t>(kOwn), config.seq - place.first);
  place.head = (place.task / config.numHeads) * config.seq * config.dim +
               (place.task % config.numHeads) * plan.headDim;
  place.col0 = static_cast<int64_t>(blockIdx.y) * T;
  place.width = min(static_cast<int64_t>(T), plan.headDim - place.col0);
  return place;
}

/// The forward over kOwn query rows and the block's output columns. Writes
/// out (where set); the rows' log-sum-exp (where lse is set, from column
/// chunk 0); the chunk's partial dy . out of each row (where rowDot is set;
/// [columnChunks][tasks · seq]).
template <int T>
__global__ void __launch_bounds__(kAttentionThreads)
    attentionForwardKernel(const float *q, const float *k, const float *v,
                           const float *dy, AttentionConfig config,
                           AttentionPlan plan, float *out, float *lse,
                           float *rowDot) {
  constexpr int64_t kLd = T + 1;
  constexpr int64_t kOffK = kOwn * kLd, kOffV = kOffK + kStream * kLd,
                    kOffP = kOffV + kStream * kLd,
                    kOffRescale = kOffP + kOwn * kStreamLd;
  static_assert(kOffRescale + kOwn == attentionForwardSharedFloats(T));
  extern __shared__ float shared[];
  float *qs = shared, *ks = shared + kOffK, *vs = shared + kOffV,
        *ps = shared + kOffP, *rowRescale = shared + kOffRescale;

  const int64_t S = config.seq, D = config.dim, hd = plan.headDim;
  const BlockPlace place = placeOf<T>(config, plan);
  const float *qh = q + place.head, *kh = k + place.head, *vh = v + place.head;
  const AttentionRange keys{
      attentionKeysSeenBy(place.first, config).lo,
      attentionKeysSeenBy(place.first + place.count - 1, config).hi};
  const bool qResident = plan.columnChunks == 1;
  if (qResident)
    loadRows<T>(qs, kOwn, qh, D, place.first, place.count, 0, hd);

  // The softmax state of row statRow, kept alike by its 4 threads.
  const int statRow = threadIdx.x / 4, statPart = threadIdx.x % 4;
  float rowMax = -INFINITY, rowSum = 0.0f;
  float acc[4][T / 16] = {};
  for (int64_t j0 = keys.lo; j0 <= keys.hi; j0 += kStream) {
    const int64_t kCount = min(static_cast<int64_t>(kStream), keys.hi + 1 - j0);
    __syncthreads(); // the last tile's products are done with vs, ps
    loadRows<T>(vs, kStream, vh, D, j0, kCount, place.col0, place.width);
    float s[2][4] = {};
    for (int64_t n = 0; n < plan.columnChunks; ++n) {
      const int64_t d0 = n * T;
      const int width = static_cast<int>(min(static_cast<int64_t>(T), hd - d0));
      if (n > 0)
        __syncthreads(); // the last chunk's products are done with qs, ks
      if (!qResident)
        loadRows<T>(qs, kOwn, qh, D, place.first, place.count, d0, width);
      loadRows<T>(ks, kStream, kh, D, j0, kCount, d0, width);
      __syncthreads();
      scoreProduct<T>(qs, ks, width, s);
    }
#pragma unroll
    for (int a = 0; a < 2; ++a)
#pragma unroll
      for (int b = 0; b < 4; ++b) {
        const int r = scoreRow(a), c = scoreCol(b);
        const bool visible = r < place.count && c < kCount &&
                             sees(place.first + r, j0 + c, config);
        ps[r * kStreamLd + c] = visible ? s[a][b] * plan.scale : -INFINITY;
      }
    __syncthreads();

    // Online softmax: each thread reads and writes only its own columns of
    // the row; the 4 threads combine by shuffles (all lanes take part).
    float *row = ps + statRow * kStreamLd;
    float tileMax = -INFINITY;
    for (int c = statPart; c < kStream; c += 4)
      tileMax = fmaxf(tileMax, row[c]);
    tileMax = fmaxf(tileMax, __shfl_xor_sync(kFullMask, tileMax, 1));
    tileMax = fmaxf(tileMax, __shfl_xor_sync(kFullMask, tileMax, 2));
    const float newMax = fmaxf(rowMax, tileMax);
    // A row that has seen no key yet has only -inf scores: its exps are 0.
    const float shift = newMax == -INFINITY ? 0.0f : newMax;
    float tileSum = 0.0f;
    for (int c = statPart; c < kStream; c += 4) {
      const float p = expf(row[c] - shift);
      row[c] = p;
      tileSum += p;
    }
    tileSum += __shfl_xor_sync(kFullMask, tileSum, 1);
    tileSum += __shfl_xor_sync(kFullMask, tileSum, 2);
    const float rescale = expf(rowMax - shift); // 0 while rowMax is -inf
    rowSum = rowSum * rescale + tileSum;
    rowMax = newMax;
    if (statPart == 0)
      rowRescale[statRow] = rescale;
    __syncthreads();

#pragma unroll
    for (int a = 0; a < 4; ++a) {
      const float f = rowRescale[accRow(a)];
#pragma unroll
      for (int b = 0; b < T / 16; ++b)
        acc[a][b] *= f;
    }
    accumulateProduct<T>(ps, vs, acc);
  }

  __syncthreads(); // the last tile's products are done with rowRescale
  if (statPart == 0) {
    // Every query sees itself, so rows in the sequence have rowSum > 0.
    rowRescale[statRow] = rowSum > 0.0f ? 1.0f / rowSum : 0.0f;
    if (lse && blockIdx.y == 0 && statRow < place.count)
      lse[place.task * S + place.first + statRow] = rowMax + logf(rowSum);
  }
  __syncthreads();
  const int64_t rows = plan.tasks * S;
#pragma unroll
  for (int a = 0; a < 4; ++a) {
    const int r = accRow(a);
    const int64_t at = place.head + (place.first + r) * D + place.col0;
    const float inverse = rowRescale[r];
    float dot = 0.0f;
#pragma unroll
    for (int b = 0; b < T / 16; ++b) {
      const int c = accCol(b);
      if (r < place.count && c < place.width) {
        const float o = acc[a][b] * inverse;
        if (out)
          out[at + c] = o;
        if (rowDot)
          dot = fmaf(o, dy[at + c], dot);
      }
    }
    if (rowDot) { // the same for the whole block: every lane shuffles
      for (int offset = 8; offset > 0; offset /= 2)
        dot += __shfl_xor_sync(kFullMask, dot, offset);
      if (threadIdx.x % 16 == 0 && r < place.count)
        rowDot[blockIdx.y * rows + place.task * S + place.first + r] = dot;
    }
  }
}

/// dq of kOwn query rows, the block's columns: dq_i = Σ_j ds_ij k_j with
/// ds_ij = p_ij (dy_i·v_j − dy_i·out_i) · scale, p_ij = exp(scale q_i·k_j −
/// lse_i).
template <int T>
__global__ void __launch_bounds__(kAttentionThreads)
    attentionGradQueryKernel(const float *q, const float *k, const float *v,
                             const float *dy, AttentionConfig config,
                             AttentionPlan plan, const float *lse,
                             const float *rowDot, float *dq) {
  constexpr int64_t kLd = T + 1;
  constexpr int64_t kOffDy = kOwn * kLd, kOffK = kOffDy + kOwn * kLd,
                    kOffV = kOffK + kStream * kLd,
                    kOffDs = kOffV + kStream * kLd,
                    kOffLse = kOffDs + kOwn * kStreamLd,
                    kOffDot = kOffLse + kOwn;
  static_assert(kOffDot + kOwn == attentionGradQuerySharedFloats(T));
  extern __shared__ float shared[];
  float *qs = shared, *dys = shared + kOffDy, *ks = shared + kOffK,
        *vs = shared + kOffV, *dss = shared + kOffDs,
        *rowLse = shared + kOffLse, *rowD = shared + kOffDot;

  const int64_t S = config.seq, D = config.dim, hd = plan.headDim;
  const BlockPlace place = placeOf<T>(config, plan);
  const float *qh = q + place.head, *kh = k + place.head, *vh = v + place.head,
              *dyh = dy + place.head;
  const AttentionRange keys{
      attentionKeysSeenBy(place.first, config).lo,
      attentionKeysSeenBy(place.first + place.count - 1, config).hi};
  const int64_t rows = plan.tasks * S;
  if (threadIdx.x < kOwn) {
    const int r = threadIdx.x;
    const int64_t row = place.task * S + place.first + r;
    rowLse[r] = r < place.count ? lse[row] : 0.0f;
    rowD[r] =
        r < place.count ? rowDotOf(rowDot, rows, plan.columnChunks, row) : 0.0f;
  }
  const bool resident = plan.columnChunks == 1;
  if (resident) {
    loadRows<T>(qs, kOwn, qh, D, place.first, place.count, 0, hd);
    loadRows<T>(dys, kOwn, dyh, D, place.first, place.count, 0, hd);
  }

  float acc[4][T / 16] = {};
  for (int64_t j0 = keys.lo; j0 <= keys.hi; j0 += kStream) {
    const int64_t kCount = min(static_cast<int64_t>(kStream), keys.hi + 1 - j0);
    float s[2][4] = {}, dp[2][4] = {};
    for (int64_t n = 0; n < plan.columnChunks; ++n) {
      // The block's own column chunk comes last, so that ks holds it for
      // the dq product below.
      const int64_t d0 = ((blockIdx.y + 1 + n) % plan.columnChunks) * T;
      const int width = static_cast<int>(min(static_cast<int64_t>(T), hd - d0));
      __syncthreads(); // the last products are done with every tile
      if (!resident) {
        loadRows<T>(qs, kOwn, qh, D, place.first, place.count, d0, width);
        loadRows<T>(dys, kOwn, dyh, D, place.first, place.count, d0, width);
      }
      loadRows<T>(ks, kStream, kh, D, j0, kCount, d0, width);
      loadRows<T>(vs, kStream, vh, D, j0, kCount, d0, width);
      __syncthreads();
      scoreProduct<T>(qs, ks, width, s);
      scoreProduct<T>(dys, vs, width, dp);
    }
#pragma unroll
    for (int a = 0; a < 2; ++a)
#pragma unroll
      for (int b = 0; b < 4; ++b) {
        const int r = scoreRow(a), c = scoreCol(b);
        float ds = 0.0f;
        if (r < place.count && c < kCount &&
            sees(place.first + r, j0 + c, config)) {
          const float p = expf(s[a][b] * plan.scale - rowLse[r]);
          ds = p * (dp[a][b] - rowD[r]) * plan.scale;
        }
        dss[r * kStreamLd + c] = ds;
      }
    __syncthreads();
    accumulateProduct<T>(dss, ks, acc);
  }

#pragma unroll
  for (int a = 0; a < 4; ++a) {
    const int r = accRow(a);
    const int64_t at = place.head + (place.first + r) * D + place.col0;
#pragma unroll
    for (int b = 0; b < T / 16; ++b) {
      const int c = accCol(b);
      if (r < place.count && c < place.width)
        dq[at + c] = acc[a][b];
    }
  }
}

/// dk, dv of kOwn key rows, the block's columns: dv_j = Σ_i p_ij dy_i and
/// dk_j = Σ_i ds_ij q_i over the queries that see key j.
template <int T>
__global__ void __launch_bounds__(kAttentionThreads)
    attentionGradKeyKernel(const float *q, const float *k, const float *v,
                           const float *dy, AttentionConfig config,
                           AttentionPlan plan, const float *lse,
                           const float *rowDot, float *dk, float *dv) {
  constexpr int64_t kLd = T + 1;
  constexpr int64_t kOffV = kOwn * kLd, kOffQ = kOffV + kOwn * kLd,
                    kOffDy = kOffQ + kStream * kLd,
                    kOffP = kOffDy + kStream * kLd,
                    kOffDs = kOffP + kOwn * kStreamLd,
                    kOffLse = kOffDs + kOwn * kStreamLd,
                    kOffDot = kOffLse + kStream;
  static_assert(kOffDot + kStream == attentionGradKeySharedFloats(T));
  extern __shared__ float shared[];
  float *ks = shared, *vs = shared + kOffV, *qs = shared + kOffQ,
        *dys = shared + kOffDy, *ps = shared + kOffP, *dss = shared + kOffDs,
        *queryLse = shared + kOffLse, *queryD = shared + kOffDot;

  const int64_t S = config.seq, D = config.dim, hd = plan.headDim;
  const BlockPlace place = placeOf<T>(config, plan); // own rows are keys
  const float *qh = q + place.head, *kh = k + place.head, *vh = v + place.head,
              *dyh = dy + place.head;
  const AttentionRange queries{
      attentionQueriesSeeing(place.first, config).lo,
      attentionQueriesSeeing(place.first + place.count - 1, config).hi};
  const int64_t rows = plan.tasks * S;
  const bool resident = plan.columnChunks == 1;
  if (resident) {
    loadRows<T>(ks, kOwn, kh, D, place.first, place.count, 0, hd);
    loadRows<T>(vs, kOwn, vh, D, place.first, place.count, 0, hd);
  }

  float accK[4][T / 16] = {}, accV[4][T / 16] = {};
  for (int64_t i0 = queries.lo; i0 <= queries.hi; i0 += kStream) {
    const int64_t qCount =
        min(static_cast<int64_t>(kStream), queries.hi + 1 - i0);
    float s[2][4] = {}, dp[2][4] = {};
    for (int64_t n = 0; n < plan.columnChunks; ++n) {
      // The block's own column chunk comes last: qs and dys then hold it.
      const int64_t d0 = ((blockIdx.y + 1 + n) % plan.columnChunks) * T;
      const int width = static_cast<int>(min(static_cast<int64_t>(T), hd - d0));
      __syncthreads(); // the last products are done with every tile
      if (n == 0 && threadIdx.x < kStream) {
        const int c = threadIdx.x;
        const int64_t row = place.task * S + i0 + c;
        queryLse[c] = c < qCount ? lse[row] : 0.0f;
        queryD[c] =
            c < qCount ? rowDotOf(rowDot, rows, plan.columnChunks, row) : 0.0f;
      }
      if (!resident) {
        loadRows<T>(ks, kOwn, kh, D, place.first, place.count, d0, width);
        loadRows<T>(vs, kOwn, vh, D, place.first, place.count, d0, width);
      }
      loadRows<T>(qs, kStream, qh, D, i0, qCount, d0, width);
      loadRows<T>(dys, kStream, dyh, D, i0, qCount, d0, width);
      __syncthreads();
      scoreProduct<T>(ks, qs, width, s);   // s[a][b] = k_j · q_i
      scoreProduct<T>(vs, dys, width, dp); // dp[a][b] = v_j · dy_i
    }
#pragma unroll
    for (int a = 0; a < 2; ++a)
#pragma unroll
      for (int b = 0; b < 4; ++b) {
        const int r = scoreRow(a), c = scoreCol(b); // key r, query c
        float p = 0.0f, ds = 0.0f;
        if (r < place.count && c < qCount &&
            sees(i0 + c, place.first + r, config)) {
          p = expf(s[a][b] * plan.scale - queryLse[c]);
          ds = p * (dp[a][b] - queryD[c]) * plan.scale;
        }
        ps[r * kStreamLd + c] = p;
        dss[r * kStreamLd + c] = ds;
      }
    __syncthreads();
    accumulateProduct<T>(ps, dys, accV);
    accumulateProduct<T>(dss, qs, accK);
  }

#pragma unroll
  for (int a = 0; a < 4; ++a) {
    const int r = accRow(a);
    const int64_t at = place.head + (place.first + r) * D + place.col0;
#pragma unroll
    for (int b = 0; b < T / 16; ++b) {
      const int c = accCol(b);
      if (r < place.count && c < place.width) {
        dk[at + c] = accK[a][b];
        dv[at + c] = accV[a][b];
      }
    }
  }
}

/// Lets `kernel` use `bytes` of dynamic shared memory (above the default
/// 48 KiB needs an opt-in), or says why it cannot.
template <typename Kernel>
Status allowShared(Kernel kernel, size_t bytes, const char *what) {
  int device = 0, optIn = 0;
  if (Status s = cudaStatus(cudaGetDevice(&device), what); !s.isOk())
    return s;
  if (Status s = cudaStatus(
          cudaDeviceGetAttribute(
              &optIn, cudaDevAttrMaxSharedMemoryPerBlockOptin, device),
          what);
      !s.isOk())
    return s;
  if (bytes > static_cast<size_t>(optIn))
    return errorf(what, " needs ", bytes,
                  " bytes of shared memory per block; this GPU allows ", optIn);
  return cudaStatus(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                           static_cast<int>(bytes)),
      what);
}

dim3 gridOf(const AttentionPlan &plan) {
  return dim3(static_cast<unsigned>(plan.tasks * plan.ownTiles),
              static_cast<unsigned>(plan.columnChunks));
}

template <int T>
Status launchForward(const float *q, const float *k, const float *v,
                     const float *dy, const AttentionConfig &config,
                     const AttentionPlan &plan, float *out, float *lse,
                     float *rowDot, cudaStream_t stream, const char *what) {
  if (Status s =
          allowShared(attentionForwardKernel<T>, plan.forwardSharedBytes, what);
      !s.isOk())
    return s;
  attentionForwardKernel<T>
      <<<gridOf(plan), kAttentionThreads, plan.forwardSharedBytes, stream>>>(
          q, k, v, dy, config, plan, out, lse, rowDot);
  return launched(what);
}

template <int T>
Status launchGrad(const float *q, const float *k, const float *v,
                  const float *dy, const AttentionConfig &config,
                  const AttentionPlan &plan, float *lse, float *rowDot,
                  float *dq, float *dk, float *dv, cudaStream_t stream) {
  constexpr const char *kWhat = "attention grad kernel";
  if (Status s = launchForward<T>(q, k, v, dy, config, plan, nullptr, lse,
                                  rowDot, stream, kWhat);
      !s.isOk())
    return s;
  if (Status s = allowShared(attentionGradQueryKernel<T>,
                             plan.gradQuerySharedBytes, kWhat);
      !s.isOk())
    return s;
  attentionGradQueryKernel<T>
      <<<gridOf(plan), kAttentionThreads, plan.gradQuerySharedBytes, stream>>>(
          q, k, v, dy, config, plan, lse, rowDot, dq);
  if (Status s = launched(kWhat); !s.isOk())
    return s;
  if (Status s = allowShared(attentionGradKeyKernel<T>, plan.gradKeySharedBytes,
                             kWhat);
      !s.isOk())
    return s;
  attentionGradKeyKernel<T>
      <<<gridOf(plan), kAttentionThreads, plan.gradKeySharedBytes, stream>>>(
          q, k, v, dy, config, plan, lse, rowDot, dk, dv);
  return launched(kWhat);
}

} // namespace

StatusOr<AttentionPlan> planAttention(const AttentionConfig &config) {
  if (config.batch < 0 || config.seq < 0 || config.dim < 0)
    return errorf("attention sizes [", config.batch, ",", config.seq, ",",
                  config.dim, "] must not be negative");
  if (config.numHeads <= 0 || config.dim % config.numHeads != 0)
    return errorf("attention num_heads ", config.numHeads,
                  " does not divide the model dimension ", config.dim);
  if (config.window < 0)
    return errorf("attention window ", config.window, " is negative");
  AttentionPlan plan;
  plan.headDim = config.dim / config.numHeads;
  plan.headTile = plan.headDim <= 32 ? 32 : plan.headDim <= 64 ? 64 : 128;
  plan.columnChunks = (plan.headDim + plan.headTile - 1) / plan.headTile;
  // heads <= dim when dim > 0, so batch x heads fits like the tensor does.
  plan.tasks = plan.headDim == 0 ? 0 : config.batch * config.numHeads;
  plan.ownTiles = (config.seq + kAttentionOwnRows - 1) / kAttentionOwnRows;
  plan.scale = plan.headDim == 0
                   ? 1.0f
                   : static_cast<float>(
                         1.0 / std::sqrt(static_cast<double>(plan.headDim)));
  plan.forwardSharedBytes =
      attentionForwardSharedFloats(plan.headTile) * sizeof(float);
  plan.gradQuerySharedBytes =
      attentionGradQuerySharedFloats(plan.headTile) * sizeof(float);
  plan.gradKeySharedBytes =
      attentionGradKeySharedFloats(plan.headTile) * sizeof(float);
  if (plan.empty())
    return plan;
  if (plan.tasks > INT_MAX / plan.ownTiles)
    return errorf("attention over ", config.batch, " x ", config.numHeads,
                  " heads of ", config.seq, " positions needs ",
                  plan.tasks * plan.ownTiles,
                  " blocks, more than a CUDA grid holds (", INT_MAX, ")");
  if (plan.columnChunks > 65535)
    return errorf("attention head dim ", plan.headDim,
                  " needs more column blocks than a CUDA grid holds");
  const int64_t rows = plan.tasks * config.seq;
  plan.gradScratchBytes = static_cast<size_t>(rows) *
                          static_cast<size_t>(1 + plan.columnChunks) *
                          sizeof(float);
  return plan;
}

Status attentionKernel(const float *q, const float *k, const float *v,
                       const AttentionConfig &config, float *out,
                       cudaStream_t stream) {
  StatusOr<AttentionPlan> plan = planAttention(config);
  if (!plan)
    return plan.status();
  if (plan->empty())
    return Status::ok();
  constexpr const char *kWhat = "attention kernel";
  switch (plan->headTile) {
  case 32:
    return launchForward<32>(q, k, v, nullptr, config, *plan, out, nullptr,
                             nullptr, stream, kWhat);
  case 64:
    return launchForward<64>(q, k, v, nullptr, config, *plan, out, nullptr,
                             nullptr, stream, kWhat);
  default:
    return launchForward<128>(q, k, v, nullptr, config, *plan, out, nullptr,
                              nullptr, stream, kWhat);
  }
}

Status attentionGradKernel(const float *q, const float *k, const float *v,
                           const float *dy, const AttentionConfig &config,
                           float *dq, float *dk, float *dv,
                           LaunchContext &context) {
  StatusOr<AttentionPlan> plan = planAttention(config);
  if (!plan)
    return plan.status();
  if (plan->empty())
    return Status::ok();
  StatusOr<void *> scratch = context.scratch(plan->gradScratchBytes);
  if (!scratch)
    return scratch.status();
  float *lse = static_cast<float *>(*scratch);
  float *rowDot = lse + plan->tasks * config.seq;
  switch (plan->headTile) {
  case 32:
    return launchGrad<32>(q, k, v, dy, config, *plan, lse, rowDot, dq, dk, dv,
                          context.stream);
  case 64:
    return launchGrad<64>(q, k, v, dy, config, *plan, lse, rowDot, dq, dk, dv,
                          context.stream);
  default:
    return launchGrad<128>(q, k, v, dy, config, *plan, lse, rowDot, dq, dk, dv,
                           context.stream);
  }
}

} // namespace flexmoe::cuda
