// FUSE protocol constants (Linux include/uapi/linux/fuse.h), shared by the virtio-fs
// driver and the in-process device. Every structure is little-endian on virtio 1.x
// (virtio 1.2, 5.11.6: "the FUSE messages are in the guest's native endianness"; we
// only target little-endian guests and hosts).

/** The protocol version this code speaks (fuse.h FUSE_KERNEL_VERSION.MINOR). */
export const FUSE_KERNEL_VERSION = 7;
export const FUSE_KERNEL_MINOR_VERSION = 31;
/**
 * The oldest minor we accept from the other side: from 7.23 on fuse_init_out is at least
 * 24 bytes (FUSE_COMPAT_22_INIT_OUT_SIZE) and fuse_entry_out has its 7.9 size (128).
 */
export const FUSE_MIN_MINOR_VERSION = 23;

/** The node id of the root inode. */
export const FUSE_ROOT_ID = 1;

export const FuseOpcode = {
  LOOKUP: 1,
  FORGET: 2, // no reply
  GETATTR: 3,
  SETATTR: 4,
  READLINK: 5,
  SYMLINK: 6,
  MKNOD: 8,
  MKDIR: 9,
  UNLINK: 10,
  RMDIR: 11,
  RENAME: 12,
  LINK: 13,
  OPEN: 14,
  READ: 15,
  WRITE: 16,
  STATFS: 17,
  RELEASE: 18,
  FSYNC: 20,
  SETXATTR: 21,
  GETXATTR: 22,
  LISTXATTR: 23,
  REMOVEXATTR: 24,
  FLUSH: 25,
  INIT: 26,
  OPENDIR: 27,
  READDIR: 28,
  RELEASEDIR: 29,
  FSYNCDIR: 30,
  GETLK: 31,
  SETLK: 32,
  SETLKW: 33,
  ACCESS: 34,
  CREATE: 35,
  INTERRUPT: 36,
  BMAP: 37,
  DESTROY: 38,
  IOCTL: 39,
  POLL: 40,
  NOTIFY_REPLY: 41,
  BATCH_FORGET: 42, // no reply
  FALLOCATE: 43,
  READDIRPLUS: 44,
  RENAME2: 45,
  LSEEK: 46,
  COPY_FILE_RANGE: 47,
  SETUPMAPPING: 48,
  REMOVEMAPPING: 49,
  SYNCFS: 50,
  TMPFILE: 51,
} as const;

const OPCODE_NAMES: Record<number, string> = {};
for (const [name, op] of Object.entries(FuseOpcode)) OPCODE_NAMES[op] = name;

/** "LOOKUP", "READ"... or "opcode 99" for unknown ones. */
export function opcodeName(opcode: number): string {
  return OPCODE_NAMES[opcode] ?? `opcode ${opcode}`;
}

// Structure sizes in bytes.
export const FUSE_IN_HEADER_SIZE = 40; // len u32, opcode u32, unique u64, nodeid u64, uid, gid, pid u32, total_extlen u16, padding u16
export const FUSE_OUT_HEADER_SIZE = 16; // len u32, error i32, unique u64
export const FUSE_ATTR_SIZE = 88;
export const FUSE_ENTRY_OUT_SIZE = 40 + FUSE_ATTR_SIZE; // 128
export const FUSE_ATTR_OUT_SIZE = 16 + FUSE_ATTR_SIZE; // 104
export const FUSE_INIT_IN_SIZE = 16; // the pre-7.36 layout (flags2 and unused[] came with 7.36)
export const FUSE_INIT_OUT_SIZE = 64;
export const FUSE_COMPAT_22_INIT_OUT_SIZE = 24;
export const FUSE_FORGET_IN_SIZE = 8;
export const FUSE_BATCH_FORGET_IN_SIZE = 8;
export const FUSE_FORGET_ONE_SIZE = 16;
export const FUSE_GETATTR_IN_SIZE = 16;
export const FUSE_OPEN_IN_SIZE = 8;
export const FUSE_OPEN_OUT_SIZE = 16;
export const FUSE_READ_IN_SIZE = 40;
export const FUSE_RELEASE_IN_SIZE = 24;
export const FUSE_STATFS_OUT_SIZE = 80;
export const FUSE_DIRENT_HEADER_SIZE = 24; // FUSE_NAME_OFFSET: ino u64, off u64, namelen u32, type u32
export const FUSE_DIRENTPLUS_HEADER_SIZE = FUSE_ENTRY_OUT_SIZE + FUSE_DIRENT_HEADER_SIZE; // 152
export const FUSE_DIRENT_ALIGN = 8;

/** Longest name component and path the protocol carries (Linux NAME_MAX, PATH_MAX). */
export const FUSE_NAME_MAX = 255;
export const FUSE_PATH_MAX = 4096;

/** Default request size limit in pages when the device does not grant FUSE_MAX_PAGES. */
export const FUSE_DEFAULT_MAX_PAGES_PER_REQ = 32;
export const FUSE_PAGE_SIZE = 4096;

// INIT flags (fuse_init_in.flags / fuse_init_out.flags).
export const FUSE_ASYNC_READ = 1 << 0;
export const FUSE_BIG_WRITES = 1 << 5;
export const FUSE_DO_READDIRPLUS = 1 << 13;
export const FUSE_PARALLEL_DIROPS = 1 << 18;
export const FUSE_MAX_PAGES = 1 << 22;
export const FUSE_CACHE_SYMLINKS = 1 << 23;

// fuse_getattr_in.getattr_flags
export const FUSE_GETATTR_FH = 1 << 0;

// fuse_open_out.open_flags
export const FOPEN_DIRECT_IO = 1 << 0;
export const FOPEN_KEEP_CACHE = 1 << 1;

// Directory entry types (fuse_dirent.type = st_mode >> 12, as DT_* in dirent.h).
export const DT_UNKNOWN = 0;
export const DT_FIFO = 1;
export const DT_CHR = 2;
export const DT_DIR = 4;
export const DT_BLK = 6;
export const DT_REG = 8;
export const DT_LNK = 10;
export const DT_SOCK = 12;

// st_mode file type bits.
export const S_IFMT = 0o170000;
export const S_IFSOCK = 0o140000;
export const S_IFLNK = 0o120000;
export const S_IFREG = 0o100000;
export const S_IFBLK = 0o060000;
export const S_IFDIR = 0o040000;
export const S_IFCHR = 0o020000;
export const S_IFIFO = 0o010000;

/** O_* flags as Linux encodes them in fuse_open_in.flags. */
export const O_RDONLY = 0;
export const O_WRONLY = 1;
export const O_RDWR = 2;
export const O_ACCMODE = 3;
export const O_CREAT = 0o100;
export const O_TRUNC = 0o1000;
export const O_APPEND = 0o2000;
export const O_DIRECTORY = 0o200000;
export const O_NOFOLLOW = 0o400000;

/**
 * A reply's error must be 0 or a negated errno greater than -512: the Linux kernel
 * refuses anything else (fs/fuse/dev.c fuse_dev_do_write: "oh.error <= -512 || oh.error > 0").
 */
export const FUSE_MAX_ERRNO = 511;
