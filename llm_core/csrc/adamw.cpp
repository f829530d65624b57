// Two optimizer steps tch cannot express exactly (llm_core::optim):
//
// * one parameter's AdamW update as PyTorch 2.13's `_single_tensor_adam`
//   (decoupled weight decay) writes it, including the `value=` arguments of
//   addcmul_/addcdiv_ that tch's bindings leave out: the same kernels in the
//   same order, hence the same roundings and the same number of passes
//   over memory;
// * `zero_grad(set_to_none=True)`: drop a gradient instead of zeroing it, so
//   the next backward pass writes it fresh (no zero fill, no accumulation).
//
// The tensors arrive as tch's handles, which are `at::Tensor*`.
#include <ATen/core/Tensor.h>
#include <ATen/TensorOperators.h>
#include <ATen/ops/sqrt.h>
#include <c10/core/GradMode.h>

#include <cmath>
#include <cstring>
#include <exception>

namespace {
thread_local char optim_error[512];
}

extern "C" {

const char* llm_optim_last_error() { return optim_error; }

int llm_adamw_single_tensor(at::Tensor* param, at::Tensor* grad, at::Tensor* exp_avg,
                            at::Tensor* exp_avg_sq, double lr, double beta1, double beta2,
                            double weight_decay, double eps, double step) {
  try {
    c10::NoGradGuard no_grad;
    if (weight_decay != 0.0) {
      param->mul_(1 - lr * weight_decay);
    }
    exp_avg->lerp_(*grad, 1 - beta1);
    exp_avg_sq->mul_(beta2).addcmul_(*grad, *grad, 1 - beta2);
    double bias_correction1 = 1 - std::pow(beta1, step);
    double bias_correction2 = 1 - std::pow(beta2, step);
    double step_size = lr / bias_correction1;
    double bias_correction2_sqrt = std::pow(bias_correction2, 0.5);
    at::Tensor denom = (exp_avg_sq->sqrt() / bias_correction2_sqrt).add_(eps);
    param->addcdiv_(*exp_avg, denom, -step_size);
    return 0;
  } catch (const std::exception& e) {
    std::strncpy(optim_error, e.what(), sizeof(optim_error) - 1);
    optim_error[sizeof(optim_error) - 1] = '\0';
    return -1;
  }
}

void llm_grad_set_to_none(at::Tensor* param) {
  if (param->defined() && param->grad().defined()) {
    param->mutable_grad().reset();
  }
}

}  // extern "C"
