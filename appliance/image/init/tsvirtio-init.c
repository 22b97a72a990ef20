/*
 * /init of the microvm node guest (appliance/image/guest-init.ts builds it; node-guest.ts
 * puts it in the image). It does what the busybox init script did, without a shell: under
 * TCG, starting busybox's shell and forking it for every mount cost 70-280 ms of the boot.
 *
 *   1. mounts /proc, /sys, a tmpfs on /tmp, hugetlbfs (2 MiB pages) on /dev/hugepages and
 *      a tmpfs on /dev/shm (the kernel mounted devtmpfs on /dev: CONFIG_DEVTMPFS_MOUNT);
 *   2. prints the boot stage markers `tsvirtio-stage: init|exec <seconds>` (CLOCK_MONOTONIC,
 *      which starts with the kernel: the clock node's markers use);
 *   3. runs the program of /etc/tsvirtio-init.conf in /app, its arguments followed by the
 *      kernel parameters TSVIRTIO_ARG_0, TSVIRTIO_ARG_1, ... (appliance/image/guest.ts,
 *      initArgs), with PATH, HOME, TERM, the file's `env` lines and the rest of the
 *      kernel's environment;
 *   4. reaps every child; when the program ends, prints `tsvirtio-exit: <status>` (its exit
 *      code, or 128 + the signal that ended it, as a shell's $?), waits until the console
 *      has sent everything, and reboots, which ends QEMU (-no-reboot; reboot=t: at once).
 *
 * /etc/tsvirtio-init.conf, one directive per line (no quoting: an argument is the rest of
 * its line, so it may hold spaces but no newline):
 *   program /usr/bin/node
 *   arg --snapshot-blob
 *   env NODE_ICU_DATA=/usr/share/icu
 * A missing or bad file, a mount that fails or a program that cannot be started is
 * reported on the console as `tsvirtio-init: ...` (with the errno number); the guest
 * still ends with an exit line.
 *
 * Freestanding (x86-64 Linux system calls, no C library): a static glibc alone is 680 KB,
 * 350 KB of the compressed image; this is a few KB. Built with
 *   gcc -static -nostdlib -ffreestanding -fno-stack-protector -fno-builtin -Os
 */

typedef unsigned long size_t;
typedef long ssize_t;

#define CONFIG_PATH "/etc/tsvirtio-init.conf"
#define CONFIG_MAX 65536
#define MAX_ARGS 256
#define MAX_ENV 256
#define ARG_PREFIX "TSVIRTIO_ARG_"

/* x86-64 system call numbers and flags (arch/x86/entry/syscalls/syscall_64.tbl, uapi headers). */
enum {
  SYS_read = 0, SYS_write = 1, SYS_close = 3, SYS_ioctl = 16, SYS_fork = 57, SYS_execve = 59, SYS_exit = 60,
  SYS_wait4 = 61, SYS_chdir = 80, SYS_sync = 162, SYS_mount = 165, SYS_reboot = 169,
  SYS_clock_gettime = 228, SYS_openat = 257, SYS_mkdirat = 258,
};
#define AT_FDCWD (-100)
#define O_RDONLY 0
#define O_CLOEXEC 02000000
#define CLOCK_MONOTONIC 1
#define EINTR 4
#define TCSBRK 0x5409
#define LINUX_REBOOT_MAGIC1 0xfee1dead
#define LINUX_REBOOT_MAGIC2 672274793
#define LINUX_REBOOT_CMD_RESTART 0x01234567

static long syscall6(long n, long a, long b, long c, long d, long e, long f) {
  long ret;
  register long r10 __asm__("r10") = d;
  register long r8 __asm__("r8") = e;
  register long r9 __asm__("r9") = f;
  __asm__ volatile("syscall" : "=a"(ret) : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9) : "rcx", "r11", "memory");
  return ret;
}
#define SYS(n, a, b, c, d, e, f) syscall6((n), (long)(a), (long)(b), (long)(c), (long)(d), (long)(e), (long)(f))

/* The compiler may emit calls to these for copies and zeroing. */
void *memset(void *d, int c, size_t n) {
  unsigned char *p = d;
  while (n--) *p++ = (unsigned char)c;
  return d;
}
void *memcpy(void *d, const void *s, size_t n) {
  unsigned char *p = d;
  const unsigned char *q = s;
  while (n--) *p++ = *q++;
  return d;
}

