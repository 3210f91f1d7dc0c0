/**
 * Many MCP sessions held open through a gateway, each with its standalone GET stream, as a real
 * client keeps them: POST initialize, POST notifications/initialized, then GET (text/event-stream)
 * left open. Opened with bounded concurrency; every step is checked, so a count of open sessions
 * is a count of sessions that really opened. Uses its own undici Agent (one connection per open
 * stream, plus a few for the POSTs), so closing it ends every connection of these sessions.
 */
import { Agent, request } from 'undici';

const PROTOCOL_VERSION = '2025-06-18';
const STEP_TIMEOUT_MS = 15_000;

/** Runs `task(i)` for i in [0, count) with at most `concurrency` at once; collects errors. */
async function pool(count, concurrency, task) {
  const errors = [];
  let next = 0;
  const worker = async () => {
    while (next < count) {
      const i = next++;
      try {
        await task(i);
      } catch (err) {
        errors.push(err);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
  return errors;
}

export class SessionSet {
  /** @param {string} endpoint the MCP endpoint, e.g. http://127.0.0.1:PORT/mcp/stdio */
  constructor(endpoint) {
    this.endpoint = endpoint;
    this.agent = new Agent({ keepAliveTimeout: 60_000, headersTimeout: STEP_TIMEOUT_MS, bodyTimeout: 0 });
    /** @type {{ id: string, controller: AbortController, open: boolean }[]} */
    this.sessions = [];
    /** GET streams that ended while they should have stayed open. */
    this.endedEarly = 0;
  }

  /** Streams still open, as the client sees them. */
  get openStreams() {
    return this.sessions.filter((s) => s.open).length;
  }

  /** Opens `count` more sessions, `concurrency` at a time. Returns the errors (empty when all opened). */
  async open(count, concurrency = 50) {
    const start = this.sessions.length;
    return pool(count, concurrency, (i) => this.openOne(start + i));
  }

  async openOne(n) {
    const signal = AbortSignal.timeout(STEP_TIMEOUT_MS);
    const post = (body, headers = {}) =>
      request(this.endpoint, {
        dispatcher: this.agent,
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...headers },
        body: JSON.stringify(body),
        signal,
      });
    const init = await post({
      jsonrpc: '2.0',
      id: 1,
      method: 'initialize',
      params: { protocolVersion: PROTOCOL_VERSION, capabilities: {}, clientInfo: { name: `bench-${n}`, version: '1.0.0' } },
    });
    const initText = await init.body.text();
    const id = init.headers['mcp-session-id'];
    if (init.statusCode !== 200 || typeof id !== 'string')
      throw new Error(`initialize answered ${init.statusCode} without a session id: ${initText.slice(0, 200)}`);
    if (!initText.includes('"result"')) throw new Error(`initialize failed: ${initText.slice(0, 200)}`);
    const sessionHeaders = { 'mcp-session-id': id, 'mcp-protocol-version': PROTOCOL_VERSION };
    const initialized = await post({ jsonrpc: '2.0', method: 'notifications/initialized' }, sessionHeaders);
    await initialized.body.dump();
    if (initialized.statusCode !== 202) throw new Error(`notifications/initialized answered ${initialized.statusCode}`);

    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(new Error('GET stream headers timed out')), STEP_TIMEOUT_MS);
    let stream;
    try {
      stream = await request(this.endpoint, {
        dispatcher: this.agent,
        method: 'GET',
        headers: { ...sessionHeaders, accept: 'text/event-stream' },
        signal: controller.signal,
      });
    } finally {
      clearTimeout(timer);
    }
    const type = String(stream.headers['content-type'] ?? '');
    if (stream.statusCode !== 200 || !type.startsWith('text/event-stream')) {
      await stream.body.dump().catch(() => undefined);
      throw new Error(`GET stream answered ${stream.statusCode} (${type})`);
    }
    const session = { id, controller, open: true, closing: false };
    const ended = () => {
      if (session.open && !session.closing) this.endedEarly++;
      session.open = false;
    };
    // Read (and drop) whatever comes, keep-alive comments included, so nothing backs up.
    stream.body.on('data', () => undefined);
    stream.body.on('end', ended);
    stream.body.on('error', ended);
    stream.body.on('close', ended);
    this.sessions.push(session);
  }

  /**
   * Ends every session: DELETE (the gateway then ends the GET stream itself), then aborts any
   * stream still open and closes the agent's connections. Returns how many DELETEs failed.
   */
  async close(concurrency = 50) {
    for (const s of this.sessions) s.closing = true;
    const errors = await pool(this.sessions.length, concurrency, async (i) => {
      const s = this.sessions[i];
      const res = await request(this.endpoint, {
        dispatcher: this.agent,
        method: 'DELETE',
        headers: { 'mcp-session-id': s.id, 'mcp-protocol-version': PROTOCOL_VERSION },
        signal: AbortSignal.timeout(STEP_TIMEOUT_MS),
      });
      await res.body.dump();
      if (res.statusCode !== 200) throw new Error(`DELETE answered ${res.statusCode}`);
    });
    for (const s of this.sessions) if (s.open) s.controller.abort();
    await this.agent.destroy().catch(() => undefined);
    return errors;
  }
}
