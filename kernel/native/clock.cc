// Clocks: the CPU's time-stamp counter. A TCG guest's TSC runs at the host's TSC rate,
// and its kernel's PIT calibration of the TSC fails under host load (the guest then
// falls back to a jiffies clock); the launcher measures the host's TSC rate with this
// and hands it to the guest kernel (tsc_early_khz=). And the wall clock of a guest
// restored from a saved VM state, which still reads the time the state was saved.
#include <time.h>

#include <cmath>
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

// setRealtimeClock(msSinceEpoch: number): CLOCK_REALTIME := the given time (needs
// CAP_SYS_TIME: root in the guest). Date.now() reads it; monotonic clocks are untouched.
Napi::Value SetRealtimeClock(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) ThrowType(env, "msSinceEpoch must be a number");
  double ms = info[0].As<Napi::Number>().DoubleValue();
  if (!std::isfinite(ms) || ms < 0 || ms > 253402300799999.0) ThrowRange(env, "msSinceEpoch must be a time from 1970 to 9999");
  struct timespec ts;
  ts.tv_sec = static_cast<time_t>(ms / 1000);
  ts.tv_nsec = static_cast<long>((ms - static_cast<double>(ts.tv_sec) * 1000) * 1e6);
  if (ts.tv_nsec < 0) ts.tv_nsec = 0;
  if (ts.tv_nsec > 999999999) ts.tv_nsec = 999999999;
  if (clock_settime(CLOCK_REALTIME, &ts) != 0) ThrowErrno(env, errno, "clock_settime");
  return env.Undefined();
}

}  // namespace

void InitClock(Napi::Env env, Napi::Object exports) {
  exports.Set("tscNow", Napi::Function::New(env, TscNow, "tscNow"));
  exports.Set("setRealtimeClock", Napi::Function::New(env, SetRealtimeClock, "setRealtimeClock"));
}

}  // namespace tsvirtio
