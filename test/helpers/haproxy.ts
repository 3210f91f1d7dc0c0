/**
 * A real haproxy (Debian's 2.6) in front of gateway replicas: round-robin, no stickiness, an
 * active health check on /ready, X-Forwarded-For. The config is the recipe docs/operations.md
 * shows ("Behind a load balancer"); haproxyConfig() is that text with the ports filled in.
 *
 * Run as `haproxy -db -f <cfg>` (foreground) on a free port, with an admin socket in its temp dir
 * for serverStates(); stopped by pid.
 */
import { createConnection } from 'node:net';
import { join } from 'node:path';
import { existsSync, writeFileSync } from 'node:fs';
import { freePort } from './everything.js';
import { waitFor } from './gateway.js';
import { balancerDir, runBalancer, type Backend, type LoadBalancer } from './load-balancer.js';

export interface HaproxyOptions {
  /**
   * The address haproxy connects to the gateways from (`source`): a loopback address other than
   * the clients' 127.0.0.1, so that a gateway can tell the proxy from the client. Default 127.0.0.2.
   */
  source?: string;
  /** Health check interval in ms (default 200). */
  checkIntervalMs?: number;
}

export interface Haproxy extends LoadBalancer {
  /** Each server's state as haproxy sees it (`g0` → "UP", "DOWN", "UP 1/2", ...), from its admin socket. */
  serverStates(): Promise<Record<string, string>>;
}

/**
 * The haproxy config for these gateways, listening on `bind` (`127.0.0.1:<port>` in the tests,
 * `:80` in docs/operations.md, which shows this very text: test/replicas/recipes.test.ts).
 */
export function haproxyConfig(backends: readonly Backend[], bind: string, options: HaproxyOptions & { adminSocket?: string } = {}): string {
  const inter = options.checkIntervalMs ?? 200;
  return [
    'global',
    '    maxconn 4096',
    ...(options.adminSocket ? [`    stats socket ${options.adminSocket} mode 600 level admin`] : []),
    '',
    'defaults',
    '    mode http',
    '    timeout connect 2s',
    '    timeout client 1h          # SSE streams and long tool calls',
    '    timeout server 1h',
    '    timeout tunnel 1h',
    '    timeout http-request 10s',
    '    timeout http-keep-alive 10s',
    '    timeout check 2s',
    '',
    'frontend mcp',
    `    bind ${bind}`,
    '    default_backend mcp_guard',
    '',
    'backend mcp_guard',
    '    balance roundrobin         # no stickiness',
    '    option forwardfor          # X-Forwarded-For: [server] trusted_proxies',
    '    option httpchk GET /ready',
    '    http-check expect status 200',
    '    option redispatch          # a retry goes to another gateway',
    '    retries 3                  # connection failures only (nothing was sent): safe for POST',
    '    http-reuse safe',
    `    default-server check inter ${inter}ms fall 2 rise 2${options.source ? ` source ${options.source}` : ''}`,
    ...backends.map((b, i) => `    server g${i} ${b.host}:${b.port}`),
    '',
  ].join('\n');
}

/** Parses `show stat` CSV into server name → status. */
function statesOf(csv: string): Record<string, string> {
  const lines = csv.split('\n').filter(Boolean);
  const header = lines[0]?.replace(/^# /, '').split(',') ?? [];
  const px = header.indexOf('pxname');
  const sv = header.indexOf('svname');
  const status = header.indexOf('status');
  const states: Record<string, string> = {};
  for (const line of lines.slice(1)) {
    const cells = line.split(',');
    if (cells[px] === 'mcp_guard' && cells[sv] !== 'BACKEND' && cells[sv] !== undefined) states[cells[sv]] = cells[status] ?? '';
  }
  return states;
}

function adminCommand(socket: string, command: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let out = '';
    const client = createConnection(socket, () => client.end(`${command}\n`));
    client.on('data', (c: Buffer) => (out += c.toString('utf8')));
    client.once('end', () => resolve(out));
    client.once('error', reject);
  });
}

/** haproxy on a free port in front of `backends`; resolves once it accepts connections. */
export async function startHaproxy(backends: readonly Backend[], options: HaproxyOptions = {}): Promise<Haproxy> {
  const dir = balancerDir('haproxy');
  const port = await freePort();
  const adminSocket = join(dir, 'admin.sock');
  const config = haproxyConfig(backends, `127.0.0.1:${port}`, { source: '127.0.0.2', ...options, adminSocket });
  const file = join(dir, 'haproxy.cfg');
  writeFileSync(file, config);
  const lb = await runBalancer('haproxy', 'haproxy', ['-db', '-f', file], { port, dir, config });
  // The frontend may accept before the admin socket is bound (CI once asked it too early: ENOENT).
  try {
    await waitFor(() => existsSync(adminSocket), 15_000, `haproxy's admin socket ${adminSocket}`);
  } catch (error) {
    await lb.stop();
    throw error;
  }
  return Object.assign(lb, {
    async serverStates() {
      return statesOf(await adminCommand(adminSocket, 'show stat'));
    },
  });
}
