// rankbias native training step for fully connected cohorts (see __init__.py).
//
// One call = one SGD step of every member of a cohort of R fully connected networks: forward,
// loss, backward and the update, member by member, the members spread over threads. A member is
// processed whole by one thread, in a fixed order of operations that depends only on its own
// shapes, so its arithmetic (to the bit) does not depend on the cohort's size, its position in
// the cohort or the thread count.
//
// A network is a chain of layers; layer l maps its input A[l] (in_l features) to A[l+1]:
//
//     Z = W A[l] (+ b)      Y = BN(Z) or Z      A[l+1] = act(Y) (+ A[skip] for a residual block)
//
// Activations are stored feature by feature, a row of B values per feature (the batch is the
// vector lanes); each layer's input is also kept sample by sample for the weight gradient, which
// runs along the input features. Every parameter has the member as its first dimension
// (contiguous (R, ...) arrays, member r at offset r·size).
//
// Update (PyTorch's SGD, per member): g = grad + wd·W; buf = μ·buf + g; d = nesterov ? g + μ·buf
// : buf (d = g without buffers); W -= lr·d.

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace {

enum { ACT_NONE = 0, ACT_RELU = 1, ACT_LEAKY = 2 };
enum { BN_NONE = 0, BN_PLAIN = 1, BN_DETACHED = 2 };
enum { LOSS_CE = 0, LOSS_MSE_ONEHOT = 1, LOSS_MSE_SCALAR = 2 };
enum { P_W, P_B, P_GAMMA, P_BETA, P_RMEAN, P_RVAR, P_BUF_W, P_BUF_B, P_BUF_GAMMA, P_BUF_BETA, N_PTRS };
constexpr int N_INTS = 6;  // in, out, bias, bn, act, skip (-1: none)
constexpr int PAD = 16;    // elements after each scratch buffer (the general path's partial vectors read them)

struct Layer {
  int64_t in, out;
  bool bias;
  int bn, act, skip;
  void* const* ptrs;
};

template <typename T>
struct Hyper {
  T lr, mom, wd;
  bool nesterov, decay;
};

// -- per-thread scratch ------------------------------------------------------------------------
template <typename T>
struct Scratch {
  std::vector<std::vector<T>> act;       // A[l] feature-major (in_l, B); A[L] = outputs (C, B)
  std::vector<std::vector<T>> act_s;     // A[l] sample-major (B, in_l)
  std::vector<std::vector<T>> pre;       // Y[l] before the activation (out, B), if act
  std::vector<std::vector<T>> xhat;      // BN normalized (out, B)
  std::vector<std::vector<T>> inv_std;   // BN 1/sqrt(var + eps) (out)
  std::vector<std::vector<T>> grad;      // dA[l] (in_l, B); grad[L] = d outputs
  std::vector<T> dz, dgamma, dbeta, db;  // one layer's at a time

  void resize(const std::vector<Layer>& layers, int B) {
    size_t L = layers.size();
    act.resize(L + 1), act_s.resize(L), pre.resize(L), xhat.resize(L), inv_std.resize(L), grad.resize(L + 1);
    int64_t widest = 0;
    for (size_t l = 0; l < L; ++l) {
      const Layer& y = layers[l];
      act[l].resize(y.in * B + PAD), act_s[l].resize(y.in * B + PAD), grad[l].resize(y.in * B + PAD);
      pre[l].resize(y.act != ACT_NONE ? y.out * B + PAD : 0);
      xhat[l].resize(y.bn != BN_NONE ? y.out * B + PAD : 0);
      inv_std[l].resize(y.bn != BN_NONE ? y.out : 0);
      if (y.out > widest) widest = y.out;
    }
    act[L].resize(layers[L - 1].out * B + PAD), grad[L].resize(layers[L - 1].out * B + PAD);
    dz.resize(widest * B + PAD), dgamma.resize(widest), dbeta.resize(widest), db.resize(widest);
  }
};

// -- kernels -----------------------------------------------------------------------------------
// NB > 0: the batch size known at compile time, a multiple of a vector (the accumulators stay in
// registers: forward_rows, backward_cols); NB = 0: any batch size, in chunks of vectors
// (product, below). Every output element is the same chain of multiply-adds in the same order
// either way (vector lanes are independent elements).

template <typename T, int BYTES>
struct VecOf {
  typedef T type __attribute__((vector_size(BYTES)));
};

template <typename V, typename T>
inline V load(const T* p) {
  V v;
  std::memcpy(&v, p, sizeof(V));
  return v;
}

template <typename V, typename T>
inline void store(T* p, const V& v) {
  std::memcpy(p, &v, sizeof(V));
}

// bytes of the vectors along the batch for a batch of NB: 64 or 32 where NB fills them, else 0
template <typename T, int NB>
constexpr int lane_bytes() {
  return NB > 0 && (NB * sizeof(T)) % 64 == 0 ? 64 : NB > 0 && (NB * sizeof(T)) % 32 == 0 ? 32 : 0;
}

// software prefetch of the forward's weights into L2 (locality 2); without it the hidden layers'
// weights arrive from L3 at the hardware prefetchers' pace (measured: 6 % of the step at 1 thread)
constexpr bool PREFETCH = true;
constexpr int PREFETCH_LOCALITY = 2;

// Y[o][b] = sum_i W[o][i] X[i][b] (i in order from 0), for rows o0 .. o0 + RB - 1.
template <typename T, int NB, int RB>
inline void forward_rows(const T* __restrict W, int64_t in, const T* __restrict X, T* __restrict Y, int B) {
  constexpr int VB = lane_bytes<T, NB>();
  static_assert(VB > 0, "a compile-time batch fills whole vectors; other batches run product()");
  if constexpr (VB > 0) {
    using V = typename VecOf<T, VB>::type;
    constexpr int NV = NB * sizeof(T) / VB;
    V acc[RB][NV];
    for (int k = 0; k < RB; ++k)
      for (int v = 0; v < NV; ++v) acc[k][v] = V{} ;
    // the next block of rows (the weights come from L3: a member's weights do not all stay in
    // L2 between steps) is prefetched a cache line per row per cache line of this block's rows
    constexpr int CL = 64 / sizeof(T);
    const T* next = W + RB * in;
    for (int64_t i0 = 0; i0 < in; i0 += CL) {
      if constexpr (PREFETCH)
        for (int k = 0; k < RB; ++k) __builtin_prefetch(next + k * in + i0, 0, PREFETCH_LOCALITY);
      const int64_t i1 = i0 + CL < in ? i0 + CL : in;
      for (int64_t i = i0; i < i1; ++i) {
        const T* x = X + i * NB;
        V xv[NV];
        for (int v = 0; v < NV; ++v) xv[v] = load<V>(x + v * (VB / sizeof(T)));
        for (int k = 0; k < RB; ++k) {
          const T w = W[k * in + i];
          for (int v = 0; v < NV; ++v) acc[k][v] += w * xv[v];
        }
      }
    }
    for (int k = 0; k < RB; ++k)
      for (int v = 0; v < NV; ++v) store(Y + k * NB + v * (VB / sizeof(T)), acc[k][v]);
  }
}

template <typename T, int NB>
void linear_forward(const T* W, const T* bias, int64_t in, int64_t out, const T* X, T* Y, int B) {
  constexpr int RB = 8;  // 16 measured slower
  int64_t o = 0;
  for (; o + RB <= out; o += RB) forward_rows<T, NB, RB>(W + o * in, in, X, Y + o * B, B);
  for (; o < out; ++o) forward_rows<T, NB, 1>(W + o * in, in, X, Y + o * B, B);
  if (bias)
    for (int64_t o2 = 0; o2 < out; ++o2)
      for (int b = 0; b < B; ++b) Y[o2 * B + b] += bias[o2];
}

// dX[i][b] += sum_o W[o][i] dZ[o][b] (o in order from 0), for columns i0 .. i0 + RB - 1.
template <typename T, int NB, int RB>
inline void backward_cols(const T* __restrict W, int64_t in, int64_t out, const T* __restrict dZ, T* __restrict dX,
                          int B) {
  constexpr int VB = lane_bytes<T, NB>();
  static_assert(VB > 0, "a compile-time batch fills whole vectors; other batches run product()");
  if constexpr (VB > 0) {
    using V = typename VecOf<T, VB>::type;
    constexpr int NV = NB * sizeof(T) / VB;
    V acc[RB][NV];
    for (int k = 0; k < RB; ++k)
      for (int v = 0; v < NV; ++v) acc[k][v] = load<V>(dX + k * NB + v * (VB / sizeof(T)));
    for (int64_t o = 0; o < out; ++o) {
      const T* d = dZ + o * NB;
      V dv[NV];
      for (int v = 0; v < NV; ++v) dv[v] = load<V>(d + v * (VB / sizeof(T)));
      for (int k = 0; k < RB; ++k) {
        const T w = W[o * in + k];
        for (int v = 0; v < NV; ++v) acc[k][v] += w * dv[v];
      }
    }
    for (int k = 0; k < RB; ++k)
      for (int v = 0; v < NV; ++v) store(dX + k * NB + v * (VB / sizeof(T)), acc[k][v]);
  }
}

template <typename T, int NB>
void linear_backward_input(const T* W, int64_t in, int64_t out, const T* dZ, T* dX, int B) {
  constexpr int RB = 8;
  int64_t i = 0;
  for (; i + RB <= in; i += RB) backward_cols<T, NB, RB>(W + i, in, out, dZ, dX + i * B, B);
  for (; i < in; ++i) backward_cols<T, NB, 1>(W + i, in, out, dZ, dX + i * B, B);
}

// -- any batch size (NB = 0): the batch in chunks of vectors ---------------------------------
// The products run over rows of a runtime length B (the row stride), the batch cut into chunks of
// two 64-byte vectors, then one, then a narrower vector for the rest (a partial vector: only its
// first lanes are stored). Each output element is the same chain of multiply-adds in the same
// order however the batch is cut (lanes are independent elements), and the products' blocking
// over the summed index (partial sums stored and reloaded) leaves the chains as they are: a
// member's arithmetic depends only on its shapes and B. A partial vector reads past the end of a
// row, into the next row or the scratch buffers' padding (PAD elements): those lanes are dropped.
template <typename T, int BYTES>
using Vec = typename VecOf<T, BYTES>::type;

// lanes [0, n/2) + lanes [n/2, n), down to one lane
template <typename T, int BYTES>
inline T halves_sum(const Vec<T, BYTES>& a) {
  if constexpr (BYTES == sizeof(T)) {
    return a[0];
  } else {
    using H = Vec<T, BYTES / 2>;
    H lo, hi;
    std::memcpy(&lo, &a, sizeof(H));
    std::memcpy(&hi, reinterpret_cast<const char*>(&a) + sizeof(H), sizeof(H));
    return halves_sum<T, BYTES / 2>(lo + hi);
  }
}

// the sum over b in [0, B) of f(b): f(V{}, b) gives the 64-byte vector at b, f(T{}, b) the value
// at b. The whole vectors are added in order into one vector, its lanes summed by halves, then
// the remaining values one by one: an order that depends only on B.
template <typename T, typename F>
inline T batch_sum(int B, F f) {
  using V = Vec<T, 64>;
  constexpr int N = 64 / sizeof(T);
  T s = 0;
  int b = 0;
  if (B >= N) {
    V a = f(V{}, 0);
    for (b = N; b + N <= B; b += N) a += f(V{}, b);
    s = halves_sum<T, 64>(a);
  }
  for (; b < B; ++b) s += f(T{}, b);
  return s;
}

// f(V{}, b) for the 64-byte vectors of [0, B), then f(T{}, b) for the rest (element-wise work)
template <typename T, typename F>
inline void batch_each(int B, F f) {
  using V = Vec<T, 64>;
  constexpr int N = 64 / sizeof(T);
  int b = 0;
  for (; b + N <= B; b += N) f(V{}, b);
  for (; b < B; ++b) f(T{}, b);
}

// C[m][b] (+)= sum_{k0 <= k < k1} A(m, k) X[k][b] (k in order) for rows m of a block of RB and
// the batch columns [0, n) of a chunk of NV vectors of BYTES (n < their lanes: PARTIAL, the
// other lanes not stored). A(m, k) = TRANS ? A[k lda + m] : A[m lda + k]; X and C point at the
// chunk's first column, rows ld apart. LOAD: the sums go on from C's values, else from 0.
template <typename T, bool TRANS, int RB, int BYTES, int NV, bool PARTIAL>
inline void product_chunk(const T* __restrict A, int64_t lda, int64_t k0, int64_t k1, const T* __restrict X,
                          T* __restrict C, int64_t ld, bool load_c, int n) {
  using V = Vec<T, BYTES>;
  constexpr int L = BYTES / sizeof(T);
  V acc[RB][NV];
  if (load_c) {
    for (int r = 0; r < RB; ++r)
      for (int v = 0; v < NV; ++v) acc[r][v] = load<V>(C + r * ld + v * L);
  } else {
    for (int r = 0; r < RB; ++r)
      for (int v = 0; v < NV; ++v) acc[r][v] = V{};
  }
  for (int64_t k = k0; k < k1; ++k) {
    const T* x = X + k * ld;
    V xv[NV];
    for (int v = 0; v < NV; ++v) xv[v] = load<V>(x + v * L);
    for (int r = 0; r < RB; ++r) {
      const T w = TRANS ? A[k * lda + r] : A[r * lda + k];
      for (int v = 0; v < NV; ++v) acc[r][v] += w * xv[v];
    }
  }
  for (int r = 0; r < RB; ++r)
    for (int v = 0; v < NV; ++v) {
      if constexpr (PARTIAL) std::memcpy(C + r * ld + v * L, &acc[r][v], sizeof(T) * n);
      else store(C + r * ld + v * L, acc[r][v]);
    }
}

// rows m .. m + RB - 1 of the product, all B columns: chunks of two 64-byte vectors, one, then the
// rest (fewer lanes than one 64-byte vector) in one vector of 64, 32 or 16 bytes
template <typename T, bool TRANS, int RB>
inline void product_rows(const T* A, int64_t lda, int64_t k0, int64_t k1, const T* X, T* C, int B, bool load_c) {
  constexpr int L = 64 / sizeof(T);
  int b = 0;
  for (; b + 2 * L <= B; b += 2 * L)
    product_chunk<T, TRANS, RB, 64, 2, false>(A, lda, k0, k1, X + b, C + b, B, load_c, 2 * L);
  if (b + L <= B) product_chunk<T, TRANS, RB, 64, 1, false>(A, lda, k0, k1, X + b, C + b, B, load_c, L), b += L;
  const int n = B - b;
  if (n > L / 2) product_chunk<T, TRANS, RB, 64, 1, true>(A, lda, k0, k1, X + b, C + b, B, load_c, n);
  else if (n == L / 2) product_chunk<T, TRANS, RB, 32, 1, false>(A, lda, k0, k1, X + b, C + b, B, load_c, n);
  else if (n > L / 4) product_chunk<T, TRANS, RB, 32, 1, true>(A, lda, k0, k1, X + b, C + b, B, load_c, n);
  else if (n > 0) product_chunk<T, TRANS, RB, 16, 1, true>(A, lda, k0, k1, X + b, C + b, B, load_c, n);
}

// C (M, B) (+)= A' X, X (K, B), A(m, k) as in product_chunk; ACCUMULATE: onto C's values, else
// C = the product. The summed index in blocks whose rows of X (KC × B) stay in L2 while every
// block of RB rows of A runs over them (a block of A's rows stays in L1 over all the chunks).
template <typename T, bool TRANS>
void product(const T* A, int64_t lda, int64_t M, int64_t K, const T* X, T* C, int B, bool accumulate) {
  constexpr int64_t BUDGET = 192 * 1024, KMAX = 256, KMIN = 16;
  int64_t kc = BUDGET / (int64_t(B) * int64_t(sizeof(T)));
  kc = kc > KMAX ? KMAX : kc < KMIN ? KMIN : kc;
  for (int64_t k0 = 0; k0 < K; k0 += kc) {
    const int64_t k1 = k0 + kc < K ? k0 + kc : K;
    const bool load_c = accumulate || k0 > 0;
    int64_t m = 0;
    auto at = [&](int64_t row) { return TRANS ? A + row : A + row * lda; };
    for (; m + 8 <= M; m += 8) product_rows<T, TRANS, 8>(at(m), lda, k0, k1, X, C + m * B, B, load_c);
    for (; m + 4 <= M; m += 4) product_rows<T, TRANS, 4>(at(m), lda, k0, k1, X, C + m * B, B, load_c);
    for (; m < M; ++m) product_rows<T, TRANS, 1>(at(m), lda, k0, k1, X, C + m * B, B, load_c);
  }
}

// one SGD update of w (a scalar or a vector of elements) with its gradient g
template <typename T, bool DECAY, bool BUF, bool NEST, typename V>
inline void sgd(V& w, V* buf, V g, const Hyper<T>& h) {
  if constexpr (DECAY) g = g + h.wd * w;
  V d = g;
  if constexpr (BUF) {
    const V b = h.mom * *buf + g;
    *buf = b;
    if constexpr (NEST) d = g + h.mom * b;
    else d = b;
  }
  w = w - h.lr * d;
}

// columns i0 .. i0 + NV·(BYTES / sizeof(T)) - 1 of rows 0 .. RO - 1, in vectors of BYTES
template <typename T, int RO, bool DECAY, bool BUF, bool NEST, int BYTES, int NV>
inline void weight_update_chunk(T* __restrict W, T* __restrict buf, int64_t in, const T* __restrict dZ,
                                const T* __restrict Xs, int B, const Hyper<T>& h, int64_t i0) {
  using V = typename VecOf<T, BYTES>::type;
  constexpr int L = BYTES / sizeof(T);
  V g[RO][NV];
  for (int k = 0; k < RO; ++k)
    for (int v = 0; v < NV; ++v) g[k][v] = V{};
  for (int b = 0; b < B; ++b) {
    const T* x = Xs + b * in + i0;
    V xv[NV];
    for (int v = 0; v < NV; ++v) xv[v] = load<V>(x + v * L);
    for (int k = 0; k < RO; ++k) {
      const T d = dZ[k * B + b];
      for (int v = 0; v < NV; ++v) g[k][v] += d * xv[v];
    }
  }
  for (int k = 0; k < RO; ++k)
    for (int v = 0; v < NV; ++v) {
      T* wp = W + k * in + i0 + v * L;
      V w = load<V>(wp);
      if constexpr (BUF) {
        T* bp = buf + k * in + i0 + v * L;
        V bv = load<V>(bp);
        sgd<T, DECAY, BUF, NEST>(w, &bv, g[k][v], h);
        store(bp, bv);
      } else {
        sgd<T, DECAY, BUF, NEST, V>(w, nullptr, g[k][v], h);
      }
      store(wp, w);
    }
}

// W[o][i] updated with its gradient G[o][i] = sum_b dZ[o][b] Xs[b][i] (b in order from 0), rows
// o0 .. o0 + RO - 1, columns [c0, c1); the gradient is never stored. Columns two 64-byte vectors
// at a time, then one, then narrower vectors (32, 16 bytes) for the rest, then one by one.
template <typename T, int RO, bool DECAY, bool BUF, bool NEST>
inline void weight_update_rows(T* __restrict W, T* __restrict buf, int64_t in, const T* __restrict dZ,
                               const T* __restrict Xs, int B, const Hyper<T>& h, int64_t c0, int64_t c1) {
  constexpr int L = 64 / sizeof(T);
  int64_t i0 = c0;
  for (; i0 + 2 * L <= c1; i0 += 2 * L)
    weight_update_chunk<T, RO, DECAY, BUF, NEST, 64, 2>(W, buf, in, dZ, Xs, B, h, i0);
  if (i0 + L <= c1) weight_update_chunk<T, RO, DECAY, BUF, NEST, 64, 1>(W, buf, in, dZ, Xs, B, h, i0), i0 += L;
  if (i0 + L / 2 <= c1) weight_update_chunk<T, RO, DECAY, BUF, NEST, 32, 1>(W, buf, in, dZ, Xs, B, h, i0), i0 += L / 2;
  if constexpr (L / 4 >= 2)
    if (i0 + L / 4 <= c1)
      weight_update_chunk<T, RO, DECAY, BUF, NEST, 16, 1>(W, buf, in, dZ, Xs, B, h, i0), i0 += L / 4;
  for (int64_t i = i0; i < c1; ++i)
    for (int k = 0; k < RO; ++k) {
      T g = 0;
      for (int b = 0; b < B; ++b) g += dZ[k * B + b] * Xs[b * in + i];
      sgd<T, DECAY, BUF, NEST, T>(W[k * in + i], BUF ? buf + k * in + i : nullptr, g, h);
    }
}

template <typename T, bool DECAY, bool BUF, bool NEST>
void weight_update(T* W, T* buf, int64_t in, int64_t out, const T* dZ, const T* Xs, int B, const Hyper<T>& h) {
  // 8 rows at a time (16 vector accumulators): the inputs Xs are read from L2 half as often as
  // with 4 (measured 10 % faster at 1 thread). The columns in panels whose inputs (B × panel)
  // stay in L2 while every block of rows runs over them (one panel for small batches).
  constexpr int RO = 8, L = 64 / sizeof(T);
  constexpr int64_t BUDGET = 256 * 1024;
  int64_t panel = BUDGET / (int64_t(B) * int64_t(sizeof(T))) / (2 * L) * (2 * L);
  if (panel < 2 * L) panel = 2 * L;
  for (int64_t c0 = 0; c0 < in; c0 += panel) {
    const int64_t c1 = c0 + panel < in ? c0 + panel : in;
    int64_t o = 0;
    for (; o + RO <= out; o += RO)
      weight_update_rows<T, RO, DECAY, BUF, NEST>(W + o * in, BUF ? buf + o * in : nullptr, in, dZ + o * B, Xs, B, h,
                                                  c0, c1);
    if constexpr (RO > 4)
      for (; o + 4 <= out; o += 4)
        weight_update_rows<T, 4, DECAY, BUF, NEST>(W + o * in, BUF ? buf + o * in : nullptr, in, dZ + o * B, Xs, B,
                                                   h, c0, c1);
    for (; o < out; ++o)
      weight_update_rows<T, 1, DECAY, BUF, NEST>(W + o * in, BUF ? buf + o * in : nullptr, in, dZ + o * B, Xs, B, h,
                                                 c0, c1);
  }
}

template <typename T>
void weight_update_any(T* W, T* buf, int64_t in, int64_t out, const T* dZ, const T* Xs, int B, const Hyper<T>& h) {
  const bool nest = buf && h.nesterov;
  if (h.decay) {
    if (!buf) weight_update<T, true, false, false>(W, buf, in, out, dZ, Xs, B, h);
    else if (nest) weight_update<T, true, true, true>(W, buf, in, out, dZ, Xs, B, h);
    else weight_update<T, true, true, false>(W, buf, in, out, dZ, Xs, B, h);
  } else {
    if (!buf) weight_update<T, false, false, false>(W, buf, in, out, dZ, Xs, B, h);
    else if (nest) weight_update<T, false, true, true>(W, buf, in, out, dZ, Xs, B, h);
    else weight_update<T, false, true, false>(W, buf, in, out, dZ, Xs, B, h);
  }
}

// a vector parameter (bias, BN weight and bias) with its gradient g
template <typename T>
void vector_update(T* p, T* buf, const T* g, int64_t n, const Hyper<T>& h) {
  for (int64_t i = 0; i < n; ++i) {
    if (h.decay) {
      if (buf) h.nesterov ? sgd<T, true, true, true, T>(p[i], buf + i, g[i], h) : sgd<T, true, true, false, T>(p[i], buf + i, g[i], h);
      else sgd<T, true, false, false, T>(p[i], nullptr, g[i], h);
    } else {
      if (buf) h.nesterov ? sgd<T, false, true, true, T>(p[i], buf + i, g[i], h) : sgd<T, false, true, false, T>(p[i], buf + i, g[i], h);
      else sgd<T, false, false, false, T>(p[i], nullptr, g[i], h);
    }
  }
}

// sums over a row of the batch (NB > 0: the bias gradient) in four interleaved partial sums
// (shorter dependency chains), in a fixed order: a member's sums depend only on B
template <typename T>
inline T row_sum(const T* x, int B) {
  T s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int b = 0;
  for (; b + 4 <= B; b += 4) s0 += x[b], s1 += x[b + 1], s2 += x[b + 2], s3 += x[b + 3];
  for (; b < B; ++b) s0 += x[b];
  return (s0 + s1) + (s2 + s3);
}

// -- batch rows as vectors (NB > 0 filling whole vectors): one row of NB values = NV vectors --
template <typename T, int NB>
struct Row {
  static constexpr int VB = lane_bytes<T, NB>();
  static constexpr int N = VB > 0 ? VB / int(sizeof(T)) : 1;  // lanes of a vector
  static constexpr int NV = VB > 0 ? NB / N : 0;             // vectors of a row
  using V = typename VecOf<T, (VB > 0 ? VB : 64)>::type;
  // the sum of a row's vectors' lanes: the vectors added in order, then the lanes by halves
  static inline T hsum(const V* v) {
    V a = v[0];
    for (int k = 1; k < NV; ++k) a += v[k];
    return halves<(VB > 0 ? VB : 64)>(a);
  }
  // lanes [0, n/2) + lanes [n/2, n), down to one lane
  template <int BYTES>
  static inline T halves(const typename VecOf<T, BYTES>::type& a) {
    if constexpr (BYTES == sizeof(T)) {
      return a[0];
    } else {
      using H = typename VecOf<T, BYTES / 2>::type;
      H lo, hi;
      std::memcpy(&lo, &a, sizeof(H));
      std::memcpy(&hi, reinterpret_cast<const char*>(&a) + sizeof(H), sizeof(H));
      return halves<BYTES / 2>(lo + hi);
    }
  }
};

// BN forward (train mode), the activation and its pre-activation, a row at a time in vectors
template <typename T, int NB>
inline void bn_act_forward_rows(T* z, T* a, T* xh, T* inv, const T* gamma, const T* beta, T* rmean, T* rvar,
                                int64_t out, int act, T slope, T momentum, T eps) {
  using R = Row<T, NB>;
  using V = typename R::V;
  constexpr int NV = R::NV, N = R::N;
  const T unbias = T(NB) / T(NB > 1 ? NB - 1 : 1);
  for (int64_t o = 0; o < out; ++o) {
    T* row = z + o * NB;
    V v[NV], d[NV], sq[NV];
    for (int k = 0; k < NV; ++k) v[k] = load<V>(row + k * N);
    const T mean = R::hsum(v) / T(NB);
    for (int k = 0; k < NV; ++k) d[k] = v[k] - mean, sq[k] = d[k] * d[k];
    const T var = R::hsum(sq) / T(NB);
    const T is = T(1) / std::sqrt(var + eps);
    inv[o] = is;
    const T g = gamma[o], bt = beta[o];
    for (int k = 0; k < NV; ++k) {
      const V n = d[k] * is;
      store(xh + o * NB + k * N, n);
      const V y = n * g + bt;
      store(row + k * N, y);
      if (act == ACT_RELU) store(a + o * NB + k * N, y < V{} ? V{} : y);
      else if (act == ACT_LEAKY) store(a + o * NB + k * N, y < V{} ? slope * y : y);
    }
    rmean[o] = rmean[o] + momentum * (mean - rmean[o]);
    rvar[o] = rvar[o] + momentum * (var * unbias - rvar[o]);
  }
}

// the activation's and BN's backward, a row at a time in vectors: dz = BN'(act'(dA)), with the
// BN parameters' gradients
template <typename T, int NB>
inline void act_bn_backward_rows(const T* dA, const T* pre, T* dz, const T* xh, const T* inv, const T* gamma,
                                 T* dgamma, T* dbeta, int64_t out, int act, int bn, T slope) {
  using R = Row<T, NB>;
  using V = typename R::V;
  constexpr int NV = R::NV, N = R::N;
  for (int64_t o = 0; o < out; ++o) {
    V d[NV], n[NV], p[NV];
    for (int k = 0; k < NV; ++k) {
      d[k] = load<V>(dA + o * NB + k * N);
      if (act != ACT_NONE) {
        const V pv = load<V>(pre + o * NB + k * N);
        d[k] = act == ACT_RELU ? (pv > V{} ? d[k] : V{}) : (pv > V{} ? d[k] : d[k] * slope);
      }
      n[k] = load<V>(xh + o * NB + k * N);
      p[k] = d[k] * n[k];
    }
    const T sum = R::hsum(d), dot = R::hsum(p);
    dbeta[o] = sum, dgamma[o] = dot;
    const T mean_dy = sum / T(NB), mean_dyn = dot / T(NB), kk = gamma[o] * inv[o];
    for (int k = 0; k < NV; ++k) {
      const V r = bn == BN_PLAIN ? kk * (d[k] - mean_dy - n[k] * mean_dyn) : kk * (d[k] - mean_dy);
      store(dz + o * NB + k * N, r);
    }
  }
}

// the same for any batch size B (rows B apart): vectors plus the rest one by one; the sums in
// batch_sum's order (a function of B only)
template <typename T>
inline void bn_act_forward_any(T* z, T* a, T* xh, T* inv, const T* gamma, const T* beta, T* rmean, T* rvar,
                               int64_t out, int act, T slope, T momentum, T eps, int B) {
  const T unbias = T(B) / T(B > 1 ? B - 1 : 1);
  for (int64_t o = 0; o < out; ++o) {
    T* row = z + o * B;
    T* xrow = xh + o * B;
    T* arow = a + o * B;
    const T mean = batch_sum<T>(B, [&](auto u, int b) { return load<decltype(u)>(row + b); }) / T(B);
    const T var = batch_sum<T>(B, [&](auto u, int b) {
                    const decltype(u) d = load<decltype(u)>(row + b) - mean;
                    return d * d;
                  }) / T(B);
    const T is = T(1) / std::sqrt(var + eps);
    inv[o] = is;
    const T g = gamma[o], bt = beta[o];
    batch_each<T>(B, [&](auto u, int b) {
      using U = decltype(u);
      const U n = (load<U>(row + b) - mean) * is;
      store(xrow + b, n);
      const U y = n * g + bt;
      store(row + b, y);
      if (act == ACT_RELU) store(arow + b, U(y < U{} ? U{} : y));
      else if (act == ACT_LEAKY) store(arow + b, U(y < U{} ? slope * y : y));
    });
    rmean[o] = rmean[o] + momentum * (mean - rmean[o]);
    rvar[o] = rvar[o] + momentum * (var * unbias - rvar[o]);
  }
}

template <typename T>
inline void act_bn_backward_any(const T* dA, const T* pre, T* dz, const T* xh, const T* inv, const T* gamma,
                                T* dgamma, T* dbeta, int64_t out, int act, int bn, T slope, int B) {
  for (int64_t o = 0; o < out; ++o) {
    const T* darow = dA + o * B;
    const T* prow = act != ACT_NONE ? pre + o * B : nullptr;
    const T* n = xh + o * B;
    T* d = dz + o * B;
    batch_each<T>(B, [&](auto u, int b) {
      using U = decltype(u);
      U v = load<U>(darow + b);
      if (act != ACT_NONE) {
        const U p = load<U>(prow + b);
        v = act == ACT_RELU ? U(p > U{} ? v : U{}) : U(p > U{} ? v : v * slope);
      }
      store(d + b, v);
    });
    const T sum = batch_sum<T>(B, [&](auto u, int b) { return load<decltype(u)>(d + b); });
    const T dot = batch_sum<T>(B, [&](auto u, int b) { return load<decltype(u)>(d + b) * load<decltype(u)>(n + b); });
    dbeta[o] = sum, dgamma[o] = dot;
    const T mean_dy = sum / T(B), mean_dyn = dot / T(B), kk = gamma[o] * inv[o];
    batch_each<T>(B, [&](auto u, int b) {
      using U = decltype(u);
      const U v = load<U>(d + b);
      store(d + b, bn == BN_PLAIN ? U(kk * (v - mean_dy - load<U>(n + b) * mean_dyn)) : U(kk * (v - mean_dy)));
    });
  }
}

// An 8 × 8 tile transposed in registers: r[i] holds row i on entry, column i on exit (three
// rounds of lane shuffles: pairs of elements, pairs of pairs, halves). Values only move.
template <typename V>
inline void transpose_tile8(V* r) {
  V t[8], u[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = __builtin_shufflevector(r[i], r[i + 1], 0, 8, 1, 9, 4, 12, 5, 13);
    t[i + 1] = __builtin_shufflevector(r[i], r[i + 1], 2, 10, 3, 11, 6, 14, 7, 15);
  }
  for (int h = 0; h < 8; h += 4)
    for (int k = 0; k < 2; ++k) {
      u[h + 2 * k] = __builtin_shufflevector(t[h + k], t[h + k + 2], 0, 1, 8, 9, 4, 5, 12, 13);
      u[h + 2 * k + 1] = __builtin_shufflevector(t[h + k], t[h + k + 2], 2, 3, 10, 11, 6, 7, 14, 15);
    }
  for (int k = 0; k < 4; ++k) {
    r[k] = __builtin_shufflevector(u[k], u[k + 4], 0, 1, 2, 3, 8, 9, 10, 11);
    r[k + 4] = __builtin_shufflevector(u[k], u[k + 4], 4, 5, 6, 7, 12, 13, 14, 15);
  }
}

// dst[j][b] = src[b][j] (src: B rows of n; dst: n rows of B). Whole 8 × 8 tiles go through
// registers, taken RB source rows at a time so that each destination row receives a 64-byte run
// (float: two tiles stacked; double: one); the ragged edges (rows past the last multiple of 8,
// columns past the last multiple of 8) are moved element by element.
template <typename T>
__attribute__((noipa)) void transpose_tiles(const T* __restrict src, T* __restrict dst, int64_t n, int B) {
  using V = typename VecOf<T, 8 * sizeof(T)>::type;
  constexpr int RB = 64 / (8 * sizeof(T)) * 8;  // 16 for float, 8 for double
  const int64_t n8 = n & ~int64_t(7);
  const int B8 = B & ~7;
  auto tiles = [&](int b0, int rows) {  // rows: RB or 8
    for (int64_t j0 = 0; j0 < n8; j0 += 8)
      for (int h = 0; h < rows; h += 8) {
        V r[8];
        for (int i = 0; i < 8; ++i) r[i] = load<V>(src + (b0 + h + i) * n + j0);
        transpose_tile8(r);
        for (int i = 0; i < 8; ++i) store(dst + (j0 + i) * B + b0 + h, r[i]);
      }
  };
  int b0 = 0;
  for (; b0 + RB <= B8; b0 += RB) tiles(b0, RB);
  for (; b0 < B8; b0 += 8) tiles(b0, 8);
  if (n8 < n)
    for (int b = 0; b < B8; ++b)
      for (int64_t j = n8; j < n; ++j) dst[j * B + b] = src[b * n + j];
  for (int b = B8; b < B; ++b)
    for (int64_t j = 0; j < n; ++j) dst[j * B + b] = src[b * n + j];
}

// The layout transpose the step calls. The work stays out of line, hidden from the compiler's
// interprocedural passes (noipa): GCC's cloning and inlining of the other kernels depend on the
// code around them (ipa-cp's unit-growth budget, the callers' sizes), and with them which
// multiply-adds it fuses, so a transpose open to those passes changed the step's results in the
// last bits. Hidden, the other kernels keep the clones and call graph they had with the former
// scalar transpose, and the step its results bit for bit (GCC 12, -O3, with and without
// -march=native on AVX-512; float and double; checked over 30 steps of several networks).
template <typename T>
inline void transpose(const T* __restrict src, T* __restrict dst, int64_t n, int B) {
  transpose_tiles(src, dst, n, B);
}

template <typename T>
inline T* member_ptr(void* p, int64_t r, int64_t size) {
  return p ? static_cast<T*>(p) + r * size : nullptr;
}

// -- one member's step -------------------------------------------------------------------------
template <typename T, int NB>
T member_step(const std::vector<Layer>& layers, Scratch<T>& s, int64_t r, int B_, const T* x, const void* y,
              int loss_kind, const Hyper<T>& h, T bn_momentum, T bn_eps, T slope) {
  const int B = NB > 0 ? NB : B_;
  const size_t L = layers.size();
  // input: sample-major as given, and feature-major
  const int64_t in0 = layers[0].in;
  std::memcpy(s.act_s[0].data(), x, sizeof(T) * in0 * B);
  transpose(x, s.act[0].data(), in0, B);
  // forward
  for (size_t l = 0; l < L; ++l) {
    const Layer& ly = layers[l];
    const int64_t in = ly.in, out = ly.out;
    const T* W = member_ptr<T>(ly.ptrs[P_W], r, out * in);
    const T* bias = ly.bias ? member_ptr<T>(ly.ptrs[P_B], r, out) : nullptr;
    T* z = ly.act != ACT_NONE ? s.pre[l].data() : s.act[l + 1].data();
    if constexpr (NB > 0) {
      linear_forward<T, NB>(W, bias, in, out, s.act[l].data(), z, B);
    } else {
      product<T, false>(W, in, out, in, s.act[l].data(), z, B, false);
      if (bias)
        for (int64_t o = 0; o < out; ++o) {
          T* row = z + o * B;
          const T c = bias[o];
          for (int b = 0; b < B; ++b) row[b] += c;
        }
    }
    bool act_done = false;
    if (ly.bn != BN_NONE && Row<T, NB>::VB > 0) {
      bn_act_forward_rows<T, NB>(z, s.act[l + 1].data(), s.xhat[l].data(), s.inv_std[l].data(),
                                 member_ptr<T>(ly.ptrs[P_GAMMA], r, out), member_ptr<T>(ly.ptrs[P_BETA], r, out),
                                 member_ptr<T>(ly.ptrs[P_RMEAN], r, out), member_ptr<T>(ly.ptrs[P_RVAR], r, out),
                                 out, ly.act, slope, bn_momentum, bn_eps);
      act_done = true;
    } else if (ly.bn != BN_NONE) {
      bn_act_forward_any<T>(z, s.act[l + 1].data(), s.xhat[l].data(), s.inv_std[l].data(),
                            member_ptr<T>(ly.ptrs[P_GAMMA], r, out), member_ptr<T>(ly.ptrs[P_BETA], r, out),
                            member_ptr<T>(ly.ptrs[P_RMEAN], r, out), member_ptr<T>(ly.ptrs[P_RVAR], r, out), out,
                            ly.act, slope, bn_momentum, bn_eps, B);
      act_done = true;
    }
    if (ly.act != ACT_NONE && !act_done) {
      T* a = s.act[l + 1].data();
      const T k = ly.act == ACT_LEAKY ? slope : T(0);
      const int64_t n = out * B;
      if (ly.act == ACT_RELU)
        for (int64_t j = 0; j < n; ++j) a[j] = z[j] < 0 ? T(0) : z[j];
      else
        for (int64_t j = 0; j < n; ++j) a[j] = z[j] < 0 ? k * z[j] : z[j];
    }
    if (ly.skip >= 0) {
      T* a = s.act[l + 1].data();
      const T* src = s.act[ly.skip].data();
      for (int64_t j = 0; j < out * B; ++j) a[j] = src[j] + a[j];
    }
    if (l + 1 < L) {  // the next layer's input, sample-major
      transpose(s.act[l + 1].data(), s.act_s[l + 1].data(), int64_t(B), int(out));
    }
  }
  // loss and its gradient on the outputs
  const int64_t C = layers[L - 1].out;
  const T* logits = s.act[L].data();
  T* dout = s.grad[L].data();
  T loss = 0;
  if (loss_kind == LOSS_CE) {
    const int64_t* labels = static_cast<const int64_t*>(y) + r * B;
    T total = 0;
    for (int b = 0; b < B; ++b) {
      T m = logits[b];
      for (int64_t c = 1; c < C; ++c) m = logits[c * B + b] > m ? logits[c * B + b] : m;
      T se = 0;
      for (int64_t c = 0; c < C; ++c) se += std::exp(logits[c * B + b] - m);
      const T lse = m + std::log(se);
      total += lse - logits[labels[b] * B + b];
      for (int64_t c = 0; c < C; ++c) dout[c * B + b] = std::exp(logits[c * B + b] - lse) / T(B);
      dout[labels[b] * B + b] -= T(1) / T(B);
    }
    loss = total / T(B);
  } else if (loss_kind == LOSS_MSE_ONEHOT) {
    const int64_t* labels = static_cast<const int64_t*>(y) + r * B;
    T total = 0;
    const T scale = T(2) / T(B * C);
    for (int64_t c = 0; c < C; ++c)
      for (int b = 0; b < B; ++b) {
        const T e = logits[c * B + b] - (labels[b] == c ? T(1) : T(0));
        total += e * e;
        dout[c * B + b] = scale * e;
      }
    loss = total / T(B * C);
  } else {
    const T* target = static_cast<const T*>(y) + r * B;
    T total = 0;
    for (int b = 0; b < B; ++b) {
      const T e = logits[b] - target[b];
      total += e * e;
      dout[b] = T(2) / T(B) * e;
    }
    loss = total / T(B);
  }
  // backward and update, last layer first
  for (size_t l = 1; l < L; ++l) std::memset(s.grad[l].data(), 0, sizeof(T) * layers[l].in * B);
  for (size_t li = L; li-- > 0;) {
    const Layer& ly = layers[li];
    const int64_t in = ly.in, out = ly.out;
    const T* dA = s.grad[li + 1].data();
    if (ly.skip >= 0) {  // the identity path of a residual block
      T* ds = s.grad[ly.skip].data();
      for (int64_t j = 0; j < out * B; ++j) ds[j] += dA[j];
    }
    T* dz = s.dz.data();
    if (ly.bn != BN_NONE) {
      T* gamma = member_ptr<T>(ly.ptrs[P_GAMMA], r, out);
      T* beta = member_ptr<T>(ly.ptrs[P_BETA], r, out);
      if constexpr (Row<T, NB>::VB > 0)
        act_bn_backward_rows<T, NB>(dA, ly.act != ACT_NONE ? s.pre[li].data() : nullptr, dz, s.xhat[li].data(),
                                    s.inv_std[li].data(), gamma, s.dgamma.data(), s.dbeta.data(), out, ly.act, ly.bn,
                                    slope);
      else
        act_bn_backward_any<T>(dA, ly.act != ACT_NONE ? s.pre[li].data() : nullptr, dz, s.xhat[li].data(),
                               s.inv_std[li].data(), gamma, s.dgamma.data(), s.dbeta.data(), out, ly.act, ly.bn,
                               slope, B);
      vector_update<T>(gamma, member_ptr<T>(ly.ptrs[P_BUF_GAMMA], r, out), s.dgamma.data(), out, h);
      vector_update<T>(beta, member_ptr<T>(ly.ptrs[P_BUF_BETA], r, out), s.dbeta.data(), out, h);
    } else if (ly.act != ACT_NONE) {
      const T* pre = s.pre[li].data();
      if (ly.act == ACT_RELU)
        for (int64_t j = 0; j < out * B; ++j) dz[j] = pre[j] > 0 ? dA[j] : T(0);
      else
        for (int64_t j = 0; j < out * B; ++j) dz[j] = pre[j] > 0 ? dA[j] : dA[j] * slope;
    } else {
      std::memcpy(dz, dA, sizeof(T) * out * B);
    }
    T* W = member_ptr<T>(ly.ptrs[P_W], r, out * in);
    if (li > 0) {  // with the old W
      if constexpr (NB > 0) linear_backward_input<T, NB>(W, in, out, dz, s.grad[li].data(), B);
      else product<T, true>(W, in, in, out, dz, s.grad[li].data(), B, true);
    }
    if (ly.bias) {
      for (int64_t o = 0; o < out; ++o) {
        const T* row = dz + o * B;
        if constexpr (NB > 0) s.db[o] = row_sum(row, B);
        else s.db[o] = batch_sum<T>(B, [&](auto u, int b) { return load<decltype(u)>(row + b); });
      }
      vector_update<T>(member_ptr<T>(ly.ptrs[P_B], r, out), member_ptr<T>(ly.ptrs[P_BUF_B], r, out), s.db.data(),
                       out, h);
    }
    weight_update_any<T>(W, member_ptr<T>(ly.ptrs[P_BUF_W], r, out * in), in, out, dz, s.act_s[li].data(), B, h);
  }
  return loss;
}

template <typename T, int NB>
void cohort_step(const std::vector<Layer>& layers, int64_t R, int B, const void* x, const void* y, void* losses,
                 const double* hyper, int loss_kind, double bn_momentum, double bn_eps, double slope, int threads) {
  const int64_t in0 = layers[0].in;
  auto one = [&](int64_t r) {
    static thread_local Scratch<T> scratch;
    scratch.resize(layers, B);
    const double* hp = hyper + 4 * r;
    Hyper<T> h{T(hp[0]), T(hp[1]), T(hp[2]), hp[3] != 0, T(hp[2]) != T(0)};
    const T* xr = static_cast<const T*>(x) + r * B * in0;
    static_cast<T*>(losses)[r] =
        member_step<T, NB>(layers, scratch, r, B, xr, y, loss_kind, h, T(bn_momentum), T(bn_eps), T(slope));
  };
#ifdef _OPENMP
  if (threads > 1 && R > 1) {
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
    for (int64_t r = 0; r < R; ++r) one(r);
    return;
  }
#endif
  for (int64_t r = 0; r < R; ++r) one(r);
}

}  // namespace

