// File descriptors: eventfd, read/write/close, Unix stream sockets with fd passing
// (SCM_RIGHTS), AF_VSOCK sockets. Every fd this file creates is close-on-exec;
// sockets are created nonblocking. "Would block" is returned as -1, never thrown.
#include <fcntl.h>
#include <linux/vm_sockets.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#include "common.h"

namespace tsvirtio {
namespace {

constexpr int kMaxFdsPerMessage = 253;  // Linux SCM_MAX_FD

bool WouldBlock(int err) { return err == EAGAIN || err == EWOULDBLOCK; }

Napi::Number Num(Napi::Env env, double v) { return Napi::Number::New(env, v); }

// ---- eventfd -------------------------------------------------------------------

// eventfd(initial = 0, nonblocking = true) -> fd
Napi::Value EventFd(const Napi::CallbackInfo& info) {
  uint64_t initial = info.Length() > 0 && !info[0].IsUndefined() ? ArgU64(info, 0, "initial") : 0;
  bool nonblocking = ArgBool(info, 1, "nonblocking", true);
  if (initial > 0xffffffffu) ThrowRange(info.Env(), "initial must fit in 32 bits");
  int fd = eventfd(static_cast<unsigned>(initial), EFD_CLOEXEC | (nonblocking ? EFD_NONBLOCK : 0));
  if (fd < 0) ThrowErrno(info.Env(), errno, "eventfd");
  return Num(info.Env(), fd);
}

// eventfdRead(fd) -> the counter (as a number), or -1 if it is zero on a nonblocking fd.
Napi::Value EventFdRead(const Napi::CallbackInfo& info) {
  int fd = ArgInt32(info, 0, "fd");
  uint64_t value = 0;
  ssize_t n = RetryEintr([&] { return read(fd, &value, sizeof value); });
  if (n < 0) {
    if (WouldBlock(errno)) return Num(info.Env(), -1);
    ThrowErrno(info.Env(), errno, "read");
  }
  if (n != sizeof value) ThrowErrno(info.Env(), EIO, "read");
  return Num(info.Env(), static_cast<double>(value));
}

// eventfdWrite(fd, value = 1) -> true, or false if the counter would overflow (nonblocking fd).
Napi::Value EventFdWrite(const Napi::CallbackInfo& info) {
  int fd = ArgInt32(info, 0, "fd");
  uint64_t value = info.Length() > 1 && !info[1].IsUndefined() ? ArgU64(info, 1, "value") : 1;
  ssize_t n = RetryEintr([&] { return write(fd, &value, sizeof value); });
  if (n < 0) {
    if (WouldBlock(errno)) return Napi::Boolean::New(info.Env(), false);
    ThrowErrno(info.Env(), errno, "write");
  }
  if (n != sizeof value) ThrowErrno(info.Env(), EIO, "write");
  return Napi::Boolean::New(info.Env(), true);
}

// ---- plain fds -----------------------------------------------------------------

// read(fd, buffer) -> bytes read, 0 at end of file, -1 if it would block.
Napi::Value Read(const Napi::CallbackInfo& info) {
  int fd = ArgInt32(info, 0, "fd");
  Bytes b = ArgBytes(info, 1, "buffer");
  ssize_t n = RetryEintr([&] { return read(fd, b.data, b.length); });
  if (n < 0) {
    if (WouldBlock(errno)) return Num(info.Env(), -1);
    ThrowErrno(info.Env(), errno, "read");
  }
  return Num(info.Env(), static_cast<double>(n));
}

// write(fd, buffer) -> bytes written (maybe fewer than asked), -1 if it would block.
Napi::Value Write(const Napi::CallbackInfo& info) {
  int fd = ArgInt32(info, 0, "fd");
  Bytes b = ArgBytes(info, 1, "buffer");
  ssize_t n = RetryEintr([&] { return write(fd, b.data, b.length); });
  if (n < 0) {
    if (WouldBlock(errno)) return Num(info.Env(), -1);
    ThrowErrno(info.Env(), errno, "write");
  }
  return Num(info.Env(), static_cast<double>(n));
}

// close(fd). Not retried on EINTR (on Linux the fd is gone either way).
Napi::Value Close(const Napi::CallbackInfo& info) {
  int fd = ArgInt32(info, 0, "fd");
  if (close(fd) != 0 && errno != EINTR) ThrowErrno(info.Env(), errno, "close");
  return info.Env().Undefined();
}

// setNonblocking(fd, on = true)
Napi::Value SetNonblocking(const Napi::CallbackInfo& info) {
  int fd = ArgInt32(info, 0, "fd");
  bool on = ArgBool(info, 1, "on", true);
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0) ThrowErrno(info.Env(), errno, "fcntl");
  int want = on ? (flags | O_NONBLOCK) : (flags & ~O_NONBLOCK);
  if (want != flags && fcntl(fd, F_SETFL, want) < 0) ThrowErrno(info.Env(), errno, "fcntl");
  return info.Env().Undefined();
}

// shutdown(fd, how): 0 = SHUT_RD, 1 = SHUT_WR, 2 = SHUT_RDWR.
Napi::Value Shutdown(const Napi::CallbackInfo& info) {
  int fd = ArgInt32(info, 0, "fd");
  int how = ArgInt32(info, 1, "how");
  if (shutdown(fd, how) != 0) ThrowErrno(info.Env(), errno, "shutdown");
  return info.Env().Undefined();
}

// checkSocketError(fd): throws the pending error of a socket (SO_ERROR), e.g. the
// outcome of a nonblocking connect once the socket is writable; returns nothing if none.
Napi::Value CheckSocketError(const Napi::CallbackInfo& info) {
  int fd = ArgInt32(info, 0, "fd");
  int err = 0;
  socklen_t len = sizeof err;
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) ThrowErrno(info.Env(), errno, "getsockopt");
  if (err != 0) ThrowErrno(info.Env(), err, "connect");
  return info.Env().Undefined();
}

