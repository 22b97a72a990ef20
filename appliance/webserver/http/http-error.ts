// A request the server refuses: the status to answer and a message for the client
// and the log.

export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    /** When true the connection cannot go on (framing is lost) and is closed. */
    readonly fatal: boolean,
  ) {
    super(message);
    this.name = 'HttpError';
  }
}
