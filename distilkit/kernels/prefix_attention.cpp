// distilkit::prefix_attention: multi-head attention of new queries over [cached prefix keys; new keys]
// on CPU, float32, for template-cached trackers (contract: distilkit/kernels/prefix_attention.py).
//
// One task per (batch, head). Each task copies the head's keys and values (prefix rows, then the new
// rows, read in place from the caller's token-major tensors) into small contiguous tiles, then costs
// two BLAS sgemm calls (single-threaded inside the task) and one softmax pass over scores that stay in
// cache. Nothing the size of the concatenated keys is ever written, and no head-major copy of the
// queries is made. Built at run time with the ISA flags of the running CPU (at::vec picks its width
// from them; the AVX-512 build uses its own exp, the others at::vec's exp_u20).

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>

#if defined(CPU_CAPABILITY_AVX512)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

extern "C" void sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
                       const float* alpha, const float* a, const int* lda, const float* b, const int* ldb,
                       const float* beta, float* c, const int* ldc);

namespace {

using Vec = at::vec::Vectorized<float>;

constexpr int64_t kQueryBlock = 256;  // query rows per GEMM pair (MixFormerV2-S: all 200 in one)

// Column-major BLAS sgemm with 64-bit sizes (the Python side keeps every size below 2^31).
void gemm(const char* ta, const char* tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
          const float* b, int64_t ldb, float* c, int64_t ldc) {
  const int mi = static_cast<int>(m), ni = static_cast<int>(n), ki = static_cast<int>(k);
  const int la = static_cast<int>(lda), lb = static_cast<int>(ldb), lc = static_cast<int>(ldc);
  const float beta = 0.f;
  sgemm_(ta, tb, &mi, &ni, &ki, &alpha, a, &la, b, &lb, &beta, c, &lc);
}

#if defined(CPU_CAPABILITY_AVX512)
// exp(x) for x <= 0: x = n ln2 + r (Cody-Waite split of ln2), degree-6 Taylor polynomial of e^r on
// |r| <= ln2/2 (relative error ~1e-7), times 2^n by scalef. Inputs below -87 give ~1e-38, not denormals.
inline __m512 exp_nonpositive(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-87.f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.f / 720.f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 120.f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 24.f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 6.f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f));
  return _mm512_scalef_ps(p, n);
}

// x <- exp(x - max(x)) over one row of n scores; returns the row's sum.
float exp_shifted_row(float* x, int64_t n) {
  const int64_t full = n - n % 16;
  const __mmask16 tail = static_cast<__mmask16>((1u << (n - full)) - 1u);
  __m512 m = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  for (int64_t i = 0; i < full; i += 16) m = _mm512_max_ps(m, _mm512_loadu_ps(x + i));
  if (tail) m = _mm512_mask_max_ps(m, tail, m, _mm512_maskz_loadu_ps(tail, x + full));
  const __m512 shift = _mm512_set1_ps(_mm512_reduce_max_ps(m));
  __m512 acc = _mm512_setzero_ps();
  for (int64_t i = 0; i < full; i += 16) {
    const __m512 e = exp_nonpositive(_mm512_sub_ps(_mm512_loadu_ps(x + i), shift));
    _mm512_storeu_ps(x + i, e);
    acc = _mm512_add_ps(acc, e);
  }
  if (tail) {
    const __m512 e = exp_nonpositive(_mm512_sub_ps(_mm512_maskz_loadu_ps(tail, x + full), shift));
    _mm512_mask_storeu_ps(x + full, tail, e);
    acc = _mm512_mask_add_ps(acc, tail, acc, e);
  }
  return _mm512_reduce_add_ps(acc);
}
#else
float exp_shifted_row(float* x, int64_t n) {
  const float m = at::vec::reduce_all<float>([](const Vec& a, const Vec& b) { return at::vec::maximum(a, b); }, x, n);
  at::vec::map([m](Vec v) { return (v - Vec(m)).exp_u20(); }, x, x, n);
  return at::vec::reduce_all<float>([](const Vec& a, const Vec& b) { return a + b; }, x, n);
}
#endif

// Copy `rows` rows of `width` floats, `stride` apart in the source, into a dense tile.
void gather_rows(float* dst, const float* src, int64_t rows, int64_t width, int64_t stride) {
  for (int64_t r = 0; r < rows; ++r) std::memcpy(dst + r * width, src + r * stride, width * sizeof(float));
}

void check_tensor(const at::Tensor& t, int64_t dims, const char* what) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat, "prefix_attention: ", what, " must be float32 on CPU");
  TORCH_CHECK(t.dim() == dims && t.stride(-1) == 1, "prefix_attention: ", what, " must be ", dims,
              "-D with a dense last dimension");
}

// Token-major rows (B, rows, C) of floats: where batch b, row r starts is data + b * batch + r * row.
struct Tokens {
  const float* data;
  int64_t batch, row, rows;
};

Tokens tokens(const at::Tensor& t, int64_t first_row, int64_t rows, int64_t first_column) {
  return {t.data_ptr<float>() + first_row * t.stride(1) + first_column, t.stride(0), t.stride(1), rows};
}