static int starts(const char *s, const char *prefix) {
  while (*prefix)
    if (*s++ != *prefix++) return 0;
  return 1;
}
/* NAME=VALUE with a non-empty NAME. */
static int hasName(const char *s) {
  if (*s == '=' || *s == 0) return 0;
  while (*s && *s != '=') s++;
  return *s == '=';
}
static int same(const char *a, const char *b) {
  while (*a && *a == *b) a++, b++;
  return *a == *b;
}

/* Console output: pieces gathered into one line, written at once. */
static char out[1024];
static size_t outLen;
static void put(const char *s) {
  while (*s && outLen < sizeof out - 1) out[outLen++] = *s++;
}
static void putNum(long v) {
  char digits[24];
  int n = 0;
  unsigned long u = v < 0 ? (unsigned long)-v : (unsigned long)v;
  do digits[n++] = (char)('0' + u % 10), u /= 10;
  while (u);
  if (v < 0) put("-");
  while (n) {
    char c[2] = {digits[--n], 0};
    put(c);
  }
}
static void flush(void) {
  out[outLen++] = '\n';
  SYS(SYS_write, 1, out, outLen, 0, 0, 0);
  outLen = 0;
}
/* "tsvirtio-init: <what>: errno <e>" */
static void complain(const char *what, const char *detail, long err) {
  put("tsvirtio-init: ");
  put(what);
  if (detail) put(" "), put(detail);
  if (err) put(": errno "), putNum(err);
  flush();
}

static void stage(const char *name) {
  struct { long sec, nsec; } ts = {0, 0};
  SYS(SYS_clock_gettime, CLOCK_MONOTONIC, &ts, 0, 0, 0, 0);
  long ms = ts.nsec / 1000000;
  put("tsvirtio-stage: "), put(name), put(" "), putNum(ts.sec), put(".");
  put(ms < 100 ? (ms < 10 ? "00" : "0") : "");
  putNum(ms);
  flush();
}

static void mountOne(const char *source, const char *target, const char *type, const char *data) {
  SYS(SYS_mkdirat, AT_FDCWD, target, 0755, 0, 0, 0); /* exists in the image, or made on devtmpfs */
  long r = SYS(SYS_mount, source, target, type, 0, data, 0);
  if (r < 0) complain("mount failed:", target, -r);
}

static void finish(long status) {
  put("tsvirtio-exit: "), putNum(status), flush();
  /* tcdrain(): wait until the serial port has sent all the console output, the program's
   * and this line. The reboot does not wait for the tty's buffer, and QEMU sends what the
   * port transmits only as fast as the host reads it: a host that read late lost the end
   * of the output, exit line included. */
  SYS(SYS_ioctl, 1, TCSBRK, 1, 0, 0, 0);
  SYS(SYS_sync, 0, 0, 0, 0, 0, 0);
  SYS(SYS_reboot, LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2, LINUX_REBOOT_CMD_RESTART, 0, 0, 0);
  for (;;) SYS(SYS_exit, 0, 0, 0, 0, 0, 0); /* not reached: init may not exit */
}

static char config[CONFIG_MAX + 1];
static char *argv[MAX_ARGS + 1];
static char *envp[MAX_ENV + 1];

/* The value of ARG_PREFIX<i> in the kernel's environment, or 0. */
static char *initArg(char **environ, long i) {
  char name[32];
  size_t n = 0;
  for (const char *p = ARG_PREFIX; *p; p++) name[n++] = *p;
  char digits[24];
  int d = 0;
  do digits[d++] = (char)('0' + i % 10), i /= 10;
  while (i);
  while (d) name[n++] = digits[--d];
  name[n++] = '=';
  name[n] = 0;
  for (char **e = environ; *e; e++)
    if (starts(*e, name)) return *e + n;
  return 0;
}

