#!/usr/bin/env node
/**
 * The command line: argv -> config -> app -> listen; signals. The only place that calls
 * process.exit. Exit codes: 0 ok, 1 failure (bad config, unhealthy upstream), 2 usage error.
 */
import { parseArgs } from 'node:util';
import { MAX_TIMER_MS } from './config/constants.js';
import { ConfigError } from './config/errors.js';
import type { GatewayConfig } from './config/schema.js';
import type { Logger } from './observability/logger.js';
import { GATEWAY_VERSION } from './version.js';
import { errorMessage } from './error-message.js';

// The gateway itself (Fastify, undici, the config validator) is imported by the command that needs it:
// --help, --version and usage errors answer at once instead of after loading all of it.

const USAGE = `Usage: mcp-guard <command> [options]

Commands:
  serve (alias: run)   run the gateway
  check-upstream       handshake and tools/list with every configured server; exit 0 only if all are healthy
  validate             load and validate the config (and the [tool_integrity] pin file); exit 0 if valid
  pin                  write the [tool_integrity] pin file from what every server lists now
  keygen --id ID       make an API key; print it once and the [[auth.api_keys]] entry to add to the config
  hash-key [KEY]       print the argon2id key_hash of KEY; without KEY, of the first line of stdin
                       (stdin keeps the key out of shell history and \`ps\`)
  schema               print the JSON Schema of the config file (for editors)

Options:
  -c, --config FILE    config file (default: $MCP_GUARD_CONFIG, else ./mcp-guard.toml)
  --host HOST          serve: listen address (overrides [server] host)
  --port PORT          serve: listen port (overrides [server] port)
  --timeout SECONDS    check-upstream: per-server timeout (default 30)
  --json               check-upstream: print JSON instead of a table
  --server NAME        pin: that server's pins only
  --approve SERVER:TOOL  pin: accept the changed definition of that tool (or prompt) only
  --id ID              keygen: the identity id (letters, digits and ._@:+-)
  --tools A,B          keygen: allowed_tools, comma-separated (default: every tool)
  --rate-limit N       keygen: the key's own rate_limit, requests per second (needs [rate_limit])
  -h, --help           show this help
  -V, --version        show the version`;

class UsageError extends Error {}

const OPTIONS = {
  config: { type: 'string', short: 'c' },
  host: { type: 'string' },
  port: { type: 'string' },
  timeout: { type: 'string' },
  json: { type: 'boolean' },
  server: { type: 'string' },
  approve: { type: 'string' },
  id: { type: 'string' },
  tools: { type: 'string' },
  'rate-limit': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
  version: { type: 'boolean', short: 'V' },
} as const;

/** Which options each command accepts: a flag another command owns is a usage error here. */
const COMMAND_OPTIONS: Record<string, readonly string[]> = {
  serve: ['config', 'host', 'port'],
  run: ['config', 'host', 'port'],
  'check-upstream': ['config', 'timeout', 'json'],
  validate: ['config'],
  pin: ['config', 'server', 'approve'],
  keygen: ['id', 'tools', 'rate-limit'],
  'hash-key': [],
  schema: [],
};

/** hash-key's argument is a secret: its usage errors never quote what was typed. */
const HASH_KEY_USAGE = "hash-key takes at most one KEY and no options (give a key that starts with '-' on stdin)";

function parse(argv: string[]) {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: true });
  } catch (err) {
    throw new UsageError(argv.includes('hash-key') ? HASH_KEY_USAGE : (err as Error).message);
  }
  const { values, positionals } = parsed;
  if (values.help || values.version) return { command: values.help ? 'help' : 'version', values, positionals };
  const command = positionals[0];
  if (command === undefined) throw new UsageError('no command given');
  const allowed = COMMAND_OPTIONS[command];
  if (!allowed) throw new UsageError(`unknown command '${command}'`);
  // hash-key alone takes an argument (KEY).
  const maxPositionals = command === 'hash-key' ? 2 : 1;
  if (positionals.length > maxPositionals) {
    throw new UsageError(command === 'hash-key' ? HASH_KEY_USAGE : `unexpected argument '${positionals[maxPositionals]}'`);
  }
  for (const key of Object.keys(values)) {
    if (!allowed.includes(key)) throw new UsageError(`option --${key} does not apply to '${command}'`);
  }
  return { command, values, positionals };
}

function configPath(values: { config?: string | undefined }): string {
  // An empty variable counts as unset, as shells and container runtimes often leave it.
  return values.config ?? (process.env['MCP_GUARD_CONFIG'] || 'mcp-guard.toml');
}

async function load(values: { config?: string | undefined }): Promise<GatewayConfig> {
  const { loadConfig } = await import('./config/load.js');
  return loadConfig(configPath(values));
}

