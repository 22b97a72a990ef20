// Memory: mmap/munmap of fds as external ArrayBuffers, mlock, addresses, memfd.
//
// A mapping is an external ArrayBuffer over the mapped bytes. It is unmapped either
// explicitly by munmap(ab), which also detaches the ArrayBuffer (byteLength becomes 0,
// views over it become empty, DataView access throws), or by the garbage collector
// when the ArrayBuffer becomes unreachable. A process-wide registry (address -> the
// Mapping record) makes sure that each mapping is unmapped exactly once, that munmap()
// never unmaps memory this addon did not map, and that a finalizer running late never
// unmaps a newer mapping that happens to reuse the same address.
#include <linux/memfd.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdint>
#include <mutex>
#include <unordered_map>

#include "common.h"

namespace tsvirtio {
namespace {

struct Mapping {
  void* addr;
  size_t length;
};

// Mappings that are still mapped. Guarded by g_mutex (worker threads load the addon too).
std::mutex g_mutex;
std::unordered_map<uintptr_t, Mapping*> g_mappings;

// Node 20 cannot create an ArrayBuffer larger than this (buffer.constants.MAX_LENGTH).
constexpr size_t kMaxMapLength = size_t{1} << 32;

void FinalizeMapping(napi_env /*env*/, void* /*data*/, void* hint) {
  Mapping* m = static_cast<Mapping*>(hint);
  bool unmap = false;
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    auto it = g_mappings.find(reinterpret_cast<uintptr_t>(m->addr));
    if (it != g_mappings.end() && it->second == m) {
      g_mappings.erase(it);
      unmap = true;
    }
  }
  if (unmap) munmap(m->addr, m->length);  // nothing to report to from a finalizer
  delete m;
}

// Wraps a fresh mapping into an external ArrayBuffer (or unmaps it and throws).
Napi::Value WrapMapping(Napi::Env env, void* addr, size_t length) {
  Mapping* m = new Mapping{addr, length};
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    g_mappings[reinterpret_cast<uintptr_t>(addr)] = m;
  }
  napi_value ab;
  napi_status s = napi_create_external_arraybuffer(env, addr, length, FinalizeMapping, m, &ab);
  if (s != napi_ok) {
    // Node may or may not call the finalizer after a failed creation: take the
    // mapping out of the registry and unmap it here; the finalizer, if it runs,
    // then only frees the record (which is therefore not freed here).
    {
      std::lock_guard<std::mutex> lock(g_mutex);
      g_mappings.erase(reinterpret_cast<uintptr_t>(addr));
    }
    munmap(addr, length);
    NAPI_THROW_IF_FAILED(env, s, Napi::Value());
    ThrowType(env, "cannot create an external ArrayBuffer");
  }
  return Napi::Value(env, ab);
}

size_t ArgLength(const Napi::CallbackInfo& info, size_t i) {
  uint64_t length = ArgU64(info, i, "length");
  if (length == 0 || length > kMaxMapLength) {
    ThrowRange(info.Env(), "length must be between 1 and 4 GiB (Node's largest ArrayBuffer)");
  }
  return static_cast<size_t>(length);
}

// mmap(fd, length, offset, writable = true, shared = true, populate = false) -> ArrayBuffer
Napi::Value Mmap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgInt32(info, 0, "fd");
  size_t length = ArgLength(info, 1);
  uint64_t offset = ArgU64(info, 2, "offset");
  bool writable = ArgBool(info, 3, "writable", true);
  bool shared = ArgBool(info, 4, "shared", true);
  bool populate = ArgBool(info, 5, "populate", false);
  int prot = PROT_READ | (writable ? PROT_WRITE : 0);
  int flags = (shared ? MAP_SHARED : MAP_PRIVATE) | (populate ? MAP_POPULATE : 0);
  void* addr = mmap(nullptr, length, prot, flags, fd, static_cast<off_t>(offset));
  if (addr == MAP_FAILED) ThrowErrno(env, errno, "mmap");
  return WrapMapping(env, addr, length);
}

// mmapAnonymous(length, hugetlb = false, shared = false, populate = false) -> ArrayBuffer
Napi::Value MmapAnonymous(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  size_t length = ArgLength(info, 0);
  bool hugetlb = ArgBool(info, 1, "hugetlb", false);
  bool shared = ArgBool(info, 2, "shared", false);
  bool populate = ArgBool(info, 3, "populate", false);
  int flags = MAP_ANONYMOUS | (shared ? MAP_SHARED : MAP_PRIVATE) | (hugetlb ? MAP_HUGETLB : 0) |
              (populate ? MAP_POPULATE : 0);
  void* addr = mmap(nullptr, length, PROT_READ | PROT_WRITE, flags, -1, 0);
  if (addr == MAP_FAILED) ThrowErrno(env, errno, "mmap");
  return WrapMapping(env, addr, length);
}

