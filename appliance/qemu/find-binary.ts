// Finding a program the way a shell does: a name is looked up in each folder of $PATH, a
// path (anything with a slash) is taken as it is; either must be executable.
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';

/** The executable file `binary` names (see above), or null when there is none. */
export function findOnPath(binary: string, path = process.env['PATH'] ?? '/usr/bin:/bin'): string | null {
  const candidates = binary.includes('/') ? [binary] : path.split(delimiter).map((d) => join(d, binary));
  for (const c of candidates) {
    try {
      accessSync(c, constants.X_OK);
      return c;
    } catch {
      /* next */
    }
  }
  return null;
}
