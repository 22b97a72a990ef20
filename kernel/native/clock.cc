// Clocks: the CPU's time-stamp counter. A TCG guest's TSC runs at the host's TSC rate,
// and its kernel's PIT calibration of the TSC fails under host load (the guest then
// falls back to a jiffies clock); the launcher measures the host's TSC rate with this
// and hands it to the guest kernel (tsc_early_khz=).
#include <cstdint>

#include "common.h"

#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>
#endif

namespace tsvirtio {
namespace {

// tscNow() -> bigint: the time-stamp counter (rdtsc); -1n where there is none.
Napi::Value TscNow(const Napi::CallbackInfo& info) {
#if defined(__x86_64__) || defined(__i386__)
  return Napi::BigInt::New(info.Env(), static_cast<uint64_t>(__rdtsc()));
#else
  return Napi::BigInt::New(info.Env(), static_cast<int64_t>(-1));
#endif
}

}  // namespace

void InitClock(Napi::Env env, Napi::Object exports) {
  exports.Set("tscNow", Napi::Function::New(env, TscNow, "tscNow"));
}

}  // namespace tsvirtio
