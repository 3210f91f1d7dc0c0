/**
 * The era of a stdio child: legacy (initialize, sessions) or 2026-07-28 (server/discover, one
 * request at a time). Configured, or probed when a child starts (stdio "Backward Compatibility":
 * `server/discover` before anything else; a DiscoverResult is modern, an error, another result
 * or silence is legacy) and kept across restarts for a day.
 *
 * A modern server that is slow to start (npx fetching it) may answer the probe only after it was
 * taken for legacy: its late answer is kept while its initialize is in flight, and it is asked
 * again when it refuses initialize, so that it is used as what it is rather than restarted as
 * legacy forever (initializeOrAdopt).
 *
 * The probe has a string id and bypasses the correlator: nothing is sent when it times out
 * (notifications/cancelled before initialize would be one more thing for a legacy server to
 * refuse).
 */
import type { ChildProcess } from 'node:child_process';
import type { StdioServerConfig } from '../../config/schema.js';
import type { JsonRpcMessage, JsonRpcResponse } from '../../jsonrpc/messages.js';
import { MODERN_PROTOCOL_VERSION } from '../../protocol/versions.js';
import type { Logger } from '../../observability/logger.js';
import { configuredVerdict, discoverRequest, isFresh, probedVerdict, readProbeAnswer, type ProbeAnswer } from '../era.js';
import { UpstreamError } from '../errors.js';
import type { EraVerdict } from '../upstream.js';

/**
 * How long a starting child has to answer the era probe (`server/discover`) before it is taken
 * for a legacy server that ignores unknown requests; at most half of startup_timeout_ms, which
 * bounds the whole start (probe and initialize). Legacy servers built on the SDKs answer an error
 * at once; a modern one that answers later than this is still recognised while its initialize is
 * in flight (see initializeOrAdopt).
 */
const PROBE_TIMEOUT_MS = 2_000;

type ModernAnswer = Extract<ProbeAnswer, { kind: 'modern' }>;

/** How a probe written to a child ended. */
type ProbeOutcome = { kind: 'answer'; response: JsonRpcResponse } | { kind: 'silent' } | { kind: 'exited' } | { kind: 'gone' };

/** A probe written to a child, until it ends. */
interface PendingProbe {
  child: ChildProcess;
  id: string;
  /** Written while the child starts (before initialize): its exit is then part of the probe. */
  atStart: boolean;
  settle(outcome: ProbeOutcome): void;
}

/** What the probe needs from the child's supervisor (supervisor.ts). */
export interface ProbedChildren {
  /** The running child, if any. */
  readonly child: ChildProcess | undefined;
  readonly stopped: boolean;
  unavailable(): UpstreamError;
  /** Lets go of a child that exited on the start probe: its close is then no failure. */
  release(child: ChildProcess): void;
  /** Starts a child again (after one exited on the probe). */
  spawnChild(): ChildProcess;
}

export class EraProbe {
  /**
   * The era of the current child, and of the next one while it is fresh: configured, or probed
   * when a child starts and kept across restarts for a day.
   */
  private eraVerdict: EraVerdict | undefined;
  /** The current child speaks 2026-07-28: it was never initialized and takes call() only. */
  private modernChild = false;
  /** era({ refresh }) on an initialized legacy child: its next start probes again. */
  private reprobe = false;
  private probing: PendingProbe | undefined;
  private probeCount = 0;
  /**
   * A start probe that went unanswered in time, while the same child's initialize is in flight:
   * its late answer may still say that the child is modern.
   */
  private lateProbe: { child: ChildProcess; id: string; modern?: ModernAnswer } | undefined;
  private rediscovering: Promise<EraVerdict> | undefined;

  constructor(
    private readonly config: StdioServerConfig,
    private readonly log: Logger,
    private readonly children: ProbedChildren,
    private readonly write: (message: JsonRpcMessage) => boolean,
  ) {
    this.eraVerdict = configuredVerdict(config);
  }

  get verdict(): EraVerdict | undefined {
    return this.eraVerdict;
  }

  /** The current child speaks 2026-07-28 (decided by settle(), or adopted by initializeOrAdopt()). */
  get modern(): boolean {
    return this.modernChild;
  }

