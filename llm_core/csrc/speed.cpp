// The switches of the training-speed recipe (llm_core::train::speed) that
// tch does not bind:
//
// * autocast for a device type (CPU or CUDA) in bfloat16: tch's `autocast`
//   only knows CUDA and float16's default dtype;
// * TF32 matmuls and convolutions on CUDA (`torch.backends.cuda.matmul.allow_tf32`);
// * PyTorch's fused AdamW kernel, `torch._fused_adamw_` (the kernel behind
//   `torch.optim.AdamW(fused=True)`), which takes lists of tensors;
// * PyTorch 2.13's multi-tensor AdamW (`_multi_tensor_adam` with decoupled
//   weight decay, what `torch.optim.AdamW` runs by default on CUDA tensors):
//   the same `_foreach_*` kernels in the same order, hence the same numbers.
//
// The tensors arrive as tch's handles, which are `at::Tensor*`.
#include <ATen/Context.h>
#include <ATen/autocast_mode.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/_foreach_add.h>
#include <ATen/ops/_foreach_addcdiv.h>
#include <ATen/ops/_foreach_addcmul.h>
#include <ATen/ops/_foreach_div.h>
#include <ATen/ops/_foreach_lerp.h>
#include <ATen/ops/_foreach_mul.h>
#include <ATen/ops/_foreach_sqrt.h>
#include <ATen/ops/_fused_adamw.h>
#include <ATen/ops/scalar_tensor.h>
#include <c10/core/GradMode.h>

#include <cmath>
#include <cstring>
#include <exception>
#include <vector>

namespace {
thread_local char speed_error[512];

int fail(const std::exception& e) {
  std::strncpy(speed_error, e.what(), sizeof(speed_error) - 1);
  speed_error[sizeof(speed_error) - 1] = '\0';
  return -1;
}

at::DeviceType device_type(int cuda) { return cuda ? at::kCUDA : at::kCPU; }
}  // namespace

extern "C" {

const char* llm_speed_last_error() { return speed_error; }

// Enter a bfloat16 autocast region for the CPU (cuda = 0) or CUDA (cuda = 1).
// Returns whether autocast was already on for that device (for the exit).
int llm_autocast_enter(int cuda) {
  at::DeviceType t = device_type(cuda);
  bool was = at::autocast::is_autocast_enabled(t);
  at::autocast::set_autocast_enabled(t, true);
  at::autocast::set_autocast_dtype(t, at::kBFloat16);
  at::autocast::increment_nesting();
  return was ? 1 : 0;
}

// Leave the region: the weight-cast cache is dropped when the outermost
// region ends, as `torch.autocast.__exit__` does.
void llm_autocast_exit(int cuda, int was_enabled) {
  if (at::autocast::decrement_nesting() == 0) {
    at::autocast::clear_cache();
  }
  at::autocast::set_autocast_enabled(device_type(cuda), was_enabled != 0);
}

int llm_autocast_is_enabled(int cuda) {
  return at::autocast::is_autocast_enabled(device_type(cuda)) ? 1 : 0;
}

void llm_set_allow_tf32(int allow) {
  at::globalContext().setAllowTF32CuBLAS(allow != 0);
  at::globalContext().setAllowTF32CuDNN(allow != 0);
}

int llm_allow_tf32() { return at::globalContext().allowTF32CuBLAS() ? 1 : 0; }

// One fused AdamW step over n parameters of one device and dtype; `step` is
// the step count after this step's increment (PyTorch increments
// `state_steps` before calling the kernel).
int llm_fused_adamw(at::Tensor** params, at::Tensor** grads, at::Tensor** exp_avgs,
                    at::Tensor** exp_avg_sqs, int n, double step, double lr, double beta1,
                    double beta2, double weight_decay, double eps) {
  try {
    c10::NoGradGuard no_grad;
    std::vector<at::Tensor> p, g, m, v, steps;
    p.reserve(n);
    g.reserve(n);
    m.reserve(n);
    v.reserve(n);
    steps.reserve(n);
    for (int i = 0; i < n; ++i) {
      p.push_back(*params[i]);
      g.push_back(*grads[i]);
      m.push_back(*exp_avgs[i]);
      v.push_back(*exp_avg_sqs[i]);
      steps.push_back(at::scalar_tensor(
          step, at::TensorOptions().dtype(at::kFloat).device(params[i]->device())));
    }
    at::_fused_adamw_(p, g, m, v, {}, steps, lr, beta1, beta2, weight_decay, eps,
                      /*amsgrad=*/false, /*maximize=*/false);
    return 0;
  } catch (const std::exception& e) {
    return fail(e);
  }
}

// One multi-tensor AdamW step over n parameters of one device and dtype, as
// PyTorch's `_multi_tensor_adam` (decoupled weight decay, no amsgrad, not
// capturable); `step` as for llm_fused_adamw.
int llm_foreach_adamw(at::Tensor** params, at::Tensor** grads, at::Tensor** exp_avgs,
                      at::Tensor** exp_avg_sqs, int n, double step, double lr, double beta1,
                      double beta2, double weight_decay, double eps) {
  try {
    c10::NoGradGuard no_grad;
    std::vector<at::Tensor> p, g, m, v;
    for (int i = 0; i < n; ++i) {
      p.push_back(*params[i]);
      g.push_back(*grads[i]);
      m.push_back(*exp_avgs[i]);
      v.push_back(*exp_avg_sqs[i]);
    }
    if (weight_decay != 0.0) {
      at::_foreach_mul_(p, 1 - lr * weight_decay);
    }
    at::_foreach_lerp_(m, g, 1 - beta1);
    at::_foreach_mul_(v, beta2);
    at::_foreach_addcmul_(v, g, g, 1 - beta2);
    double bias_correction1 = 1 - std::pow(beta1, step);
    double bias_correction2 = 1 - std::pow(beta2, step);
    std::vector<c10::Scalar> step_size(n, c10::Scalar((lr / bias_correction1) * -1));
    std::vector<c10::Scalar> bias_correction2_sqrt(n, c10::Scalar(std::pow(bias_correction2, 0.5)));
    std::vector<at::Tensor> exp_avg_sq_sqrt = at::_foreach_sqrt(v);
    at::_foreach_div_(exp_avg_sq_sqrt, bias_correction2_sqrt);
    at::_foreach_add_(exp_avg_sq_sqrt, eps);
    at::_foreach_addcdiv_(p, m, exp_avg_sq_sqrt, step_size);
    return 0;
  } catch (const std::exception& e) {
    return fail(e);
  }
}

}  // extern "C"
