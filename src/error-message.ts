/**
 * The message of anything thrown: an Error's own message, anything else as a string. For logs and
 * the errors the gateway words itself; never for a client's body (src/http/errors.ts decides that).
 */
export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
