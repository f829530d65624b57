// libtorch's default generators' state as bytes: the same bytes as PyTorch's
// `torch.get_rng_state()` / `torch.cuda.get_rng_state()`. tch 0.26 exposes
// `manual_seed` but not the state, and a resumed training run needs it to draw
// the same dropout masks and shuffles as an uninterrupted one (llm_core::rng).
#include <ATen/Context.h>
#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <cstring>
#include <mutex>

namespace {
thread_local char last_error[512];

void set_error(const char* what) {
  std::strncpy(last_error, what, sizeof(last_error) - 1);
  last_error[sizeof(last_error) - 1] = '\0';
}

at::Generator generator(int device_type, int device_index) {
  if (device_type == 0) {
    return at::globalContext().defaultGenerator(c10::Device(c10::DeviceType::CPU));
  }
  return at::globalContext().defaultGenerator(
      c10::Device(c10::DeviceType::CUDA, static_cast<c10::DeviceIndex>(device_index)));
}
}  // namespace

extern "C" {

const char* llm_rng_last_error() { return last_error; }

// Writes the state into `out` (at most `cap` bytes); returns its size in bytes
// (call with cap = 0 to learn the size), or -1 on error.
int64_t llm_rng_get_state(int device_type, int device_index, uint8_t* out, int64_t cap) {
  try {
    auto gen = generator(device_type, device_index);
    at::Tensor state;
    {
      std::lock_guard<std::mutex> lock(gen.mutex());
      state = gen.get_state();
    }
    auto n = static_cast<int64_t>(state.numel());
    if (out != nullptr && cap >= n) {
      std::memcpy(out, state.data_ptr(), static_cast<size_t>(n));
    }
    return n;
  } catch (const std::exception& e) {
    set_error(e.what());
    return -1;
  }
}

// Restores a state from `len` bytes; returns 0, or -1 on error.
int llm_rng_set_state(int device_type, int device_index, const uint8_t* in, int64_t len) {
  try {
    auto gen = generator(device_type, device_index);
    auto state = at::empty({len}, at::TensorOptions().dtype(at::kByte));
    std::memcpy(state.data_ptr(), in, static_cast<size_t>(len));
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(state);
    return 0;
  } catch (const std::exception& e) {
    set_error(e.what());
    return -1;
  }
}

}  // extern "C"