// ---- Unix stream sockets ---------------------------------------------------------

sockaddr_un UnixAddress(Napi::Env env, const std::string& path, const char* syscall) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof addr.sun_path) ThrowErrno(env, ENAMETOOLONG, syscall);
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  return addr;
}

int NewSocket(Napi::Env env, int domain) {
  int fd = socket(domain, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) ThrowErrno(env, errno, "socket");
  return fd;
}

// unixListen(path, backlog = 16) -> nonblocking listening fd. Does not unlink `path`.
Napi::Value UnixListen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = ArgString(info, 0, "path");
  int backlog = info.Length() > 1 && !info[1].IsUndefined() ? ArgInt32(info, 1, "backlog") : 16;
  sockaddr_un addr = UnixAddress(env, path, "bind");
  FdGuard fd(NewSocket(env, AF_UNIX));
  if (bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) ThrowErrno(env, errno, "bind");
  if (listen(fd.get(), backlog) != 0) ThrowErrno(env, errno, "listen");
  return Num(env, fd.release());
}

// unixAccept(listenFd) -> nonblocking fd of the new connection, or -1 if none is waiting.
Napi::Value UnixAccept(const Napi::CallbackInfo& info) {
  int lfd = ArgInt32(info, 0, "fd");
  int fd = RetryEintr([&] { return accept4(lfd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC); });
  if (fd < 0) {
    if (WouldBlock(errno) || errno == ECONNABORTED) return Num(info.Env(), -1);
    ThrowErrno(info.Env(), errno, "accept4");
  }
  return Num(info.Env(), fd);
}

// unixConnect(path) -> nonblocking connected fd. A full listen backlog throws EAGAIN.
Napi::Value UnixConnect(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = ArgString(info, 0, "path");
  sockaddr_un addr = UnixAddress(env, path, "connect");
  FdGuard fd(NewSocket(env, AF_UNIX));
  if (RetryEintr([&] { return connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr); }) != 0) {
    ThrowErrno(env, errno, "connect");
  }
  return Num(env, fd.release());
}

// unixSocketPair() -> [fd, fd], both nonblocking.
Napi::Value UnixSocketPair(const Napi::CallbackInfo& info) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0) {
    ThrowErrno(info.Env(), errno, "socketpair");
  }
  FdGuard a(sv[0]), b(sv[1]);
  Napi::Array result = Napi::Array::New(info.Env(), 2);
  result.Set(uint32_t{0}, Num(info.Env(), sv[0]));
  result.Set(uint32_t{1}, Num(info.Env(), sv[1]));
  a.release();
  b.release();
  return result;
}