  /** era({ refresh }) where the running child cannot be asked: the next start probes again. */
  probeNextStart(): void {
    this.reprobe = true;
  }

  /** The legacy child's initialize named its version: the verdict says it from now on. */
  noteLegacyVersion(version: string): void {
    if (this.eraVerdict?.era === 'legacy' && this.eraVerdict.version !== version) this.eraVerdict = { ...this.eraVerdict, version };
  }

  /**
   * Decides the era of a child that has just started: the configured or fresh remembered
   * verdict, else a probe before anything else is written to it. A child that exits on the probe
   * (some SDKs end on any request before initialize) is legacy: it is started again and not
   * probed. Returns the child to go on with.
   */
  async settle(child: ChildProcess): Promise<ChildProcess> {
    this.modernChild = false;
    const known = this.eraVerdict;
    if (known && (known.source === 'config' || (!this.reprobe && isFresh(known)))) {
      this.modernChild = known.era === 'modern';
      return child;
    }
    this.reprobe = false;
    this.lateProbe = undefined;
    let version = MODERN_PROTOCOL_VERSION;
    let outcome = await this.probeChild(child, version, true);
    let answer = outcome.kind === 'answer' ? readProbeAnswer(outcome.response) : undefined;
    if (answer?.kind === 'retry') {
      version = answer.version;
      outcome = await this.probeChild(child, version, true);
      answer = outcome.kind === 'answer' ? readProbeAnswer(outcome.response) : undefined;
    }
    if (this.children.stopped || outcome.kind === 'gone') throw this.children.unavailable();
    const timeoutMs = this.probeTimeoutMs();
    const why =
      outcome.kind === 'silent'
        ? `no answer to server/discover within ${timeoutMs} ms`
        : outcome.kind === 'exited'
          ? 'the child exited on server/discover'
          : answer?.kind === 'legacy'
            ? answer.why
            : answer?.kind === 'retry'
              ? 'server/discover refused every version it named'
              : undefined;
    this.eraVerdict = probedVerdict(answer?.kind === 'modern' ? answer : { kind: 'legacy', why: why ?? '' });
    this.modernChild = answer?.kind === 'modern';
    this.log.info({ era: this.eraVerdict.era, version: this.eraVerdict.version, ...(why ? { why } : {}) }, 'upstream era probed');
    if (outcome.kind === 'exited') {
      this.log.info('starting the upstream child again, without the probe');
      return this.children.spawnChild();
    }
    return child;
  }

  /**
   * Initializes a child taken for legacy (`initialize`). When it refuses (or never answers)
   * initialize but has answered the probe late with a DiscoverResult, it is a modern server that
   * was slow to start (npx fetching it): it is used as one, not failed and restarted as legacy
   * forever. A child that went silent through the probe and then refuses initialize has started
   * by now, and may answer the late probe after the refusal (the v2 SDK does): it is asked again
   * before the start fails, and if it still is not modern its next start probes again rather than
   * being taken for legacy for as long as the verdict stays fresh.
   */
  async initializeOrAdopt(child: ChildProcess, initialize: () => Promise<void>): Promise<void> {
    try {
      await initialize();
      if (this.lateProbe?.modern) this.log.info('upstream answered server/discover late but took initialize: kept as legacy');
    } catch (error) {
      const late = this.lateProbe?.child === child ? this.lateProbe : undefined;
      let modern = late?.modern;
      const refused = error instanceof UpstreamError && error.kind === 'protocol';
      if (!modern && late && refused && this.children.child === child) {
        this.log.info('upstream went silent through server/discover and then refused initialize: asking it again');
        modern = (await this.probeAgain(child)) ?? late.modern;
        if (!modern) this.reprobe = true;
      }
      if (!modern || this.children.child !== child) throw error;
      this.eraVerdict = probedVerdict(modern);
      this.modernChild = true;
      this.log.info({ era: 'modern', version: modern.version }, 'upstream answered server/discover late and refused initialize: it is modern');
    } finally {
      this.lateProbe = undefined;
    }
  }

