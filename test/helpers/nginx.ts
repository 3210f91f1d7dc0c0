/**
 * A real nginx (Debian's 1.22) in front of gateway replicas: round-robin, HTTP/1.1 with kept-alive
 * upstream connections, no buffering (SSE), X-Forwarded-For. The config is the recipe
 * docs/operations.md shows ("Behind a load balancer"); nginxConfig() is that text with the ports
 * and paths filled in.
 *
 * Run as `nginx -g 'daemon off;' -p <dir> -c <cfg> -e <log>` with its pid file, error log and
 * temp paths in its own temp dir, on a free port; stopped by the master's pid.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { freePort } from './everything.js';
import { balancerDir, runBalancer, type Backend, type LoadBalancer } from './load-balancer.js';

export interface NginxOptions {
  /** The address nginx connects to the gateways from (`proxy_bind`). Default 127.0.0.2. */
  source?: string;
}

/**
 * The nginx config for these gateways, listening on `listen` (`127.0.0.1:<port>` in the tests,
 * `80` in docs/operations.md, which shows this very text: test/replicas/recipes.test.ts). With
 * `dir`, its pid file, error log and temp paths go there (a test's own nginx).
 */
export function nginxConfig(backends: readonly Backend[], listen: string, options: NginxOptions & { dir?: string } = {}): string {
  const dir = options.dir;
  return [
    'worker_processes auto;',
    ...(dir ? [`pid ${join(dir, 'nginx.pid')};`, `error_log ${join(dir, 'error.log')} warn;`] : []),
    'events { worker_connections 1024; }',
    'http {',
    ...(dir ? ['    access_log off;', ...['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((kind) => `    ${kind}_temp_path ${join(dir, kind)};`)] : []),
    '    upstream mcp_guard {',
    ...backends.map((b) => `        server ${b.host}:${b.port} max_fails=1 fail_timeout=2s;`),
    '        keepalive 32;',
    '        keepalive_timeout 1s;                # below shutdown_delay_ms: no idle connection outlives the delay',
    '    }',
    '    server {',
    `        listen ${listen};`,
    '        location / {',
    '            proxy_pass http://mcp_guard;',
    '            proxy_http_version 1.1;',
    '            proxy_set_header Connection "";           # kept-alive upstream connections',
    '            proxy_set_header Host $http_host;',
    '            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;',
    '            proxy_buffering off;                      # SSE: each event as it comes',
    '            proxy_request_buffering off;',
    '            proxy_read_timeout 1h;                    # long tool calls, idle SSE streams',
    '            proxy_send_timeout 1h;',
    '            proxy_next_upstream error timeout http_503;   # not non_idempotent: a sent POST is never replayed',
    '            proxy_next_upstream_tries 3;',
    ...(options.source ? [`            proxy_bind ${options.source};`] : []),
    '        }',
    '    }',
    '}',
    '',
  ].join('\n');
}

/** nginx on a free port in front of `backends`; resolves once it accepts connections. */
export async function startNginx(backends: readonly Backend[], options: NginxOptions = {}): Promise<LoadBalancer> {
  const dir = balancerDir('nginx');
  const port = await freePort();
  const config = nginxConfig(backends, `127.0.0.1:${port}`, { source: '127.0.0.2', ...options, dir });
  const file = join(dir, 'nginx.conf');
  writeFileSync(file, config);
  const errorLog = join(dir, 'error.log');
  return runBalancer('nginx', 'nginx', ['-g', 'daemon off;', '-p', dir, '-c', file, '-e', errorLog], {
    port,
    dir,
    config,
    extraOutput: () => (existsSync(errorLog) ? readFileSync(errorLog, 'utf8') : ''),
  });
}