// munmap(arrayBuffer) -> true if it was unmapped now, false if it already was.
Napi::Value Munmap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsArrayBuffer()) ThrowType(env, "munmap: argument must be an ArrayBuffer from mmap()");
  Napi::ArrayBuffer ab = info[0].As<Napi::ArrayBuffer>();
  if (ab.IsDetached() || ab.Data() == nullptr) return Napi::Boolean::New(env, false);
  uintptr_t key = reinterpret_cast<uintptr_t>(ab.Data());
  Mapping* m = nullptr;
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    auto it = g_mappings.find(key);
    if (it != g_mappings.end() && it->second->length == ab.ByteLength()) {
      m = it->second;
      g_mappings.erase(it);
    }
  }
  if (m == nullptr) ThrowType(env, "munmap: this ArrayBuffer was not created by mmap()");
  // Detach first, so no JavaScript view can reach the bytes once they are gone.
  napi_status s = napi_detach_arraybuffer(env, ab);
  if (s != napi_ok) {
    std::lock_guard<std::mutex> lock(g_mutex);
    g_mappings[key] = m;  // still mapped, still owned by the ArrayBuffer's finalizer
  }
  NAPI_THROW_IF_FAILED(env, s, Napi::Value());
  // munmap of a range we mapped does not fail in practice; if it did, the pages would
  // stay mapped (leaked) but unreachable from JavaScript.
  if (munmap(m->addr, m->length) != 0) ThrowErrno(env, errno, "munmap");  // record freed by the finalizer
  return Napi::Boolean::New(env, true);
}

Bytes NonEmptyBytes(const Napi::CallbackInfo& info, const char* what) {
  Bytes b = ArgBytes(info, 0, "buffer");
  if (b.data == nullptr || b.length == 0) ThrowType(info.Env(), std::string(what) + ": buffer is empty or detached");
  return b;
}

// mlock(buffer): locks the pages under an ArrayBuffer or view.
Napi::Value Mlock(const Napi::CallbackInfo& info) {
  Bytes b = NonEmptyBytes(info, "mlock");
  if (mlock(b.data, b.length) != 0) ThrowErrno(info.Env(), errno, "mlock");
  return info.Env().Undefined();
}

Napi::Value Munlock(const Napi::CallbackInfo& info) {
  Bytes b = NonEmptyBytes(info, "munlock");
  if (munlock(b.data, b.length) != 0) ThrowErrno(info.Env(), errno, "munlock");
  return info.Env().Undefined();
}

// mlockOnFault(address: bigint, length): mlock2(MLOCK_ONFAULT) on a range of this
// process's address space: each of its pages stays in RAM once it has been touched
// (nothing is faulted in here). Meant for file mappings (the node binary, libraries);
// never for V8's heap, which madvise()s pages away (refused on locked pages).
Napi::Value MlockOnFault(const Napi::CallbackInfo& info) {
  uint64_t addr = ArgU64(info, 0, "address");
  uint64_t len = ArgU64(info, 1, "length");
  if (len == 0) ThrowRange(info.Env(), "mlockOnFault: length must be > 0");
#ifndef MLOCK_ONFAULT
#define MLOCK_ONFAULT 1
#endif
  if (syscall(SYS_mlock2, reinterpret_cast<void*>(addr), static_cast<size_t>(len), MLOCK_ONFAULT) != 0) ThrowErrno(info.Env(), errno, "mlock2");
  return info.Env().Undefined();
}

// addressOf(buffer) -> bigint: the virtual address of the first byte (of a view: at its offset).
Napi::Value AddressOf(const Napi::CallbackInfo& info) {
  Bytes b = NonEmptyBytes(info, "addressOf");
  return Napi::BigInt::New(info.Env(), static_cast<uint64_t>(reinterpret_cast<uintptr_t>(b.data)));
}

// memfdCreate(name, hugetlb = false) -> fd (close-on-exec).
Napi::Value MemfdCreate(const Napi::CallbackInfo& info) {
  std::string name = ArgString(info, 0, "name");
  bool hugetlb = ArgBool(info, 1, "hugetlb", false);
  int fd = memfd_create(name.c_str(), MFD_CLOEXEC | (hugetlb ? MFD_HUGETLB : 0));
  if (fd < 0) ThrowErrno(info.Env(), errno, "memfd_create");
  return Napi::Number::New(info.Env(), fd);
}

Napi::Value PageSize(const Napi::CallbackInfo& info) {
  long ps = sysconf(_SC_PAGESIZE);
  if (ps <= 0) ThrowErrno(info.Env(), errno != 0 ? errno : EINVAL, "sysconf");
  return Napi::Number::New(info.Env(), static_cast<double>(ps));
}

}  // namespace

void InitMem(Napi::Env env, Napi::Object exports) {
  exports.Set("mmap", Napi::Function::New(env, Mmap, "mmap"));
  exports.Set("mmapAnonymous", Napi::Function::New(env, MmapAnonymous, "mmapAnonymous"));
  exports.Set("munmap", Napi::Function::New(env, Munmap, "munmap"));
  exports.Set("mlock", Napi::Function::New(env, Mlock, "mlock"));
  exports.Set("munlock", Napi::Function::New(env, Munlock, "munlock"));
  exports.Set("mlockOnFault", Napi::Function::New(env, MlockOnFault, "mlockOnFault"));
  exports.Set("addressOf", Napi::Function::New(env, AddressOf, "addressOf"));
  exports.Set("memfdCreate", Napi::Function::New(env, MemfdCreate, "memfdCreate"));
  exports.Set("pageSize", Napi::Function::New(env, PageSize, "pageSize"));
}

}  // namespace tsvirtio
