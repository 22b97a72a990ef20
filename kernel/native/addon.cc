// Entry point of the tsvirtio addon and the helpers shared by its source files.
#include <string.h>
#include <unistd.h>

#include <cmath>

#include "common.h"

namespace tsvirtio {

void ThrowErrno(Napi::Env env, int err, const char* syscall) {
  const char* name = strerrorname_np(err);
  std::string code = name != nullptr ? name : ("E" + std::to_string(err));
  std::string msg = code + ": " + strerror(err) + ", " + syscall;
  Napi::Error e = Napi::Error::New(env, msg);
  e.Set("code", Napi::String::New(env, code));
  e.Set("errno", Napi::Number::New(env, -err));
  e.Set("syscall", Napi::String::New(env, syscall));
  throw e;
}

void ThrowType(Napi::Env env, const std::string& msg) {
  Napi::TypeError e = Napi::TypeError::New(env, msg);
  e.Set("code", Napi::String::New(env, "ERR_INVALID_ARG_TYPE"));
  throw e;
}

void ThrowRange(Napi::Env env, const std::string& msg) {
  Napi::RangeError e = Napi::RangeError::New(env, msg);
  e.Set("code", Napi::String::New(env, "ERR_OUT_OF_RANGE"));
  throw e;
}

static Napi::Value Arg(const Napi::CallbackInfo& info, size_t i) {
  return i < info.Length() ? info[i] : info.Env().Undefined();
}

int32_t ArgInt32(const Napi::CallbackInfo& info, size_t i, const char* name) {
  Napi::Value v = Arg(info, i);
  if (!v.IsNumber()) ThrowType(info.Env(), std::string(name) + " must be a number");
  double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d) || std::trunc(d) != d || d < INT32_MIN || d > INT32_MAX) {
    ThrowRange(info.Env(), std::string(name) + " must be a 32-bit integer");
  }
  return static_cast<int32_t>(d);
}

uint64_t ArgU64(const Napi::CallbackInfo& info, size_t i, const char* name) {
  Napi::Value v = Arg(info, i);
  if (v.IsBigInt()) {
    bool lossless = false;
    uint64_t u = v.As<Napi::BigInt>().Uint64Value(&lossless);
    if (!lossless) ThrowRange(info.Env(), std::string(name) + " must fit in 64 unsigned bits");
    return u;
  }
  if (!v.IsNumber()) ThrowType(info.Env(), std::string(name) + " must be a number or a bigint");
  double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d) || std::trunc(d) != d || d < 0 || d > 9007199254740991.0) {
    ThrowRange(info.Env(), std::string(name) + " must be a non-negative safe integer");
  }
  return static_cast<uint64_t>(d);
}

bool ArgBool(const Napi::CallbackInfo& info, size_t i, const char* name, bool dflt) {
  Napi::Value v = Arg(info, i);
  if (v.IsUndefined()) return dflt;
  if (!v.IsBoolean()) ThrowType(info.Env(), std::string(name) + " must be a boolean");
  return v.As<Napi::Boolean>().Value();
}

std::string ArgString(const Napi::CallbackInfo& info, size_t i, const char* name) {
  Napi::Value v = Arg(info, i);
  if (!v.IsString()) ThrowType(info.Env(), std::string(name) + " must be a string");
  std::string s = v.As<Napi::String>().Utf8Value();
  if (s.find('\0') != std::string::npos) ThrowType(info.Env(), std::string(name) + " must not contain NUL");
  return s;
}

Bytes ArgBytes(const Napi::CallbackInfo& info, size_t i, const char* name) {
  Napi::Value v = Arg(info, i);
  if (v.IsTypedArray()) {
    Napi::TypedArray ta = v.As<Napi::TypedArray>();
    napi_typedarray_type type;
    size_t length = 0;
    void* data = nullptr;
    napi_status s = napi_get_typedarray_info(info.Env(), ta, &type, &length, &data, nullptr, nullptr);
    if (s != napi_ok) ThrowType(info.Env(), std::string(name) + ": cannot read typed array");
    return Bytes{static_cast<uint8_t*>(data), ta.ByteLength()};
  }
  if (v.IsDataView()) {
    size_t length = 0;
    void* data = nullptr;
    napi_status s = napi_get_dataview_info(info.Env(), v, &length, &data, nullptr, nullptr);
    if (s != napi_ok) ThrowType(info.Env(), std::string(name) + ": cannot read DataView");
    return Bytes{static_cast<uint8_t*>(data), length};
  }
  if (v.IsArrayBuffer()) {
    Napi::ArrayBuffer ab = v.As<Napi::ArrayBuffer>();
    return Bytes{static_cast<uint8_t*>(ab.Data()), ab.ByteLength()};
  }
  ThrowType(info.Env(), std::string(name) + " must be an ArrayBuffer, a TypedArray or a DataView");
}

FdGuard::~FdGuard() {
  if (fd_ >= 0) {
    int saved = errno;  // keep the errno of the failure being reported
    close(fd_);
    errno = saved;
  }
}

}  // namespace tsvirtio

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) {
  tsvirtio::InitMem(env, exports);
  tsvirtio::InitIo(env, exports);
  tsvirtio::InitWatch(env, exports);
  tsvirtio::InitClock(env, exports);
  tsvirtio::InitEntropy(env, exports);
  return exports;
}

NODE_API_MODULE(tsvirtio, InitAddon)
