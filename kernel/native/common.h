// Shared helpers for the tsvirtio addon: argument checks and errno -> JS Error.
//
// Every function of the addon is a thin wrapper over one or two system calls.
// Failures throw a JS Error shaped like Node's own system errors:
//   err.code = 'EBADF', err.errno = -9, err.syscall = 'mmap',
//   err.message = 'EBADF: Bad file descriptor, mmap'.
// Argument type errors throw a TypeError/RangeError with code ERR_INVALID_ARG_TYPE /
// ERR_OUT_OF_RANGE.
#pragma once

#include <napi.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <string>

namespace tsvirtio {

// Throws the errno error `err` (a positive errno value) for `syscall`.
[[noreturn]] void ThrowErrno(Napi::Env env, int err, const char* syscall);
[[noreturn]] void ThrowType(Napi::Env env, const std::string& msg);
[[noreturn]] void ThrowRange(Napi::Env env, const std::string& msg);

// Argument accessors; they throw on a wrong type or range.
int32_t ArgInt32(const Napi::CallbackInfo& info, size_t i, const char* name);
// A non-negative integer given as a Number (safe integer) or a BigInt.
uint64_t ArgU64(const Napi::CallbackInfo& info, size_t i, const char* name);
// A boolean; `undefined` gives `dflt`.
bool ArgBool(const Napi::CallbackInfo& info, size_t i, const char* name, bool dflt);
std::string ArgString(const Napi::CallbackInfo& info, size_t i, const char* name);

// The bytes of an ArrayBuffer, TypedArray (including Buffer) or DataView.
struct Bytes {
  uint8_t* data;
  size_t length;
};
Bytes ArgBytes(const Napi::CallbackInfo& info, size_t i, const char* name);

// Registration of the functions of each source file.
void InitMem(Napi::Env env, Napi::Object exports);
void InitIo(Napi::Env env, Napi::Object exports);
void InitWatch(Napi::Env env, Napi::Object exports);
void InitClock(Napi::Env env, Napi::Object exports);
void InitEntropy(Napi::Env env, Napi::Object exports);

// Retries a system call interrupted by a signal.
template <typename F>
auto RetryEintr(F f) -> decltype(f()) {
  decltype(f()) r;
  do {
    r = f();
  } while (r == -1 && errno == EINTR);
  return r;
}

// Closes an fd on scope exit unless released (for error paths).
class FdGuard {
 public:
  explicit FdGuard(int fd) : fd_(fd) {}
  ~FdGuard();
  FdGuard(const FdGuard&) = delete;
  FdGuard& operator=(const FdGuard&) = delete;
  int release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

}  // namespace tsvirtio
