// Fd readiness from Node's event loop: a uv_poll_t per watcher.
//
//   const w = watchFd(fd, (err, events) => { ... }, events = READABLE);
//   w.pause(); w.resume(events?); w.unref(); w.ref(); w.stop();
//
// The callback runs on the thread of the environment that created the watcher, through
// napi_make_callback (so promise jobs and process.nextTick callbacks run after it and
// an exception in it becomes an 'uncaughtException'). `events` is a bit set of
// READABLE (1), WRITABLE (2), DISCONNECT (4). On a poll error the callback gets an
// Error (with code/errno/syscall) and the watcher pauses itself.
//
// Lifetime: the native state (Poll) is separate from the JS object (Watcher) because
// libuv closes handles asynchronously. While active, the watcher holds its callback
// and its JS object strongly, so a forgotten watcher keeps running (like a socket).
// stop() stops polling at once, releases the JS references and closes the handle; the
// Poll is freed by the close callback. A stopped watcher never keeps the process alive.
// When a Node environment (e.g. a worker thread) exits with watchers still active, an
// async cleanup hook closes their handles before its event loop is closed.
// Never close a watched fd before stopping its watcher (libuv's rule for uv_poll).
#include <uv.h>

#include "common.h"

namespace tsvirtio {
namespace {

class Watcher;

struct Poll {
  uv_poll_t handle;
  napi_env env;
  napi_ref callback = nullptr;
  napi_async_context async = nullptr;
  napi_async_cleanup_hook_handle hook = nullptr;
  Watcher* wrap = nullptr;  // cleared by whichever of Poll and Watcher goes first
  int events = UV_READABLE;
  bool active = false;      // uv_poll_start in effect
  bool closing = false;     // uv_close called
};

void ThrowUv(Napi::Env env, int uvErr, const char* syscall) { ThrowErrno(env, -uvErr, syscall); }

void OnClose(uv_handle_t* h) {
  Poll* p = static_cast<Poll*>(h->data);
  napi_remove_async_cleanup_hook(p->hook);  // also tells Node a teardown may proceed
  delete p;
}

class Watcher : public Napi::ObjectWrap<Watcher> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "FdWatcher",
                       {
                           InstanceMethod<&Watcher::Stop>("stop"),
                           InstanceMethod<&Watcher::Pause>("pause"),
                           InstanceMethod<&Watcher::Resume>("resume"),
                           InstanceMethod<&Watcher::Ref>("ref"),
                           InstanceMethod<&Watcher::Unref>("unref"),
                           InstanceAccessor<&Watcher::Active>("active"),
                       });
  }

  // new FdWatcher(fd, callback, events): called by watchFd() only.
  explicit Watcher(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Watcher>(info) {
    Napi::Env env = info.Env();
    int fd = ArgInt32(info, 0, "fd");
    if (info.Length() < 2 || !info[1].IsFunction()) ThrowType(env, "callback must be a function");
    int events = info.Length() > 2 && !info[2].IsUndefined() ? ArgInt32(info, 2, "events") : UV_READABLE;
    CheckEvents(env, events);
    uv_loop_t* loop = nullptr;
    NAPI_THROW_IF_FAILED_VOID(env, napi_get_uv_event_loop(env, &loop));

    Poll* p = new Poll();
    p->env = env;
    p->events = events;
    int r = uv_poll_init(loop, &p->handle, fd);
    if (r != 0) {
      delete p;  // not yet known to libuv
      ThrowUv(env, r, "uv_poll_init");
    }
    // From here on the handle exists and must be closed through uv_close.
    p->handle.data = p;
    napi_status s = napi_create_reference(env, info[1], 1, &p->callback);
    if (s == napi_ok) s = napi_async_init(env, info.This(), Napi::String::New(env, "tsvirtio:FdWatcher"), &p->async);
    if (s == napi_ok) s = napi_add_async_cleanup_hook(env, OnTeardown, p, &p->hook);
    if (s == napi_ok) {
      r = uv_poll_start(&p->handle, events, OnPoll);
      if (r != 0) {
        ReleaseJs(p);
        StartClose(p);
        ThrowUv(env, r, "uv_poll_start");
      }
    } else {
      ReleaseJs(p);
      StartClose(p);
      NAPI_THROW_IF_FAILED_VOID(env, s);
    }
    p->active = true;
    p->wrap = this;
    poll_ = p;
    ObjectWrap::Ref();  // keep this object alive while the watcher runs
  }

  ~Watcher() override {
    if (poll_ != nullptr) poll_->wrap = nullptr;
  }

 private:
  Poll* poll_ = nullptr;  // null once stopped

  static int CheckEvents(Napi::Env env, int events) {
    if (events == 0 || (events & ~(UV_READABLE | UV_WRITABLE | UV_DISCONNECT)) != 0) {
      ThrowRange(env, "events must be a non-empty combination of READABLE, WRITABLE, DISCONNECT");
    }
    return events;
  }

  // Frees the JS-side resources of a poll (callback reference, async context).
  static void ReleaseJs(Poll* p) {
    if (p->callback != nullptr) napi_delete_reference(p->env, p->callback);
    p->callback = nullptr;
    if (p->async != nullptr) napi_async_destroy(p->env, p->async);
    p->async = nullptr;
  }

  // Closes the handle; the Poll is freed in OnClose. If the cleanup hook was never
  // registered, OnClose's napi_remove_async_cleanup_hook(nullptr) is a harmless error.
  static void StartClose(Poll* p) {
    if (p->closing) return;
    p->closing = true;
    if (p->active) uv_poll_stop(&p->handle);
    p->active = false;
    uv_close(reinterpret_cast<uv_handle_t*>(&p->handle), OnClose);
  }

  // The environment is going away with this watcher still open.
  static void OnTeardown(napi_async_cleanup_hook_handle /*h*/, void* arg) {
    Poll* p = static_cast<Poll*>(arg);
    if (p->closing) return;  // OnClose will remove the hook
    if (p->wrap != nullptr) p->wrap->poll_ = nullptr;
    p->wrap = nullptr;
    ReleaseJs(p);
    StartClose(p);
  }

  static void OnPoll(uv_poll_t* h, int status, int events) {
    Poll* p = static_cast<Poll*>(h->data);
    if (p->closing || p->callback == nullptr) return;
    napi_env env = p->env;
    napi_handle_scope scope;
    if (napi_open_handle_scope(env, &scope) != napi_ok) return;
    napi_value argv[2];
    napi_value cb = nullptr;
    napi_value recv = nullptr;
    bool ok = napi_get_reference_value(env, p->callback, &cb) == napi_ok && cb != nullptr &&
              napi_get_global(env, &recv) == napi_ok;  // make_callback needs an object
    if (ok && status < 0) {
      // Pause, so a persistent error does not spin; the callback decides what next.
      uv_poll_stop(&p->handle);
      p->active = false;
      try {
        Napi::Env e(env);
        const char* name = uv_err_name(status);
        std::string msg = std::string(name) + ": " + uv_strerror(status) + ", uv_poll";
        Napi::Error err = Napi::Error::New(e, msg);
        err.Set("code", Napi::String::New(e, name));
        err.Set("errno", Napi::Number::New(e, status));
        err.Set("syscall", Napi::String::New(e, "uv_poll"));
        argv[0] = err.Value();
      } catch (...) {
        ok = false;
      }
    } else if (ok) {
      ok = napi_get_null(env, &argv[0]) == napi_ok;
    }
    if (ok) ok = napi_create_int32(env, events, &argv[1]) == napi_ok;
    if (ok) {
      napi_value result;
      napi_status s = napi_make_callback(env, p->async, recv, cb, 2, argv, &result);
      if (s == napi_pending_exception) {
        napi_value exc;
        if (napi_get_and_clear_last_exception(env, &exc) == napi_ok) napi_fatal_exception(env, exc);
      }
    }
    // `p` may have been closed by the callback (stop()); it is freed only in OnClose.
    napi_close_handle_scope(env, scope);
  }

  Napi::Value Stop(const Napi::CallbackInfo& info) {
    Poll* p = poll_;
    if (p == nullptr) return info.Env().Undefined();  // idempotent
    poll_ = nullptr;
    p->wrap = nullptr;
    ReleaseJs(p);
    StartClose(p);
    ObjectWrap::Unref();
    return info.Env().Undefined();
  }

  Napi::Value Pause(const Napi::CallbackInfo& info) {
    if (poll_ != nullptr && poll_->active) {
      int r = uv_poll_stop(&poll_->handle);
      if (r != 0) ThrowUv(info.Env(), r, "uv_poll_stop");
      poll_->active = false;
    }
    return info.Env().Undefined();
  }

  // resume(events?): starts polling again, for `events` if given (else the last set).
  Napi::Value Resume(const Napi::CallbackInfo& info) {
    if (poll_ == nullptr) ThrowErrno(info.Env(), EBADF, "uv_poll_start");  // stopped for good
    int events = poll_->events;
    if (info.Length() > 0 && !info[0].IsUndefined()) events = CheckEvents(info.Env(), ArgInt32(info, 0, "events"));
    if (!poll_->active || events != poll_->events) {
      poll_->events = events;
      int r = uv_poll_start(&poll_->handle, events, OnPoll);
      if (r != 0) ThrowUv(info.Env(), r, "uv_poll_start");
      poll_->active = true;
    }
    return info.Env().Undefined();
  }

  Napi::Value Ref(const Napi::CallbackInfo& info) {
    if (poll_ != nullptr) uv_ref(reinterpret_cast<uv_handle_t*>(&poll_->handle));
    return info.This();
  }

  Napi::Value Unref(const Napi::CallbackInfo& info) {
    if (poll_ != nullptr) uv_unref(reinterpret_cast<uv_handle_t*>(&poll_->handle));
    return info.This();
  }

  Napi::Value Active(const Napi::CallbackInfo& info) {
    return Napi::Boolean::New(info.Env(), poll_ != nullptr && poll_->active);
  }
};

struct InstanceData {
  Napi::FunctionReference ctor;
};

// watchFd(fd, callback, events = READABLE) -> FdWatcher
Napi::Value WatchFd(const Napi::CallbackInfo& info) {
  InstanceData* data = info.Env().GetInstanceData<InstanceData>();
  std::vector<napi_value> args;
  for (size_t i = 0; i < info.Length() && i < 3; i++) args.push_back(info[i]);
  return data->ctor.New(args);
}

}  // namespace

void InitWatch(Napi::Env env, Napi::Object exports) {
  Napi::Function ctor = Watcher::Define(env);
  InstanceData* data = new InstanceData{Napi::Persistent(ctor)};
  env.SetInstanceData<InstanceData>(data);  // deleted by node-addon-api at env teardown
  exports.Set("FdWatcher", ctor);
  exports.Set("watchFd", Napi::Function::New(env, WatchFd, "watchFd"));
  exports.Set("READABLE", Napi::Number::New(env, UV_READABLE));
  exports.Set("WRITABLE", Napi::Number::New(env, UV_WRITABLE));
  exports.Set("DISCONNECT", Napi::Number::New(env, UV_DISCONNECT));
}

}  // namespace tsvirtio