/** The same for `serve`, in a child process, so that the validator does not stay resident (load-isolated.ts). */
async function loadForServe(values: { config?: string | undefined }): Promise<GatewayConfig> {
  const { loadConfigIsolated } = await import('./config/load-isolated.js');
  return loadConfigIsolated(configPath(values));
}

/** --port: decimal digits only (Number() would also take '', ' 80', '0x50' and '1e3'). */
function port(text: string): number {
  const n = /^\d{1,5}$/.test(text) ? Number(text) : NaN;
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new UsageError(`--port must be an integer from 0 to 65535, got '${text}'`);
  return n;
}

/** The longest --timeout: a day (and well inside what a Node timer can hold). */
const MAX_TIMEOUT_SECONDS = 86_400;

/** --timeout in seconds (fractions allowed) -> milliseconds. */
function timeoutMs(text: string | undefined): number {
  if (text === undefined) return 30_000;
  const seconds = /^(\d+(\.\d*)?|\.\d+)$/.test(text) ? Number(text) : NaN;
  if (!(seconds > 0) || seconds > MAX_TIMEOUT_SECONDS) {
    throw new UsageError(`--timeout must be a positive number of seconds, at most ${MAX_TIMEOUT_SECONDS}, got '${text}'`);
  }
  return Math.max(1, Math.round(seconds * 1000));
}

/**
 * Time the shutdown may take beyond the grace period (closing upstreams: stdio trees get 2 s after
 * SIGTERM, HTTP sessions a few seconds for their DELETE) before the process exits anyway.
 */
const SHUTDOWN_MARGIN_MS = 15_000;

async function serve(
  config: GatewayConfig,
  log: Logger,
  app: Promise<typeof import('./app.js')>,
  file: { path: string; load: () => Promise<GatewayConfig> },
): Promise<number> {
  const { buildApp } = await app;
  for (const warning of config.warnings) log.warn(warning);
  const gateway = buildApp(config, { logger: log });
  // SIGHUP (and with watch_config a change of the file) reloads the config: src/app/reload.ts.
  const { Reloader } = await import('./app/reload.js');
  const reloader = new Reloader(gateway.services, file.load);
  const reload = (trigger: string) => void reloader.reload(trigger).catch((err: unknown) => log.error({ err }, 'config reload failed'));
  process.on('SIGHUP', () => reload('SIGHUP'));
  const unwatch = config.server.watch_config
    ? await (await import('./app/watch.js')).watchConfigFile(file.path, () => reload('watch_config'), log)
    : () => undefined;
  const address = await gateway.app.listen({ host: config.server.host, port: config.server.port });
  log.info({ address, servers: config.servers.map((s) => s.name), version: GATEWAY_VERSION }, 'mcp-guard listening');

  return new Promise<number>((resolve) => {
    let stopping = false;
    // Children that are still alive when the process exits (second signal, deadline) are killed by
    // the stdio upstream's exit hook: no process tree outlives the gateway.
    const stop = (signal: NodeJS.Signals): void => {
      // A second signal during [server] shutdown_delay_ms ends the delay: the graceful stop begins.
      if (stopping && gateway.endDelay()) {
        log.warn({ signal }, 'second signal: ending the shutdown delay, stopping now');
        return;
      }
      if (stopping) {
        log.warn({ signal }, 'second signal: exiting now');
        resolve(1);
        return;
      }
      stopping = true;
      unwatch();
      const { shutdown_delay_ms: delayMs, shutdown_grace_ms: graceMs } = config.server;
      log.info({ signal, delayMs, graceMs }, 'shutting down');
      // Within what a timer holds: a longer one would fire at once.
      const limitMs = Math.min(delayMs + graceMs + SHUTDOWN_MARGIN_MS, MAX_TIMER_MS);
      const deadline = setTimeout(() => {
        log.error({ afterMs: limitMs }, 'shutdown did not finish in time: exiting now');
        resolve(1);
      }, limitMs);
      deadline.unref();
      gateway.stop().then(
        () => {
          log.info('stopped');
          resolve(0);
        },
        (err: unknown) => {
          log.error({ err }, 'error during shutdown');
          resolve(1);
        },
      );
    };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
    gateway.start().then(
      () => {
        if (!stopping) log.info('upstreams started');
      },
      (err: unknown) => log.error({ err }, 'starting the upstreams failed'),
    );
  });
}

