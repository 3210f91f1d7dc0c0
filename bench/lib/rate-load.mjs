/**
 * An open-loop load at a fixed rate, for latency: requests are scheduled at exact intervals, sent
 * over a pool of keep-alive connections, and each one's latency runs from its scheduled time (so
 * a stall of the server counts for every request it delays: no coordinated omission), measured
 * in microseconds (autocannon's histogram has whole milliseconds only). Every request has its
 * own JSON-RPC id; any non-2xx answer or error fails the run.
 */
import { Pool } from 'undici';

/** Resolves with { rate (achieved), p50, p90, p99, max (ms, with µs), requests }. */
export async function rateLoad({ url, body, headers = {}, rate, durationSecs, connections = 50 }) {
  const target = new URL(url);
  const pool = new Pool(target.origin, { connections, pipelining: 1 });
  const path = `${target.pathname}${target.search}`;
  const allHeaders = { 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...headers };
  const template = JSON.stringify({ jsonrpc: '2.0', id: 0, ...body });
  const total = Math.max(1, Math.round(rate * durationSecs));
  const intervalMs = 1000 / rate;
  const latencies = new Float64Array(total);
  let sent = 0;
  let done = 0;
  let failure;
  const started = performance.now();

  const one = async (index, scheduledAt) => {
    try {
      const response = await pool.request({ method: 'POST', path, headers: allHeaders, body: template.replace('"id":0', `"id":${index + 1}`) });
      await response.body.text();
      if (response.statusCode < 200 || response.statusCode >= 300) failure ??= new Error(`${url}: answered ${response.statusCode}`);
    } catch (error) {
      failure ??= error;
    }
    latencies[index] = performance.now() - scheduledAt;
    done++;
  };

  await new Promise((resolve) => {
    const tick = () => {
      const due = Math.min(total, Math.floor((performance.now() - started) / intervalMs) + 1);
      while (sent < due) {
        const index = sent++;
        void one(index, started + index * intervalMs);
      }
      if (sent < total) setTimeout(tick, 1);
      else resolve();
    };
    tick();
  });
  const deadline = performance.now() + 30_000;
  while (done < total && performance.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  const elapsedSecs = (performance.now() - started) / 1000;
  await pool.close();
  if (failure) throw failure instanceof Error ? failure : new Error(String(failure));
  if (done < total) throw new Error(`${url}: ${total - done} requests unanswered after 30 s`);
  const sorted = Array.from(latencies).sort((a, b) => a - b);
  const at = (q) => Number(sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))].toFixed(3));
  return {
    rate: Math.round(total / elapsedSecs),
    p50: at(0.5),
    p90: at(0.9),
    p99: at(0.99),
    max: Number(sorted[sorted.length - 1].toFixed(3)),
    requests: total,
  };
}
