/**
 * Preloaded (`node --import`) into a proxy that has no option for its listening address:
 * supergateway 4 calls `app.listen(port)`, which binds every interface. A listener given only a port
 * (and perhaps a callback) is bound to 127.0.0.1 instead, so the benchmark never opens a port to
 * the network. Nothing else changes; child processes the proxy spawns do not inherit it.
 */
import net from 'node:net';

const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function listenOnLoopback(...args) {
  if (typeof args[0] === 'number' && (args.length === 1 || typeof args[1] === 'function')) args.splice(1, 0, '127.0.0.1');
  return listen.apply(this, args);
};
