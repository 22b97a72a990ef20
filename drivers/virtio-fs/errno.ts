// Linux errno numbers (asm-generic/errno-base.h, errno.h): FUSE replies carry them
// negated, whatever the host the device runs on. Names follow Node's error codes.

const ERRNO_BY_NAME: Record<string, number> = {
  EPERM: 1,
  ENOENT: 2,
  ESRCH: 3,
  EINTR: 4,
  EIO: 5,
  ENXIO: 6,
  E2BIG: 7,
  ENOEXEC: 8,
  EBADF: 9,
  ECHILD: 10,
  EAGAIN: 11,
  ENOMEM: 12,
  EACCES: 13,
  EFAULT: 14,
  ENOTBLK: 15,
  EBUSY: 16,
  EEXIST: 17,
  EXDEV: 18,
  ENODEV: 19,
  ENOTDIR: 20,
  EISDIR: 21,
  EINVAL: 22,
  ENFILE: 23,
  EMFILE: 24,
  ENOTTY: 25,
  ETXTBSY: 26,
  EFBIG: 27,
  ENOSPC: 28,
  ESPIPE: 29,
  EROFS: 30,
  EMLINK: 31,
  EPIPE: 32,
  EDOM: 33,
  ERANGE: 34,
  EDEADLK: 35,
  ENAMETOOLONG: 36,
  ENOLCK: 37,
  ENOSYS: 38,
  ENOTEMPTY: 39,
  ELOOP: 40,
  ENOMSG: 42,
  ENODATA: 61,
  EPROTO: 71,
  EOVERFLOW: 75,
  EBADFD: 77,
  EOPNOTSUPP: 95,
  ESTALE: 116,
  ECANCELED: 125,
};

const NAME_BY_ERRNO: Record<number, string> = {};
for (const [name, n] of Object.entries(ERRNO_BY_NAME)) NAME_BY_ERRNO[n] = name;
ERRNO_BY_NAME['ENOTSUP'] = 95; // the same number as EOPNOTSUPP on Linux

const DESCRIPTIONS: Record<string, string> = {
  ENOENT: 'no such file or directory',
  ENOTDIR: 'not a directory',
  EISDIR: 'illegal operation on a directory',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  EROFS: 'read-only file system',
  ENOSYS: 'function not implemented',
  EINVAL: 'invalid argument',
  EBADF: 'bad file descriptor',
  ELOOP: 'too many symbolic links encountered',
  ENAMETOOLONG: 'name too long',
  EIO: 'i/o error',
  EPROTO: 'protocol error',
  ENOTEMPTY: 'directory not empty',
  EEXIST: 'file already exists',
};

/** Linux errno for a Node error code ('ENOENT' -> 2); undefined when unknown. */
export function errnoOf(name: string): number | undefined {
  return ERRNO_BY_NAME[name];
}

/** Node-style code for a Linux errno (2 -> 'ENOENT'); 'E<n>' when unknown. */
export function errnoName(errno: number): string {
  return NAME_BY_ERRNO[errno] ?? `E${errno}`;
}

/** A short lower-case description, as libuv prints them ("no such file or directory"). */
export function errnoDescription(errno: number): string {
  const name = errnoName(errno);
  return DESCRIPTIONS[name] ?? `error ${name}`;
}
