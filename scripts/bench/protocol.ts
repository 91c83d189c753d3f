import type { BenchRoom, Target } from './rooms.ts';

/** What the orchestrator (scripts/bench.ts) asks a load-generator process (loadgen.ts) to do. */
export type Command =
  | {
      cmd: 'open-rooms';
      target: Target;
      baseUrl: string;
      count: number;
      concurrency: number;
      timeoutMs: number;
    }
  | {
      cmd: 'connect';
      group: string;
      baseUrl: string;
      rooms: BenchRoom[];
      concurrency: number;
      timeoutMs: number;
    }
  | { cmd: 'socket-stats'; group: string }
  | { cmd: 'disconnect'; group: string }
  | {
      cmd: 'messages';
      group: string;
      baseUrl: string;
      rate: number;
      durationMs: number;
      connections: number;
      graceMs: number;
    }
  | { cmd: 'fill-room'; baseUrl: string; room: BenchRoom; count: number }
  | {
      cmd: 'cannon';
      url: string;
      connections: number;
      durationS: number;
      method?: string;
      headers?: Record<string, string>;
      bodyBase64?: string;
    }
  | {
      cmd: 'probe';
      baseUrl: string;
      method: string;
      path: string;
      headers?: Record<string, string>;
      bodyBase64?: string;
    };

export type Request = Command & { id: number };
export type Reply = { id: number; ok: true; result: unknown } | { id: number; ok: false; error: string };

export type OpenRoomsResult = { rooms: BenchRoom[]; errors: string[]; failed: number; ms: number };
export type ConnectResult = { connected: number; failed: number; errors: string[]; ms: number };
export type SocketStats = { open: number; pings: number };

export type MessageRunResult = {
  rate: number;
  durationMs: number;
  sent: number;
  acked: number;
  /** Non-2xx answers by status, and transport errors as "error". */
  failed: Record<string, number>;
  delivered: number;
  /** Acknowledged but never seen on the partner's socket within the grace period. */
  lost: number;
  /** Acknowledgements per second over the sending window (or until the last ack, if later). */
  ackedPerSecond: number;
  /** Send → partner's socket, µs, hdr-histogram compressed base64. */
  delivery: string;
  /** Send → HTTP acknowledgement (after commit), µs. */
  ack: string;
  /** How late the open-loop scheduler fired sends, µs (the load generator's own lag). */
  schedulerLag: string;
  /**
   * Deliveries by the 100 ms window of their intended send time: how many, and the slowest, ms.
   * Tells a tail spread over a run from one made in a few windows (a stall).
   */
  timeline: { windowMs: number; count: number[]; maxMs: number[] };
  /** CPU the load-generator process used, as a fraction of one core. */
  loadgenCpu: number;
};

export type CannonResult = {
  /** Successful (2xx, or 3xx after a POST) answers per second. */
  requestsPerSecond: number;
  total: number;
  ok: number;
  /** Answers that were neither 2xx nor 3xx. */
  non2xx: number;
  errors: number;
  timeouts: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  durationS: number;
};

export type ProbeResult = { status: number; bytes: number; body: string };
