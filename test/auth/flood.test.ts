/**
 * Issue 16, finding 9: a flood of wrong keys against a gateway whose `[[auth.api_keys]]` have no
 * key_prefix (the seed guide's style, hashes made with `mcp-guard hash-key`). A real gateway, real
 * argon2 at the parameters `hash-key` writes, real HTTP clients.
 *
 * What a user depends on: every refused request is answered (401, or 429/503 with Retry-After)
 * instead of waiting behind a queue of argon2 work; a key already proved is served during the
 * flood; once the flood stops, the argon2 work left is bounded by the hashing capacity and ends.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import { createInterface } from 'node:readline';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { hashApiKey } from '../../src/auth/key-format.js';
import { curlPost, everythingStdio, q, startGateway, waitFor, type RunningGateway } from '../helpers/gateway.js';

/** The very module object the gateway loads argon2 through (src/optional.ts requires it too). */
const argon2 = createRequire(import.meta.url)('argon2') as typeof import('argon2');

/** Counts argon2 verifications: started in all, running now, and started since `mark()`. */
function watchArgon2() {
  const original = argon2.verify.bind(argon2);
  const counts = { started: 0, running: 0, sinceMark: 0 };
  const spy = vi.spyOn(argon2, 'verify').mockImplementation(async (...args: Parameters<typeof argon2.verify>) => {
    counts.started++;
    counts.sinceMark++;
    counts.running++;
    try {
      return await original(...args);
    } finally {
      counts.running--;
    }
  });
  return {
    counts,
    mark: () => (counts.sinceMark = 0),
    restore: () => spy.mockRestore(),
  };
}

const TOOLS_LIST = { jsonrpc: '2.0', id: 1, method: 'tools/list' };
const bearer = (token: string) => ({ authorization: `Bearer ${token}` });
/** A hand-made key, the kind `hash-key` is for (not shaped like a generated one: no prefix to find it by). */
const handMade = (): string => `team-key-${randomBytes(24).toString('base64url')}`;

const CLIENTS = 8;
const PER_CLIENT = 8;

interface Answer {
  status: number;
  retryAfter: string | null;
  ms: number;
}

/**
 * The flood: CLIENTS concurrent clients, each sending random keys one after another until it has
 * sent PER_CLIENT or is told to stop, in a process of its own (a flood comes from elsewhere: run
 * in the test's process, its clients would take the event loop from the gateway they measure).
 * Each answer comes back as a JSON line.
 */
const FLOOD_CLIENT = `
  import { randomBytes } from 'node:crypto';
  const [url, clients, perClient] = process.argv.slice(1);
  let stop = false;
  process.stdin.on('data', () => (stop = true));
  const body = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' });
  await Promise.all(Array.from({ length: Number(clients) }, async () => {
    for (let i = 0; i < Number(perClient) && !stop; i++) {
      const started = performance.now();
      const authorization = 'Bearer team-key-' + randomBytes(24).toString('base64url');
      const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', authorization }, body });
      await res.arrayBuffer();
      process.stdout.write(JSON.stringify({ status: res.status, retryAfter: res.headers.get('retry-after'), ms: performance.now() - started }) + '\\n');
    }
  }));
  process.exit(0);
`;

interface Flood {
  answers: Answer[];
  /** Tells the clients to send nothing more; their requests in flight still finish. */
  stop(): void;
  /** Resolves when every client has had its last answer. */
  done: Promise<void>;
}

function startFlood(url: string): Flood {
  const child = spawn(process.execPath, ['--input-type=module', '-e', FLOOD_CLIENT, `${url}/everything`, String(CLIENTS), String(PER_CLIENT)], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const answers: Answer[] = [];
  createInterface({ input: child.stdout }).on('line', (line) => answers.push(JSON.parse(line) as Answer));
  const done = new Promise<void>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`the flood client exited with ${code}`))));
  });
  return { answers, stop: () => child.stdin.end('stop\n'), done };
}

function expectEveryRefusalAnswered(answers: Answer[]): void {
  for (const answer of answers) {
    if (answer.status === 401) continue;
    expect([429, 503]).toContain(answer.status);
    expect(Number(answer.retryAfter)).toBeGreaterThanOrEqual(1);
  }
}

function summary(answers: Answer[]): string {
  const ms = answers.map((a) => a.ms).sort((a, b) => a - b);
  const byStatus = new Map<number, number>();
  for (const a of answers) byStatus.set(a.status, (byStatus.get(a.status) ?? 0) + 1);
  const pick = (p: number) => Math.round(ms[Math.min(ms.length - 1, Math.floor(p * ms.length))] ?? 0);
  return `${answers.length} refusals (${[...byStatus].map(([s, n]) => `${n}x${s}`).join(', ')}), median ${pick(0.5)} ms, p90 ${pick(0.9)} ms, max ${pick(1)} ms`;
}

