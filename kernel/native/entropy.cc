// Fresh randomness for a guest restored from a saved VM state. Every guest restored from
// one state starts with the same kernel random pool and the same OpenSSL generator state
// (node seeded it before the state was saved); the host hands each a few fresh bytes.
#include <dlfcn.h>
#include <fcntl.h>
#include <linux/random.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "common.h"

namespace tsvirtio {
namespace {

// reseedRandom(bytes) -> { kernel: boolean, openssl: boolean }
// kernel: the bytes are credited to the kernel's input pool (RNDADDENTROPY) and its
// generator reseeded from it now (RNDRESEEDCRNG), rather than at its next interval
// (linux drivers/char/random.c; both need CAP_SYS_ADMIN). openssl: the bytes are mixed
// into node's OpenSSL generator (RAND_seed, found in node's own exports; OpenSSL 3's
// per-thread generators reseed from the primary when it has been reseeded). False
// where the call is missing; system call failures throw.
Napi::Value ReseedRandom(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Bytes b = ArgBytes(info, 0, "bytes");
  if (b.length < 16 || b.length > 512) ThrowRange(env, "bytes must hold 16 to 512 bytes");

  int fd = RetryEintr([] { return open("/dev/urandom", O_WRONLY | O_CLOEXEC); });
  if (fd < 0) ThrowErrno(env, errno, "open /dev/urandom");
  FdGuard guard(fd);
  std::vector<uint8_t> pool(sizeof(struct rand_pool_info) + b.length);
  auto* info_ = reinterpret_cast<struct rand_pool_info*>(pool.data());
  info_->entropy_count = static_cast<int>(b.length * 8);
  info_->buf_size = static_cast<int>(b.length);
  std::memcpy(info_->buf, b.data, b.length);
  if (ioctl(fd, RNDADDENTROPY, info_) != 0) ThrowErrno(env, errno, "ioctl RNDADDENTROPY");
  if (ioctl(fd, RNDRESEEDCRNG) != 0) ThrowErrno(env, errno, "ioctl RNDRESEEDCRNG");

  using RandSeed = void (*)(const void*, int);
  auto seed = reinterpret_cast<RandSeed>(dlsym(RTLD_DEFAULT, "RAND_seed"));
  if (seed != nullptr) seed(b.data, static_cast<int>(b.length));

  Napi::Object out = Napi::Object::New(env);
  out.Set("kernel", true);
  out.Set("openssl", seed != nullptr);
  return out;
}

}  // namespace

void InitEntropy(Napi::Env env, Napi::Object exports) {
  exports.Set("reseedRandom", Napi::Function::New(env, ReseedRandom, "reseedRandom"));
}

}  // namespace tsvirtio
