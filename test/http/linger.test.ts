/**
 * The lingering close of an early 413 (src/http/linger.ts) only ever acts on a real connection:
 * a request injected with Fastify's inject() has a stand-in socket without destroy(), and the
 * timer that would close it must never be armed (CI saw its TypeError thrown from a timer, an
 * uncaught exception, while test/fuzz/inject.test.ts ran).
 */
import { Socket } from 'node:net';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { describe, expect, it, vi } from 'vitest';
import { lingerForBody } from '../../src/http/linger.js';

function request(socket: unknown): FastifyRequest {
  return { raw: { complete: false, socket, headers: { 'content-length': '1000' }, once: () => undefined } } as unknown as FastifyRequest;
}

describe('lingerForBody', () => {
  it('leaves a request without a real socket alone: no timer, Connection: close kept', () => {
    const reply = { removeHeader: vi.fn() } as unknown as FastifyReply;
    const timers = vi.spyOn(globalThis, 'setTimeout');
    lingerForBody(request({ destroyed: false, once: () => undefined }), reply);
    lingerForBody(request(null), reply);
    expect(reply.removeHeader).not.toHaveBeenCalled();
    expect(timers).not.toHaveBeenCalled();
    timers.mockRestore();
  });

  it('keeps a real connection open for the rest of the body, bounded by a timer', () => {
    const reply = { removeHeader: vi.fn() } as unknown as FastifyReply;
    const socket = new Socket();
    const timers = vi.spyOn(globalThis, 'setTimeout');
    lingerForBody(request(socket), reply);
    expect(reply.removeHeader).toHaveBeenCalledWith('connection');
    expect(timers).toHaveBeenCalledTimes(1);
    timers.mockRestore();
    socket.destroy();
  });
});