// recvMsg(fd, buffer, maxFds = 0) -> { bytes, fds, fdsTruncated }
//   bytes: > 0 read, 0 end of stream, -1 would block. Received fds are close-on-exec.
//   fdsTruncated: the peer sent more fds than maxFds; the kernel closed the extra ones.
Napi::Value RecvMsg(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgInt32(info, 0, "fd");
  Bytes b = ArgBytes(info, 1, "buffer");
  int maxFds = info.Length() > 2 && !info[2].IsUndefined() ? ArgInt32(info, 2, "maxFds") : 0;
  if (maxFds < 0 || maxFds > kMaxFdsPerMessage) ThrowRange(env, "maxFds must be between 0 and 253");

  alignas(cmsghdr) char control[CMSG_SPACE(kMaxFdsPerMessage * sizeof(int))];
  iovec iov{b.data, b.length};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (maxFds > 0) {
    msg.msg_control = control;
    // CMSG_LEN, not CMSG_SPACE: the padding of CMSG_SPACE could hold one more fd than asked.
    msg.msg_controllen = CMSG_LEN(maxFds * sizeof(int));
  }
  ssize_t n = RetryEintr([&] { return recvmsg(fd, &msg, MSG_CMSG_CLOEXEC); });
  if (n < 0) {
    if (!WouldBlock(errno)) ThrowErrno(env, errno, "recvmsg");
  }
  std::vector<int> fds;
  if (n >= 0 && maxFds > 0) {
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < count; i++) {
        int rfd;
        std::memcpy(&rfd, CMSG_DATA(c) + i * sizeof(int), sizeof rfd);
        fds.push_back(rfd);
      }
    }
  }
  try {
    Napi::Object result = Napi::Object::New(env);
    Napi::Array jsFds = Napi::Array::New(env, fds.size());
    for (size_t i = 0; i < fds.size(); i++) jsFds.Set(static_cast<uint32_t>(i), Num(env, fds[i]));
    result.Set("bytes", Num(env, n < 0 ? -1 : static_cast<double>(n)));
    result.Set("fds", jsFds);
    result.Set("fdsTruncated", Napi::Boolean::New(env, n >= 0 && (msg.msg_flags & MSG_CTRUNC) != 0));
    return result;
  } catch (...) {
    for (int rfd : fds) close(rfd);  // never leak received fds
    throw;
  }
}

// sendMsg(fd, buffer, fds = []) -> bytes sent (maybe fewer than asked), -1 if it would block.
// The fds travel with the first byte sent; after a partial send do not send them again.
Napi::Value SendMsg(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgInt32(info, 0, "fd");
  Bytes b = ArgBytes(info, 1, "buffer");
  std::vector<int> fds;
  if (info.Length() > 2 && !info[2].IsUndefined()) {
    if (!info[2].IsArray()) ThrowType(env, "fds must be an array of numbers");
    Napi::Array arr = info[2].As<Napi::Array>();
    if (arr.Length() > static_cast<uint32_t>(kMaxFdsPerMessage)) ThrowRange(env, "at most 253 fds per message");
    for (uint32_t i = 0; i < arr.Length(); i++) {
      Napi::Value v = arr.Get(i);
      if (!v.IsNumber()) ThrowType(env, "fds must be an array of numbers");
      double d = v.As<Napi::Number>().DoubleValue();
      if (!(d >= 0 && d <= INT32_MAX) || static_cast<double>(static_cast<int>(d)) != d) {
        ThrowRange(env, "fds must be non-negative integers");
      }
      fds.push_back(static_cast<int>(d));
    }
  }
  alignas(cmsghdr) char control[CMSG_SPACE(kMaxFdsPerMessage * sizeof(int))];
  iovec iov{b.data, b.length};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (!fds.empty()) {
    std::memset(control, 0, sizeof control);
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(fds.size() * sizeof(int));
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(fds.size() * sizeof(int));
    std::memcpy(CMSG_DATA(c), fds.data(), fds.size() * sizeof(int));
  }
  ssize_t n = RetryEintr([&] { return sendmsg(fd, &msg, MSG_NOSIGNAL); });
  if (n < 0) {
    if (WouldBlock(errno)) return Num(env, -1);
    ThrowErrno(env, errno, "sendmsg");
  }
  return Num(env, static_cast<double>(n));
}

// ---- AF_VSOCK --------------------------------------------------------------------

uint32_t ArgU32(const Napi::CallbackInfo& info, size_t i, const char* name) {
  uint64_t v = ArgU64(info, i, name);
  if (v > 0xffffffffu) ThrowRange(info.Env(), std::string(name) + " must fit in 32 bits");
  return static_cast<uint32_t>(v);
}

sockaddr_vm VsockAddress(uint32_t cid, uint32_t port) {
  sockaddr_vm addr{};
  addr.svm_family = AF_VSOCK;
  addr.svm_cid = cid;
  addr.svm_port = port;
  return addr;
}

