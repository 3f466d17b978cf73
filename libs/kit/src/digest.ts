/**
 * Digests travel in the API as `sha256:<64 lowercase hex digits>`; the artifact store and the
 * folder manifests key by the bare hex. These two turn one into the other.
 */
const prefix = "sha256:";

/** The hex of a `sha256:<hex>` digest; a bare hex digest is returned as it is. */
export function digestHex(digest: string): string {
  return digest.startsWith(prefix) ? digest.slice(prefix.length) : digest;
}

/** The API form `sha256:<hex>` of a hex digest; one that already has the prefix is returned as it is. */
export function prefixedDigest(hex: string): string {
  return hex.startsWith(prefix) ? hex : `${prefix}${hex}`;
}

/** The URI of a stored artifact, as the registry reads it: `artifact:sha256:<hex>`. */
export function artifactUri(digest: string): string {
  return `artifact:${prefixedDigest(digest)}`;
}
