/** The operational log: JSON by default, readable for terminals, request ids, no secrets. */
import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { createLogger, LazyChildLogger } from '../../src/observability/logger.js';

function capture(): { stream: Writable; text: () => string } {
  const chunks: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      chunks.push(chunk.toString('utf8'));
      done();
    },
  });
  return { stream, text: () => chunks.join('') };
}

describe('createLogger', () => {
  it('writes JSON lines with the service name and an ISO time', () => {
    const out = capture();
    createLogger({ level: 'info', destination: out.stream }).info({ server: 'fs' }, 'hello');
    const line = JSON.parse(out.text().trim()) as Record<string, unknown>;
    expect(line).toMatchObject({ level: 30, service: 'mcp-guard', server: 'fs', msg: 'hello' });
    expect(line['time']).toMatch(/^\d{4}-\d\d-\d\dT/);
  });

  it('redacts authorization, tokens, keys and secrets wherever they are logged', () => {
    const out = capture();
    createLogger({ level: 'info', destination: out.stream }).info(
      { authorization: 'Bearer mcp_abc', headers: { authorization: 'x' }, token: 't0ken', key: 'k3y', upstream: { secret: 's3cret' } },
      'careless',
    );
    expect(out.text()).not.toMatch(/mcp_abc|t0ken|k3y|s3cret/);
  });

  it('MCP_GUARD_LOG_FORMAT=pretty: readable lines, still redacted', () => {
    const out = capture();
    createLogger({ level: 'info', format: 'pretty', destination: out.stream }).info({ server: 'fs', token: 't0ken' }, 'started');
    const text = out.text();
    expect(text).toMatch(/INFO.*started/);
    expect(text).toContain('server: "fs"');
    expect(() => JSON.parse(text)).toThrow();
    expect(text).not.toContain('t0ken');
  });

  it('refuses an unknown format', () => {
    expect(() => createLogger({ format: 'xml' })).toThrow(/MCP_GUARD_LOG_FORMAT must be "json" or "pretty"/);
  });
});

describe('LazyChildLogger (request.log)', () => {
  it('makes the child logger only when a line is written at an enabled level, then writes it with the bindings', () => {
    const out = capture();
    const parent = createLogger({ level: 'info', destination: out.stream });
    const made: unknown[] = [];
    const child = parent.child.bind(parent);
    parent.child = ((...args: Parameters<typeof child>) => {
      made.push(args[0]);
      return child(...args);
    }) as typeof parent.child;
    const log = new LazyChildLogger(parent, { reqId: 'r-1' }, {});
    expect(log.level).toBe('info');
    log.debug({ detail: 1 }, 'below the level');
    expect(made).toHaveLength(0);
    expect(out.text()).toBe('');
    log.info({ server: 'fs' }, 'first line');
    log.warn('second line');
    expect(made).toEqual([{ reqId: 'r-1' }]);
    const lines = out
      .text()
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as Record<string, unknown>);
    expect(lines).toEqual([
      expect.objectContaining({ level: 30, reqId: 'r-1', server: 'fs', msg: 'first line' }),
      expect.objectContaining({ level: 40, reqId: 'r-1', msg: 'second line' }),
    ]);
  });

  it('still redacts, and its children keep the bindings', () => {
    const out = capture();
    const log = new LazyChildLogger(createLogger({ level: 'info', destination: out.stream }), { reqId: 'r-2' }, {});
    log.child({ server: 'fs' }).error({ token: 't0ken' }, 'failed');
    const line = JSON.parse(out.text().trim()) as Record<string, unknown>;
    expect(line).toMatchObject({ level: 50, reqId: 'r-2', server: 'fs', msg: 'failed', token: '[redacted]' });
  });
});
