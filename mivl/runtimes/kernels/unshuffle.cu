// Pixel unshuffle fused with the projector's LayerNorm, for bundles whose vision encoder is split
// into a ViT engine and a projector: hidden (N, 1 + g*g, C) -> drop CLS -> 2x2 space-to-depth in
// InternVL's v2 order -> (N, (g/2)^2, 4C) -> LayerNorm(4C) with gamma, beta.
// Token (r, c) = concat of patches (2r,2c), (2r,2c+1), (2r+1,2c), (2r+1,2c+1).
// One block per output token (gridDim = (tokens, N)); blockDim.x = MIVL_LN_THREADS.
#define MIVL_LN_THREADS 256

__device__ __forceinline__ float mivl_unshuffled(const float* __restrict__ tile, int g, int C, int token, int i) {
  int half = g / 2;
  int r = token / half, c = token % half;
  int q = i / C, ch = i % C;
  int row = 2 * r + q / 2, col = 2 * c + q % 2;
  return tile[(long)(1 + row * g + col) * C + ch];
}

__device__ float mivl_block_sum(float v, float* scratch) {
  scratch[threadIdx.x] = v;
  __syncthreads();
  for (int s = MIVL_LN_THREADS / 2; s > 0; s >>= 1) {
    if ((int)threadIdx.x < s) scratch[threadIdx.x] += scratch[threadIdx.x + s];
    __syncthreads();
  }
  float total = scratch[0];
  __syncthreads();
  return total;
}

extern "C" __global__ void mivl_unshuffle_layernorm(const float* __restrict__ hidden, int g, int C,
                                                    const float* __restrict__ gamma,
                                                    const float* __restrict__ beta, float eps,
                                                    float* __restrict__ out) {
  __shared__ float scratch[MIVL_LN_THREADS];
  int token = blockIdx.x, n = blockIdx.y, D = 4 * C, tokens = (g / 2) * (g / 2);
  const float* tile = hidden + (long)n * (1 + g * g) * C;
  float sum = 0.f;
  for (int i = threadIdx.x; i < D; i += MIVL_LN_THREADS) sum += mivl_unshuffled(tile, g, C, token, i);
  float mean = mivl_block_sum(sum, scratch) / D;
  float sq = 0.f;
  for (int i = threadIdx.x; i < D; i += MIVL_LN_THREADS) {
    float d = mivl_unshuffled(tile, g, C, token, i) - mean;
    sq += d * d;
  }
  float inv = rsqrtf(mivl_block_sum(sq, scratch) / D + eps);
  float* o = out + ((long)n * tokens + token) * D;
  for (int i = threadIdx.x; i < D; i += MIVL_LN_THREADS)
    o[i] = (mivl_unshuffled(tile, g, C, token, i) - mean) * inv * gamma[i] + beta[i];
}
