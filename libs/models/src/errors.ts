/**
 * A model folder holds a file that Lathe cannot use: missing, not JSON, or not in a shape it
 * understands. `file` is the path of that file, so the message a user sees names it.
 */
export class ModelFormatError extends Error {
  override readonly name = "ModelFormatError";
  readonly file: string;

  constructor(file: string, message: string, options?: { cause?: unknown }) {
    super(`${file}: ${message}`, options);
    this.file = file;
  }
}
