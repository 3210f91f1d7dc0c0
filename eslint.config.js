// eslint (typescript-eslint's recommended rules) over the sources, tests, scripts and benchmark:
// `npm run lint`, part of `npm test`. Formatting is prettier's (.prettierrc.json), not eslint's.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'coverage/**', 'src/mcp/request-schemas.generated.ts'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: {
      globals: {
        // Node's globals (no dependency on the `globals` package for these few).
        process: 'readonly',
        console: 'readonly',
        Buffer: 'readonly',
        URL: 'readonly',
        URLSearchParams: 'readonly',
        setTimeout: 'readonly',
        clearTimeout: 'readonly',
        setInterval: 'readonly',
        clearInterval: 'readonly',
        setImmediate: 'readonly',
        clearImmediate: 'readonly',
        performance: 'readonly',
        AbortController: 'readonly',
        AbortSignal: 'readonly',
        TextDecoder: 'readonly',
        TextEncoder: 'readonly',
        fetch: 'readonly',
        structuredClone: 'readonly',
        queueMicrotask: 'readonly',
        Response: 'readonly',
        Request: 'readonly',
        Headers: 'readonly',
        globalThis: 'readonly',
        EventTarget: 'readonly',
        Event: 'readonly',
        ReadableStream: 'readonly',
        WritableStream: 'readonly',
        crypto: 'readonly',
        __dirname: 'readonly',
        NodeJS: 'readonly',
      },
    },
    rules: {
      // Unused names are errors, except deliberate ones spelled with a leading underscore.
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none', ignoreRestSiblings: true }],
      // `let x; ... handlers that read x ...; x = make(handlers)`: a name read by a closure made
      // before its one assignment cannot be const.
      'prefer-const': ['error', { ignoreReadBeforeAssign: true }],
    },
  },
  {
    // The client address is worked out once, through [server] trusted_proxies (src/app.ts): Fastify's
    // request.ip / request.ips are the socket's peer, the load balancer's address behind one.
    files: ['src/**'],
    rules: {
      'no-restricted-properties': [
        'error',
        { property: 'ip', message: 'Use request.clientIp: the client address through [server] trusted_proxies.' },
        { property: 'ips', message: 'Use request.clientIp: the client address through [server] trusted_proxies.' },
      ],
    },
  },
  {
    // CommonJS preloads (--require) of the tests.
    files: ['**/*.cjs'],
    languageOptions: { sourceType: 'commonjs', globals: { require: 'readonly', module: 'writable' } },
    rules: { '@typescript-eslint/no-require-imports': 'off' },
  },
  {
    // Tests read parsed JSON answers of every shape: `any` is how they say "whatever came back".
    files: ['test/**', 'bench/**', 'scripts/**'],
    rules: { '@typescript-eslint/no-explicit-any': 'off', '@typescript-eslint/no-non-null-assertion': 'off' },
  },
);
