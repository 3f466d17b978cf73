/** The error `fn` throws or rejects with; a test that expected one fails when there is none. Test-only. */
export async function caught(fn: () => unknown): Promise<unknown> {
  try {
    await fn();
  } catch (err) {
    return err;
  }
  throw new Error("expected a failure");
}