extern "C" {

int rb_abi_version() { return 1; }

int rb_openmp() {
#ifdef _OPENMP
  return 1;
#else
  return 0;
#endif
}

// dtype: 4 (float32) or 8 (float64). ints: n_layers × (in, out, bias, bn, act, skip).
// ptrs: n_layers × (W, b, gamma, beta, running_mean, running_var, buf_W, buf_b, buf_gamma,
// buf_beta), null where absent. x: (R, B, in_0) in dtype; y: (R, B) int64 labels, or dtype
// targets for LOSS_MSE_SCALAR; losses: (R,) in dtype. hyper: R × (lr, momentum, weight_decay,
// nesterov). Returns 0, or a negative number for arguments it does not take.
int rb_cohort_step(int dtype, int n_layers, const int64_t* ints, void* const* ptrs, int64_t R, int B, const void* x,
                   const void* y, void* losses, const double* hyper, int loss_kind, double bn_momentum, double bn_eps,
                   double slope, int threads) {
  if (n_layers < 1 || R < 1 || B < 1) return -1;
  std::vector<Layer> layers(n_layers);
  for (int l = 0; l < n_layers; ++l) {
    const int64_t* v = ints + N_INTS * l;
    layers[l] = Layer{v[0], v[1], v[2] != 0, int(v[3]), int(v[4]), int(v[5]), ptrs + N_PTRS * l};
    if (l > 0 && layers[l].in != layers[l - 1].out) return -2;
    if (layers[l].skip >= 0 && (layers[l].skip > l || layers[l].out != layers[layers[l].skip].in)) return -3;
  }
  if (dtype == 4) {
    switch (B) {
      case 16: cohort_step<float, 16>(layers, R, B, x, y, losses, hyper, loss_kind, bn_momentum, bn_eps, slope, threads); break;
      case 32: cohort_step<float, 32>(layers, R, B, x, y, losses, hyper, loss_kind, bn_momentum, bn_eps, slope, threads); break;
      case 8: cohort_step<float, 8>(layers, R, B, x, y, losses, hyper, loss_kind, bn_momentum, bn_eps, slope, threads); break;
      default: cohort_step<float, 0>(layers, R, B, x, y, losses, hyper, loss_kind, bn_momentum, bn_eps, slope, threads);
    }
  } else if (dtype == 8) {
    switch (B) {
      case 16: cohort_step<double, 16>(layers, R, B, x, y, losses, hyper, loss_kind, bn_momentum, bn_eps, slope, threads); break;
      case 8: cohort_step<double, 8>(layers, R, B, x, y, losses, hyper, loss_kind, bn_momentum, bn_eps, slope, threads); break;
      default: cohort_step<double, 0>(layers, R, B, x, y, losses, hyper, loss_kind, bn_momentum, bn_eps, slope, threads);
    }
  } else {
    return -4;
  }
  return 0;
}

}  // extern "C"
