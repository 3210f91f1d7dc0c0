/**
 * One generated HTTP request to the gateway (method, path, body and header choices) and the
 * headers it turns into, shared by the inject and the real-HTTP fuzzing. Credentials and session
 * ids are generated as choices ("a valid key", "another server's session") and resolved against
 * the running gateway here.
 */
import fc from 'fast-check';
import * as arb from './arbitraries.js';
import { KEY, WEB_ONLY_KEY, type FuzzGateway } from './harness.js';

export interface RequestInput {
  method: string;
  path: string;
  body: string | Buffer;
  contentType: string | undefined;
  accept: string | undefined;
  protocolVersion: string | undefined;
  requestId: string | undefined;
  session: arb.SessionChoice;
  auth: arb.AuthChoice;
  garbageAuth: string;
}

/** The generated fields of a RequestInput besides method and path. */
export const requestFields = {
  body: arb.body,
  contentType: arb.contentType,
  accept: arb.accept,
  protocolVersion: arb.protocolVersion,
  requestId: arb.requestId,
  session: arb.sessionChoice,
  auth: arb.authChoice,
  garbageAuth: arb.garbageAuthorization,
};

/** A RequestInput of any method and path. */
export const anyRequest: fc.Arbitrary<RequestInput> = fc.record({ ...requestFields, method: arb.httpMethod, path: arb.path });

function authorization(gw: FuzzGateway, input: RequestInput): string | undefined {
  switch (input.auth) {
    case 'key':
      return `Bearer ${KEY}`;
    case 'web-only':
      return `Bearer ${WEB_ONLY_KEY}`;
    case 'jwt':
      return `Bearer ${gw.jwt}`;
    case 'none':
      return undefined;
    case 'garbage':
      return input.garbageAuth;
  }
}

/**
 * The session id of a choice. A DELETE of a live session would end the session later inputs
 * share: it names another server's session instead (DELETE itself is covered by the endpoint
 * tests). `sse` says whether the caller can cope with an endless GET stream; without it a GET
 * does the same.
 */
function sessionId(gw: FuzzGateway, input: RequestInput, sse: boolean): string | undefined {
  const local = input.path.includes('local');
  const keepShared = input.method === 'DELETE' || (input.method === 'GET' && !sse);
  // "other-identity" is the session the web-only key opened: live for that key.
  const live = input.session === 'own' || (input.session === 'other-identity' && input.auth === 'web-only');
  const choice = keepShared && live ? 'other-server' : input.session;
  switch (choice) {
    case 'none':
      return undefined;
    case 'own':
      return local ? gw.sessions.local : gw.sessions.web;
    case 'other-server':
      return local ? gw.sessions.web : gw.sessions.local;
    case 'other-identity':
      return gw.sessions.webOtherIdentity;
    case 'garbage':
      return 'garbage-session';
  }
}

/** The request headers of an input. */
export function requestHeaders(gw: FuzzGateway, input: RequestInput, options: { sse?: boolean } = {}): Record<string, string> {
  const headers: Record<string, string> = {};
  const set = (name: string, value: string | undefined): void => {
    if (value !== undefined) headers[name] = value;
  };
  set('content-type', input.contentType);
  set('accept', input.accept);
  set('mcp-protocol-version', input.protocolVersion);
  set('x-request-id', input.requestId);
  set('mcp-session-id', sessionId(gw, input, options.sse ?? false));
  set('authorization', authorization(gw, input));
  return headers;
}

/** Everything a client sent, as one string: what an answer may echo without leaking anything. */
export function describeSent(input: RequestInput, headers: Record<string, string>): string {
  return `${input.path} ${JSON.stringify(headers)} ${input.body.toString()}`;
}
