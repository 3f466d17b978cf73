/**
 * `lathe … | head` closes the pipe before lathe is done writing. Writing on then fails with EPIPE,
 * which Node raises as an 'error' event on process.stdout and, with no listener, as an uncaught
 * exception with a stack trace. The reader has all it wanted: exit 0 at once, as `seq 1e9 | head`
 * ends without a word. Other errors on the streams are still thrown.
 */
export function exitQuietlyOnClosedPipe(): void {
  for (const stream of [process.stdout, process.stderr]) {
    stream.on("error", (err: NodeJS.ErrnoException) => {
      if (err.code === "EPIPE") process.exit(0);
      throw err;
    });
  }
}