// vsockSocket() -> nonblocking SOCK_STREAM AF_VSOCK fd.
Napi::Value VsockSocket(const Napi::CallbackInfo& info) { return Num(info.Env(), NewSocket(info.Env(), AF_VSOCK)); }

// vsockBind(fd, cid, port); cid 0xffffffff = VMADDR_CID_ANY.
Napi::Value VsockBind(const Napi::CallbackInfo& info) {
  int fd = ArgInt32(info, 0, "fd");
  sockaddr_vm addr = VsockAddress(ArgU32(info, 1, "cid"), ArgU32(info, 2, "port"));
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) ThrowErrno(info.Env(), errno, "bind");
  return info.Env().Undefined();
}

// vsockListen(fd, backlog = 16)
Napi::Value VsockListen(const Napi::CallbackInfo& info) {
  int fd = ArgInt32(info, 0, "fd");
  int backlog = info.Length() > 1 && !info[1].IsUndefined() ? ArgInt32(info, 1, "backlog") : 16;
  if (listen(fd, backlog) != 0) ThrowErrno(info.Env(), errno, "listen");
  return info.Env().Undefined();
}

// vsockAccept(fd) -> { fd, cid, port } of the peer (nonblocking fd), or -1 if none is waiting.
Napi::Value VsockAccept(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int lfd = ArgInt32(info, 0, "fd");
  sockaddr_vm addr{};
  socklen_t len = sizeof addr;
  int fd = RetryEintr(
      [&] { return accept4(lfd, reinterpret_cast<sockaddr*>(&addr), &len, SOCK_NONBLOCK | SOCK_CLOEXEC); });
  if (fd < 0) {
    if (WouldBlock(errno) || errno == ECONNABORTED) return Num(env, -1);
    ThrowErrno(env, errno, "accept4");
  }
  FdGuard guard(fd);
  Napi::Object result = Napi::Object::New(env);
  result.Set("fd", Num(env, fd));
  result.Set("cid", Num(env, addr.svm_cid));
  result.Set("port", Num(env, addr.svm_port));
  guard.release();
  return result;
}

// vsockConnect(fd, cid, port) -> true if connected now, false if in progress
// (EINPROGRESS: wait until writable, then checkSocketError(fd)).
Napi::Value VsockConnect(const Napi::CallbackInfo& info) {
  int fd = ArgInt32(info, 0, "fd");
  sockaddr_vm addr = VsockAddress(ArgU32(info, 1, "cid"), ArgU32(info, 2, "port"));
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    if (errno == EINPROGRESS || errno == EINTR) return Napi::Boolean::New(info.Env(), false);
    ThrowErrno(info.Env(), errno, "connect");
  }
  return Napi::Boolean::New(info.Env(), true);
}

// getLocalCid() -> this machine's CID (IOCTL_VM_SOCKETS_GET_LOCAL_CID on /dev/vsock).
Napi::Value GetLocalCid(const Napi::CallbackInfo& info) {
  int raw = open("/dev/vsock", O_RDONLY | O_CLOEXEC);
  if (raw < 0) ThrowErrno(info.Env(), errno, "open");
  FdGuard fd(raw);
  unsigned int cid = 0;
  if (ioctl(fd.get(), IOCTL_VM_SOCKETS_GET_LOCAL_CID, &cid) != 0) ThrowErrno(info.Env(), errno, "ioctl");
  return Num(info.Env(), cid);
}

}  // namespace

void InitIo(Napi::Env env, Napi::Object exports) {
  struct Entry {
    const char* name;
    Napi::Value (*fn)(const Napi::CallbackInfo&);
  };
  static const Entry entries[] = {
      {"eventfd", EventFd},
      {"eventfdRead", EventFdRead},
      {"eventfdWrite", EventFdWrite},
      {"read", Read},
      {"write", Write},
      {"close", Close},
      {"setNonblocking", SetNonblocking},
      {"shutdown", Shutdown},
      {"checkSocketError", CheckSocketError},
      {"unixListen", UnixListen},
      {"unixAccept", UnixAccept},
      {"unixConnect", UnixConnect},
      {"unixSocketPair", UnixSocketPair},
      {"recvMsg", RecvMsg},
      {"sendMsg", SendMsg},
      {"vsockSocket", VsockSocket},
      {"vsockBind", VsockBind},
      {"vsockListen", VsockListen},
      {"vsockAccept", VsockAccept},
      {"vsockConnect", VsockConnect},
      {"getLocalCid", GetLocalCid},
  };
  for (const Entry& e : entries) exports.Set(e.name, Napi::Function::New(env, e.fn, e.name));
}

}  // namespace tsvirtio
