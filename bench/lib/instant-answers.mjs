/**
 * What the instant benchmark upstreams answer (HTTP and stdio alike): initialize, tools/list (a
 * given number of tools), tools/call (an echo of the arguments), anything else an empty result.
 */

/** The `result` of a request, for a server with `toolCount` tools called `tool-0`, `tool-1`, .... */
export function instantAnswerer(serverName, toolCount) {
  const tools = Array.from({ length: toolCount }, (_, i) => ({ name: `tool-${i}`, description: `Tool ${i}`, inputSchema: { type: 'object' } }));
  return (message) => {
    switch (message.method) {
      case 'initialize':
        return {
          protocolVersion: message.params?.protocolVersion ?? '2025-06-18',
          capabilities: { tools: {} },
          serverInfo: { name: serverName, version: '1.0.0' },
        };
      case 'tools/list':
        return { tools };
      case 'tools/call':
        return { content: [{ type: 'text', text: JSON.stringify(message.params?.arguments ?? {}) }] };
      default:
        return {};
    }
  };
}
