// Whether a process is still there (signal 0: no signal sent, only the check), for tests
// that stop what they started by pid and check it is gone.
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
