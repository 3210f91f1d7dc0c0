/**
 * undici's Agent on its own. undici's index loads all of undici (fetch, WebSocket, caches, mocks:
 * about 11 MB of private memory in a bare Node process); the gateway only needs the Agent, which
 * loads its dispatcher, pool and client (about 4.5 MB). undici has no "exports" map, so the file
 * is reachable; test/upstreams/exchange.test.ts fails at once if a release moves it.
 */
declare module 'undici/lib/dispatcher/agent.js' {
  import type { Agent } from 'undici';
  const AgentClass: typeof Agent;
  export default AgentClass;
}