describe('finding 9: a flood of wrong keys against keys without key_prefix', () => {
  const keys = Array.from({ length: 4 }, handMade);
  let gw: RunningGateway;
  let watch: ReturnType<typeof watchArgon2>;

  beforeAll(async () => {
    const hashes = await Promise.all(keys.map((key) => hashApiKey(key)));
    const entries = hashes.map((hash, i) => `[[auth.api_keys]]\nid = "team-${i}"\nkey_hash = ${q(hash)}\n`).join('\n');
    // No failure limit to speak of: this is about the hashing capacity, not the per-address budget.
    gw = await startGateway(`${everythingStdio()}\n[auth]\nmax_failures_per_minute = 1000000\n\n${entries}`);
  }, 60_000);

  afterAll(async () => {
    await gw?.stop();
  });

  afterEach(() => watch?.restore());

  it('every refusal is answered at once or within the bounded work, a proved key is served during it, and the work ends with the flood', async () => {
    // The valid key is proved once, before the flood (a client that was already working).
    const first = await curlPost(`${gw.url}/everything`, TOOLS_LIST, bearer(keys[0]!));
    expect(first.status).toBe(200);

    watch = watchArgon2();
    const flood = startFlood(gw.url);
    // The valid key, asked while the flood is under way (once it has answers, so the hashing capacity is taken).
    await waitFor(() => flood.answers.length >= CLIENTS, 60_000, 'the flood under way');
    const validMs: number[] = [];
    for (let i = 0; i < 5; i++) {
      const started = performance.now();
      const valid = await curlPost(`${gw.url}/everything`, TOOLS_LIST, bearer(keys[0]!));
      validMs.push(performance.now() - started);
      expect(valid.status).toBe(200);
      expect(valid.json.result.tools.length).toBeGreaterThan(0);
    }

    // The flood stops: what is still in flight is at most the hashing capacity's worth of argon2.
    flood.stop();
    watch.mark();
    const stoppedAt = performance.now();
    await flood.done;
    const tailMs = performance.now() - stoppedAt;
    // Nothing is left hashing once the flood's requests are answered.
    const stats = () => gw.app.authenticator?.stats;
    await waitFor(() => (stats()?.hashesInFlight ?? 0) === 0 && watch.counts.running === 0, 60_000, 'no argon2 work left');
    validMs.sort((x, y) => x - y);
    console.log(
      `finding 9, one key proved: ${summary(flood.answers)}; valid key during the flood: median ${Math.round(validMs[2]!)} ms, max ${Math.round(validMs[4]!)} ms; ` +
        `last refusal ${Math.round(tailMs)} ms after the flood stopped, ${watch.counts.sinceMark} argon2 verifications started after it; ` +
        `${watch.counts.started} in all, at most ${stats()?.maxInFlight} admitted at once (capacity ${stats()?.hashCapacity})`,
    );
    const { maxInFlight, hashCapacity } = stats()!;
    // The work the flood could queue was the hashing capacity (by default 4 verifications per 4
    // cores): 8 clients with 3 unproved keys each would otherwise queue 24.
    expect(maxInFlight).toBeGreaterThan(0);
    expect(maxInFlight).toBeLessThanOrEqual(hashCapacity);
    expect(hashCapacity).toBeLessThan(CLIENTS * (keys.length - 1));
    expect(flood.answers.some((a) => a.status === 503)).toBe(true);
    expectEveryRefusalAnswered(flood.answers);
  }, 300_000);

  it('once every configured key has been proved, an unknown key costs no argon2 at all', async () => {
    for (const key of keys) expect((await curlPost(`${gw.url}/everything`, TOOLS_LIST, bearer(key))).status).toBe(200);
    watch = watchArgon2();
    const flood = startFlood(gw.url);
    await flood.done;
    console.log(`finding 9, every key proved: ${summary(flood.answers)}; ${watch.counts.started} argon2 verifications`);
    expect(flood.answers.map((a) => a.status)).toEqual(Array(CLIENTS * PER_CLIENT).fill(401));
    expect(watch.counts.started).toBe(0);
    // The same wrong key again: still refused (it is not one of the keys), still for free.
    const wrong = handMade();
    for (let i = 0; i < 3; i++) expect((await curlPost(`${gw.url}/everything`, TOOLS_LIST, bearer(wrong))).status).toBe(401);
    expect(watch.counts.started).toBe(0);
  }, 300_000);
});
