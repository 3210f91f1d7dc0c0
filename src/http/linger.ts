/**
 * Lingering close for an answer sent before the request's body was read (a 413 on the declared
 * Content-Length): the client is usually still sending when the answer goes out. Closed at that
 * moment, the connection is reset under it (the bytes still arriving meet a closed socket), and a
 * client such as fetch reports "fetch failed" (EPIPE, ECONNRESET) instead of the 413 it was sent.
 *
 * Instead the connection stays open while the rest of the body is read and thrown away, as
 * nginx's lingering close does: Node's HTTP server discards a request body nobody read once the
 * answer has gone (keep-alive), and then the connection serves the client's next request. The
 * cost is bounded: only a body of at most LINGER_MAX_BYTES is drained (a longer one is closed on
 * at once, as before), and for at most LINGER_MS after the answer (then the connection is closed).
 */
import type { FastifyReply, FastifyRequest } from 'fastify';

/** The most a client may still send after the early answer for the connection to stay open for it. */
export const LINGER_MAX_BYTES = 16 * 1024 * 1024;
/** How long the rest of the body may take after the early answer, in ms. */
export const LINGER_MS = 5_000;

/**
 * Called with an error answer about to be sent for `request`: when its body has not been read
 * (nor fully received), the connection lingers as described above instead of closing.
 */
export function lingerForBody(request: FastifyRequest, reply: FastifyReply): void {
  const raw = request.raw;
  // No connection to keep (an injected request's stand-in socket has no destroy()): nothing to do.
  if (raw.complete || !raw.socket || raw.socket.destroyed || typeof raw.socket.destroy !== 'function') return;
  const declared = Number(raw.headers['content-length']);
  // A chunked body has no declared length: the time bound alone applies to it.
  if (Number.isFinite(declared) && declared > LINGER_MAX_BYTES) return;
  // Fastify asks for `Connection: close` after a body error; kept alive instead, Node reads and
  // drops the rest of the body after the answer, and the client, done sending, reads the answer.
  reply.removeHeader('connection');
  const socket = raw.socket;
  const timer = setTimeout(() => {
    if (!raw.complete) socket.destroy();
  }, LINGER_MS);
  timer.unref();
  const done = (): void => clearTimeout(timer);
  raw.once('end', done);
  socket.once('close', done);
}
