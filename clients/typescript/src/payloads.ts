// Payloads and results are bytes in the protos, JSON (UTF-8) by convention: these turn values
// into those bytes and back.
const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/** JSON bytes of a value (for JobSpec.payload or a handler's result). */
export function toJsonBytes(value: unknown): Uint8Array {
  const text = JSON.stringify(value);
  if (text === undefined) throw new TypeError("the value has no JSON form (undefined or a function)");
  return encoder.encode(text);
}

/** The value of JSON bytes; `undefined` for empty bytes (no payload, or no result). Throws a
 * SyntaxError (or TypeError for invalid UTF-8) for bytes that are not JSON. */
export function fromJsonBytes<T = unknown>(bytes: Uint8Array): T | undefined {
  if (bytes.length === 0) return undefined;
  return JSON.parse(decoder.decode(bytes)) as T;
}
