#pragma once
#include <chrono>

namespace gloo {
// An inline member of ProcessGroupGloo (setTimeout) calls this; declared
// only, never called from the shim.
class Context {
 public:
  void setTimeout(std::chrono::milliseconds timeout);
};
}  // namespace gloo