async function main(argv: string[]): Promise<number> {
  const { command, values, positionals } = parse(argv);
  switch (command) {
    case 'help':
      process.stdout.write(`${USAGE}\n`);
      return 0;
    case 'version':
      process.stdout.write(`mcp-guard ${GATEWAY_VERSION}\n`);
      return 0;
    case 'validate': {
      const config = await load(values);
      // [server.tls]: the files are read and checked as `serve` would (a ConfigError otherwise).
      const tlsWarnings = config.server.tls ? (await import('./http/tls.js')).loadTls(config.server.tls).warnings : [];
      for (const warning of [...config.warnings, ...tlsWarnings]) process.stderr.write(`warning: ${warning}\n`);
      // [tool_integrity]: the pin file is read as `serve` would read it (a PinFileError otherwise).
      const integrity = config.tool_integrity;
      if (
        integrity &&
        integrity.mode !== 'off' &&
        (await import('./integrity/pin-file.js')).readPinsSync(integrity.pin_file).missing &&
        !integrity.trust_on_first_use
      ) {
        process.stderr.write(
          `warning: tool_integrity.pin_file ${integrity.pin_file} does not exist: every tool is unpinned (write it with \`mcp-guard pin\`)\n`,
        );
      }
      const virtual = config.virtual_servers.map((v) => `${v.name} = ${v.servers.join(' + ')}`);
      const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? '' : 's'}`;
      process.stdout.write(
        `${configPath(values)}: valid (${plural(config.servers.length, 'server')}: ${config.servers.map((s) => s.name).join(', ')}` +
          `${virtual.length > 0 ? `; ${plural(virtual.length, 'virtual server')}: ${virtual.join(', ')}` : ''})\n`,
      );
      return 0;
    }
    case 'check-upstream': {
      // The command line is checked before the config is read: a usage error is exit 2 whatever the file holds.
      const timeout = timeoutMs(values.timeout);
      const config = await load(values);
      const [{ checkUpstreams, formatTable }, { createLogger }] = await Promise.all([import('./cli/check-upstream.js'), import('./observability/logger.js')]);
      const log = createLogger({ level: process.env['MCP_GUARD_LOG_LEVEL'] ?? 'silent' });
      const results = await checkUpstreams(config, timeout, log);
      process.stdout.write(values.json ? `${JSON.stringify(results, null, 2)}\n` : `${formatTable(results)}\n`);
      return results.every((r) => r.ok) ? 0 : 1;
    }
    case 'pin': {
      if (values.server !== undefined && values.approve !== undefined)
        throw new UsageError('--server and --approve cannot be combined (--approve names its server)');
      const config = await load(values);
      const [{ pin }, { createLogger }] = await Promise.all([import('./cli/pin.js'), import('./observability/logger.js')]);
      const log = createLogger({ level: process.env['MCP_GUARD_LOG_LEVEL'] ?? 'silent' });
      const report = await pin(config, { server: values.server, approve: values.approve }, log);
      if (report.code === 2) throw new UsageError(report.stderr);
      process.stdout.write(report.stdout);
      if (report.stderr) process.stderr.write(report.stderr.endsWith('\n') ? report.stderr : `${report.stderr}\n`);
      return report.code;
    }
    case 'keygen': {
      const { keygen, keygenOptions } = await import('./cli/keys.js');
      const options = keygenOptions(values);
      if ('error' in options) throw new UsageError(options.error);
      // argon2 is a native module: a broken one would crash this process silently (argon2-check.ts).
      await (await import('./auth/argon2-check.js')).checkArgon2Isolated();
      process.stdout.write(await keygen(options));
      return 0;
    }
    case 'schema':
      process.stdout.write((await import('./cli/schema.js')).configJsonSchemaText());
      return 0;
    case 'hash-key': {
      const { hashKey, readKey } = await import('./cli/keys.js');
      const key = await readKey(positionals[1]);
      await (await import('./auth/argon2-check.js')).checkArgon2Isolated();
      process.stdout.write(await hashKey(key));
      return 0;
    }
    default: {
      const listenPort = values.port === undefined ? undefined : port(values.port);
      // The app's modules load while the child process validates the config (start-up no longer
      // than with the config loaded in-process). A failed import is reported by serve(); until
      // then it is not an unhandled rejection.
      const app = import('./app.js');
      app.catch(() => undefined);
      // --host and --port win over the file, at start-up and on every reload (else each reload
      // would see the listener "changed" and ask for a restart).
      const loadWithFlags = async (): Promise<GatewayConfig> => {
        const loaded = await loadForServe(values);
        if (values.host !== undefined) loaded.server.host = values.host;
        if (listenPort !== undefined) loaded.server.port = listenPort;
        return loaded;
      };
      const config = await loadWithFlags();
      const { createLogger } = await import('./observability/logger.js');
      return serve(config, createLogger(), app, { path: configPath(values), load: loadWithFlags });
    }
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    if (err instanceof UsageError) {
      process.stderr.write(`mcp-guard: ${err.message}\n\n${USAGE}\n`);
      process.exit(2);
    }
    if (err instanceof ConfigError) {
      process.stderr.write(`mcp-guard: invalid configuration:\n${err.issues.map((i) => `  ${i.path}: ${i.message}`).join('\n')}\n`);
      process.exit(1);
    }
    process.stderr.write(`mcp-guard: ${errorMessage(err)}\n`);
    process.exit(1);
  },
);