  /** era({ refresh }) on a running modern child: asks it again (once at a time); a failure keeps the verdict. */
  rediscover(): Promise<EraVerdict> {
    return (this.rediscovering ??= this.askAgain().finally(() => (this.rediscovering = undefined)));
  }

  /** An answer to a probe (a string id the correlator does not know). False: not one. */
  answered(message: JsonRpcResponse): boolean {
    const probe = this.probing;
    if (probe && message.id === probe.id) {
      probe.settle({ kind: 'answer', response: message });
      return true;
    }
    const late = this.lateProbe;
    if (late && message.id === late.id) {
      const answer = readProbeAnswer(message);
      if (answer.kind === 'modern') late.modern = answer;
      return true;
    }
    return false;
  }

  /**
   * The child's process is gone (supervisor.ts): a probe written to it ends with it. True when
   * that was the start probe and the child exited: part of starting (settle() starts it again).
   */
  childGone(child: ChildProcess, how: 'exited' | 'gone'): boolean {
    const probe = this.probing;
    if (probe?.child !== child) return false;
    probe.settle({ kind: how });
    return how === 'exited' && probe.atStart;
  }

  private async askAgain(): Promise<EraVerdict> {
    const child = this.children.child;
    const name = this.config.name;
    if (!child) throw this.children.unavailable();
    const outcome = await this.probeChild(child, this.eraVerdict?.version ?? MODERN_PROTOCOL_VERSION, false);
    if (outcome.kind === 'silent')
      throw new UpstreamError('timeout', name, `Upstream '${name}' did not answer server/discover within ${this.probeTimeoutMs()} ms`);
    if (outcome.kind !== 'answer') throw this.children.unavailable();
    const answer = readProbeAnswer(outcome.response);
    if (answer.kind !== 'modern') throw new UpstreamError('protocol', name, `Upstream '${name}' answered server/discover with no usable DiscoverResult`);
    if (this.children.child === child) this.eraVerdict = probedVerdict(answer);
    return probedVerdict(answer);
  }

  /** server/discover to a started child (one retry on the version it names); its DiscoverResult, if modern. */
  private async probeAgain(child: ChildProcess): Promise<ModernAnswer | undefined> {
    let answer: ProbeAnswer | undefined;
    for (let version = MODERN_PROTOCOL_VERSION, attempt = 0; attempt < 2; attempt++) {
      const outcome = await this.probeChild(child, version, false);
      answer = outcome.kind === 'answer' ? readProbeAnswer(outcome.response) : undefined;
      if (answer?.kind !== 'retry') break;
      version = answer.version;
    }
    return answer?.kind === 'modern' ? answer : undefined;
  }

  /** Writes `server/discover` to a child and waits for its answer, its exit, or the probe's timeout. */
  private probeChild(child: ChildProcess, version: string, atStart: boolean): Promise<ProbeOutcome> {
    return new Promise((resolve) => {
      const id = `mcp-guard-discover-${++this.probeCount}`;
      const probe: PendingProbe = {
        child,
        id,
        atStart,
        settle: (outcome) => {
          if (this.probing !== probe) return;
          this.probing = undefined;
          clearTimeout(timer);
          child.off('exit', exited);
          if (outcome.kind === 'silent' && atStart) this.lateProbe = { child, id };
          resolve(outcome);
        },
      };
      // The process's exit, not the close of its pipes: a descendant may hold those for a while.
      // At start the exit is part of starting (settle() starts the child again): the child is let
      // go of here, so that its close is not booked as a failure with a restart.
      const exited = (): void => {
        if (atStart && this.probing === probe) this.children.release(child);
        probe.settle({ kind: 'exited' });
      };
      const timer = setTimeout(() => probe.settle({ kind: 'silent' }), this.probeTimeoutMs());
      this.probing = probe;
      child.once('exit', exited);
      // A write that fails (the child is going) is settled by its exit.
      this.write(discoverRequest(id, version));
    });
  }

  private probeTimeoutMs(): number {
    return Math.max(1, Math.min(Math.floor(this.config.startup_timeout_ms / 2), PROBE_TIMEOUT_MS));
  }
}
