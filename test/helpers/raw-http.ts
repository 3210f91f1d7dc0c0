/**
 * HTTP/1.1 over a plain socket, for requests no client library would send as written: paths
 * with dot segments or odd escapes (fetch and undici normalise them), malformed Host headers,
 * bare line feeds inside header values. The response is read until the server closes.
 */
import { connect } from 'node:net';

export interface RawResponse {
  status: number;
  /** Header names in lowercase, each with every value it was sent with. */
  headers: Record<string, string[]>;
  /** The status line and header lines exactly as received. */
  head: string;
  body: string;
  json: any;
}

/**
 * Sends `request` (request line and header lines, each ending in CRLF, without the blank line;
 * `Connection: close` is added) and then `body`, to the gateway at `base`.
 */
export function rawHttp(base: string, request: string, body = ''): Promise<RawResponse> {
  const { hostname, port } = new URL(base);
  return new Promise((resolve, reject) => {
    const socket = connect({ host: hostname, port: Number(port) });
    const chunks: Buffer[] = [];
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('error', reject);
    socket.on('close', () => {
      const text = Buffer.concat(chunks).toString('latin1');
      const end = text.indexOf('\r\n\r\n');
      const head = end === -1 ? text : text.slice(0, end);
      let rest = end === -1 ? '' : text.slice(end + 4);
      const [statusLine = '', ...lines] = head.split('\r\n');
      const headers: Record<string, string[]> = {};
      for (const line of lines) {
        const colon = line.indexOf(':');
        const name = line.slice(0, colon).trim().toLowerCase();
        (headers[name] ??= []).push(line.slice(colon + 1).trim());
      }
      if (headers['transfer-encoding']?.includes('chunked')) rest = dechunk(rest);
      let json: any;
      try {
        json = JSON.parse(rest);
      } catch {
        json = undefined;
      }
      resolve({ status: Number(statusLine.split(' ')[1] ?? 0), headers, head, body: rest, json });
    });
    // write, not end: a half-closed connection reads as a client that went away, and the
    // gateway would abandon the request. The server closes it after its answer.
    socket.write(`${request}Connection: close\r\n${body ? `Content-Length: ${Buffer.byteLength(body)}\r\n` : ''}\r\n${body}`);
  });
}

function dechunk(text: string): string {
  let out = '';
  let at = 0;
  for (;;) {
    const lineEnd = text.indexOf('\r\n', at);
    if (lineEnd === -1) return out;
    const size = Number.parseInt(text.slice(at, lineEnd), 16);
    if (!size) return out;
    out += text.slice(lineEnd + 2, lineEnd + 2 + size);
    at = lineEnd + 2 + size + 2;
  }
}