static void run(char **environ) {
  mountOne("proc", "/proc", "proc", 0);
  stage("init");
  mountOne("sysfs", "/sys", "sysfs", 0);
  mountOne("tmpfs", "/tmp", "tmpfs", "mode=1777");
  mountOne("hugetlbfs", "/dev/hugepages", "hugetlbfs", "pagesize=2M");
  mountOne("tmpfs", "/dev/shm", "tmpfs", "mode=1777");

  long fd = SYS(SYS_openat, AT_FDCWD, CONFIG_PATH, O_RDONLY | O_CLOEXEC, 0, 0, 0);
  if (fd < 0) complain("cannot open", CONFIG_PATH, -fd), finish(127);
  long len = 0;
  for (;;) {
    long n = SYS(SYS_read, fd, config + len, CONFIG_MAX + 1 - len, 0, 0, 0);
    if (n == -EINTR) continue;
    if (n < 0) complain("cannot read", CONFIG_PATH, -n), finish(127);
    if (n == 0) break;
    len += n;
    if (len > CONFIG_MAX) complain("larger than 64 KiB:", CONFIG_PATH, 0), finish(127);
  }
  SYS(SYS_close, fd, 0, 0, 0, 0, 0);
  config[len] = 0;

  int argc = 1, envc = 0;
  char *program = 0;
  envp[envc++] = "PATH=/usr/bin:/usr/sbin:/bin:/sbin";
  envp[envc++] = "HOME=/root";
  envp[envc++] = "TERM=dumb";
  long lineNo = 0;
  for (char *line = config, *next; *line; line = next) {
    lineNo++;
    next = line;
    while (*next && *next != '\n') next++;
    if (*next) *next++ = 0;
    if (*line == 0 || *line == '#') continue;
    char *value = line;
    while (*value && *value != ' ') value++;
    if (*value) *value++ = 0;
    if (same(line, "program") && *value == '/') program = value;
    else if (same(line, "arg") && argc < MAX_ARGS) argv[argc++] = value;
    else if (same(line, "env") && envc < MAX_ENV && hasName(value)) envp[envc++] = value;
    else {
      put("tsvirtio-init: " CONFIG_PATH " line "), putNum(lineNo);
      put(": bad directive \""), put(line), put("\" (expected program /PATH, arg VALUE or env NAME=VALUE, at most 256 each)");
      flush();
      finish(127);
    }
  }
  if (!program) complain("names no program:", CONFIG_PATH, 0), finish(127);
  argv[0] = program;
  for (long i = 0;; i++) {
    char *a = initArg(environ, i);
    if (!a) break;
    if (argc >= MAX_ARGS) complain("too many program arguments (at most 256)", 0, 0), finish(127);
    argv[argc++] = a;
  }
  argv[argc] = 0;
  /* The kernel's environment (parameters it did not know), minus the arguments taken above. */
  for (char **e = environ; *e && envc < MAX_ENV; e++) {
    if (starts(*e, ARG_PREFIX) || starts(*e, "PATH=") || starts(*e, "HOME=") || starts(*e, "TERM=")) continue;
    envp[envc++] = *e;
  }
  envp[envc] = 0;

  long r = SYS(SYS_chdir, "/app", 0, 0, 0, 0, 0);
  if (r < 0) complain("cannot enter /app", 0, -r);
  stage("exec");
  long child = SYS(SYS_fork, 0, 0, 0, 0, 0, 0);
  if (child < 0) complain("fork failed", 0, -child), finish(127);
  if (child == 0) {
    r = SYS(SYS_execve, program, argv, envp, 0, 0, 0);
    complain("cannot run", program, -r);
    SYS(SYS_exit, 127, 0, 0, 0, 0, 0);
  }
  for (;;) {
    int status = 0;
    long pid = SYS(SYS_wait4, -1, &status, 0, 0, 0, 0);
    if (pid == -EINTR) continue;
    if (pid < 0) complain("wait4 failed", 0, -pid), finish(127);
    if (pid != child) continue; /* an orphan the program left: reaped */
    /* WIFEXITED: no signal bits; else 128 + the signal, as a shell reports it. */
    finish((status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f));
  }
}

/* The entry: the kernel starts init with argc, argv, then envp on the stack. */
__attribute__((used)) static void start(long *sp) {
  long argc = sp[0];
  char **environ = (char **)(sp + 1 + argc + 1);
  run(environ);
  finish(127);
}
__asm__(".text\n.global _start\n_start:\n xor %rbp, %rbp\n mov %rsp, %rdi\n and $-16, %rsp\n call start\n hlt\n");
