// What a fuzz target is: a function of bytes that drives the real code and checks its
// invariants. A thrown InvariantError is an invariant failure; any other exception a crash.

export interface FuzzTarget {
  /** The name on the command line (`npm run fuzz -- NAME`) and of its corpus folder. */
  readonly name: string;
  /** One line: which door of the system the bytes come through. */
  readonly description: string;
  /** Source files (repository paths, .ts) whose coverage the report gives. */
  readonly focus: readonly string[];
  /** Inputs are cut to this many bytes by the mutator. */
  readonly maxInputBytes: number;
  /** One input running longer than this counts as a hang (default 10 s). */
  readonly hangSeconds?: number;
  /** Tokens the mutator inserts (keywords, magic numbers). */
  readonly dictionary?: readonly Uint8Array[];
  /** Hand-made inputs the campaign and the corpus replay always start from. */
  seeds(): Uint8Array[];
  /** Called once per process before the first input (servers, temporary folders). */
  setup?(): Promise<void> | void;
  /** Runs one input. Throws InvariantError when an invariant does not hold. */
  run(input: Uint8Array): Promise<void> | void;
  /** Called once at the end (closes what setup opened). */
  teardown?(): Promise<void> | void;
}

/** An invariant of the code under test did not hold for an input. */
export class InvariantError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'InvariantError';
  }
}

/** Throws InvariantError(message()) unless cond. */
export function check(cond: boolean, message: () => string): asserts cond {
  if (!cond) throw new InvariantError(message());
}

/** The bytes of a string (dictionary entries, seeds). */
export function utf8(s: string): Uint8Array {
  return new Uint8Array(Buffer.from(s, 'utf8'));
}
