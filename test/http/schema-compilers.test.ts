import Fastify from 'fastify';
import { describe, expect, it } from 'vitest';
import { lazySchemaCompilers } from '../../src/optional.js';

describe('lazySchemaCompilers', () => {
  it("loads Fastify's own compilers when a route declares a schema: bodies are validated, answers serialized by it", async () => {
    const app = Fastify({ schemaController: { compilersFactory: lazySchemaCompilers } });
    app.post(
      '/x',
      {
        schema: {
          body: { type: 'object', required: ['a'], properties: { a: { type: 'number' } } },
          response: { 200: { type: 'object', properties: { ok: { type: 'boolean' } } } },
        },
      },
      async () => ({ ok: true, left: 'out' }),
    );
    const refused = await app.inject({ method: 'POST', url: '/x', payload: { b: 1 } });
    expect(refused.statusCode).toBe(400);
    expect(refused.json().message).toMatch(/must have required property 'a'/);
    const served = await app.inject({ method: 'POST', url: '/x', payload: { a: 1 } });
    expect(served.json()).toEqual({ ok: true });
    await app.close();
  });
});