// out (B, Nq, C) = attention of q over [k_prefix; k] / [v_prefix; v]; prefixes (B or 1, H, T, C/H)
// with any strides but a dense last dim. Views are passed as pointers and strides, not tensors: making
// narrowed tensors cost ~15 us a call.
at::Tensor attend(Tokens q, Tokens k, Tokens v, int64_t B, int64_t C, const at::Tensor& k_prefix,
                  const at::Tensor& v_prefix, int64_t num_heads, const at::TensorOptions& options) {
  check_tensor(k_prefix, 4, "k_prefix");
  check_tensor(v_prefix, 4, "v_prefix");
  const int64_t Nq = q.rows, N = k.rows, H = num_heads;
  TORCH_CHECK(H > 0 && C % H == 0, "prefix_attention: width ", C, " is not a multiple of num_heads ", H);
  TORCH_CHECK(k_prefix.sizes() == v_prefix.sizes() && (k_prefix.size(0) == 1 || k_prefix.size(0) == B) &&
                  k_prefix.size(1) == H && k_prefix.size(3) == C / H,
              "prefix_attention: prefixes must be (B or 1, H, T, C/H)");
  const int64_t D = C / H, T = k_prefix.size(2), L = T + N;
  auto out = at::empty({B, Nq, C}, options);
  const float scale = 1.f / std::sqrt(static_cast<float>(D));
  const float *kpd = k_prefix.data_ptr<float>(), *vpd = v_prefix.data_ptr<float>();
  float* od = out.data_ptr<float>();
  const int64_t prefix_batch = k_prefix.size(0) == 1 ? 0 : 1;
  // queries in blocks of at most kQueryBlock rows: scores take kQueryBlock * L floats a thread, not Nq * L
  const int64_t rows_per_block = std::min<int64_t>(Nq, kQueryBlock);
  at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> keys(L * D), values(L * D), scores(rows_per_block * L), inv_sums(rows_per_block);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / H, h = task % H, pb = b * prefix_batch;
      gather_rows(keys.data(), kpd + pb * k_prefix.stride(0) + h * k_prefix.stride(1), T, D, k_prefix.stride(2));
      gather_rows(keys.data() + T * D, k.data + b * k.batch + h * D, N, D, k.row);
      gather_rows(values.data(), vpd + pb * v_prefix.stride(0) + h * v_prefix.stride(1), T, D, v_prefix.stride(2));
      gather_rows(values.data() + T * D, v.data + b * v.batch + h * D, N, D, v.row);
      for (int64_t first = 0; first < Nq; first += rows_per_block) {
        const int64_t rows = std::min(rows_per_block, Nq - first);
        const float* qh = q.data + b * q.batch + first * q.row + h * D;
        float* oh = od + (b * Nq + first) * C + h * D;
        // row-major scores (rows x L) = scale * Q K^T, written as the column-major product K Q^T
        gemm("T", "N", L, rows, D, scale, keys.data(), D, qh, q.row, scores.data(), L);
        for (int64_t i = 0; i < rows; ++i) inv_sums[i] = 1.f / exp_shifted_row(scores.data() + i * L, L);
        // row-major out (rows x D, row stride C) = exp-scores V, as the column-major product V^T S^T;
        // then each row over its sum (D values a row instead of L)
        gemm("N", "N", D, rows, L, 1.f, values.data(), D, scores.data(), L, oh, C);
        for (int64_t i = 0; i < rows; ++i) {
          const float f = inv_sums[i];
          at::vec::map([f](Vec x) { return x * Vec(f); }, oh + i * C, oh + i * C, D);
        }
      }
    }
  });
  return out;
}

at::Tensor prefix_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& k_prefix,
                            const at::Tensor& v_prefix, int64_t num_heads) {
  check_tensor(q, 3, "q");
  check_tensor(k, 3, "k");
  check_tensor(v, 3, "v");
  const int64_t B = q.size(0), C = q.size(2);
  TORCH_CHECK(k.sizes() == v.sizes() && k.size(0) == B && k.size(2) == C,
              "prefix_attention: q (B, Nq, C), k and v (B, N, C) expected");
  return attend(tokens(q, 0, q.size(1), 0), tokens(k, 0, k.size(1), 0), tokens(v, 0, v.size(1), 0), B, C, k_prefix,
                v_prefix, num_heads, q.options());
}

// The same for the output of one fused projection, qkv (B, N, 3C) = [q | k | v]; query_tail > 0 keeps
// only the last query_tail queries (they still see every key). One input buffer, so a compiled
// program hands over the projection's output as it is instead of copying q, k and v apart.
at::Tensor qkv_prefix_attention(const at::Tensor& qkv, const at::Tensor& k_prefix, const at::Tensor& v_prefix,
                                int64_t num_heads, int64_t query_tail) {
  check_tensor(qkv, 3, "qkv");
  TORCH_CHECK(qkv.size(2) % 3 == 0, "qkv_prefix_attention: qkv width must be 3 C");
  const int64_t B = qkv.size(0), N = qkv.size(1), C = qkv.size(2) / 3;
  TORCH_CHECK(query_tail >= 0 && query_tail <= N, "qkv_prefix_attention: query_tail must be in [0, N]");
  const int64_t Nq = query_tail > 0 ? query_tail : N;
  return attend(tokens(qkv, N - Nq, Nq, 0), tokens(qkv, 0, N, C), tokens(qkv, 0, N, 2 * C), B, C, k_prefix, v_prefix,
                num_heads, qkv.options());
}

}  // namespace

TORCH_LIBRARY(distilkit, m) {
  m.def("prefix_attention(Tensor q, Tensor k, Tensor v, Tensor k_prefix, Tensor v_prefix, int num_heads) -> Tensor");
  m.def("qkv_prefix_attention(Tensor qkv, Tensor k_prefix, Tensor v_prefix, int num_heads, int query_tail) -> Tensor");
}

TORCH_LIBRARY_IMPL(distilkit, CPU, m) {
  m.impl("prefix_attention", prefix_attention);
  m.impl("qkv_prefix_attention", qkv_prefix_attention);
}
