/**
 * A load-generator process, driven by scripts/bench.ts over IPC. It holds WebSockets as the two
 * devices of each room, sends messages open-loop (at scheduled times, whatever the answers), and
 * measures send → partner's socket from a timestamp carried in the message body.
 */
import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import autocannon from 'autocannon';
import * as hdr from 'hdr-histogram-js';
import { WebSocket } from 'ws';
import { HttpClient, LeanHttpPool } from './http-client.ts';
import type {
  CannonResult,
  Command,
  ConnectResult,
  MessageRunResult,
  OpenRoomsResult,
  ProbeResult,
  Reply,
  Request,
  SocketStats,
} from './protocol.ts';
import { type BenchRoom, openRooms, pool } from './rooms.ts';

/** Each socket is one page, with the page id app.js gives it (sends from it name it too). */
type Held = { room: BenchRoom; host: WebSocket; guest: WebSocket; hostTab: string; guestTab: string };
type Group = { rooms: Held[]; pings: number };

/** Message bodies: `bench:<run>:<intended send time, ms>:<sender slot>:<index>` and some text. */
const MARK = /bench:(\d+):(\d+\.\d+):([12]):(\d+)/;
const TIMELINE_WINDOW_MS = 100;
const PADDING = 'the quick brown fox jumps over the lazy dog, and then it types some more';

const groups = new Map<string, Group>();

type Run = {
  id: number;
  delivered: Uint8Array;
  deliveredCount: number;
  delivery: hdr.Histogram;
  timeline: MessageRunResult['timeline'];
  onFrame(frame: string, mySlot: 1 | 2): void;
};
let currentRun: Run | undefined;
let runCounter = Math.floor(Math.random() * 1e6);

const newHistogram = () =>
  hdr.build({
    lowestDiscernibleValue: 1,
    highestTrackableValue: 120_000_000,
    numberOfSignificantValueDigits: 3,
  });

function wsUrl(baseUrl: string, code: string): string {
  return `${baseUrl.replace(/^http/, 'ws')}/rooms/${code}/ws`;
}

function openSocket(
  url: string,
  cookie: string,
  slot: 1 | 2,
  group: Group,
  timeoutMs: number,
): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(url, {
      headers: { cookie },
      perMessageDeflate: false,
      handshakeTimeout: timeoutMs,
    });
    socket.on('message', (data) => {
      if (currentRun) currentRun.onFrame(data.toString(), slot);
    });
    socket.on('ping', () => {
      group.pings += 1;
    });
    socket.once('open', () => resolve(socket));
    socket.once('unexpected-response', (_request, response) => {
      socket.terminate();
      reject(new Error(`upgrade refused: ${response.statusCode}`));
    });
    socket.once('error', reject);
  });
}

async function connect(command: Extract<Command, { cmd: 'connect' }>): Promise<ConnectResult> {
  const started = Date.now();
  let group = groups.get(command.group);
  if (!group) {
    group = { rooms: [], pings: 0 };
    groups.set(command.group, group);
  }
  const target = group;
  const { results, errors, failed } = await pool(
    command.rooms.length,
    command.concurrency,
    started + command.timeoutMs,
    async (index) => {
      const room = command.rooms[index] as BenchRoom;
      const url = wsUrl(command.baseUrl, room.code);
      const [hostTab, guestTab] = [randomUUID(), randomUUID()];
      const [host, guest] = await Promise.all([
        openSocket(`${url}?tab=${hostTab}`, room.host, 1, target, command.timeoutMs),
        openSocket(`${url}?tab=${guestTab}`, room.guest, 2, target, command.timeoutMs),
      ]);
      target.rooms.push({ room, host, guest, hostTab, guestTab });
      return room;
    },
  );
  return { connected: results.length * 2, failed: failed * 2, errors, ms: Date.now() - started };
}

function socketStats(name: string): SocketStats {
  const group = groups.get(name);
  let open = 0;
  for (const held of group?.rooms ?? []) {
    if (held.host.readyState === WebSocket.OPEN) open += 1;
    if (held.guest.readyState === WebSocket.OPEN) open += 1;
  }
  return { open, pings: group?.pings ?? 0 };
}

async function disconnect(name: string): Promise<{ closed: number }> {
  const group = groups.get(name);
  groups.delete(name);
  const sockets = (group?.rooms ?? []).flatMap((held) => [held.host, held.guest]);
  await Promise.all(
    sockets.map(
      (socket) =>
        new Promise<void>((resolve) => {
          if (socket.readyState === WebSocket.CLOSED) return resolve();
          const timer = setTimeout(() => {
            socket.terminate();
            resolve();
          }, 2_000);
          socket.once('close', () => {
            clearTimeout(timer);
            resolve();
          });
          socket.close();
        }),
    ),
  );
  return { closed: sockets.length };
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Open loop: message i goes out at start + i / rate, answered or not. */
async function messages(command: Extract<Command, { cmd: 'messages' }>): Promise<MessageRunResult> {
  const group = groups.get(command.group);
  if (!group || group.rooms.length === 0) throw new Error(`no rooms connected in group ${command.group}`);
  const rooms = group.rooms;
  const url = new URL(command.baseUrl);
  const client = new LeanHttpPool(url.hostname, Number(url.port), command.connections);
  await client.open();
  const total = Math.max(1, Math.round((command.rate * command.durationMs) / 1000));
  const interval = 1000 / command.rate;
  const id = runCounter++;
  const delivery = newHistogram();
  const ack = newHistogram();
  const schedulerLag = newHistogram();
  const windows = Math.ceil(command.durationMs / TIMELINE_WINDOW_MS) + 1;
  // The run's clock: message i is due at start + i / rate.
  const start = performance.now() + 10;
  const run: Run = {
    id,
    delivered: new Uint8Array(total),
    deliveredCount: 0,
    delivery,
    timeline: {
      windowMs: TIMELINE_WINDOW_MS,
      count: new Array(windows).fill(0),
      maxMs: new Array(windows).fill(0),
    },
    onFrame(frame, mySlot) {
      const match = MARK.exec(frame);
      if (!match || Number(match[1]) !== id || Number(match[3]) === mySlot) return;
      const index = Number(match[4]);
      if (index >= total || run.delivered[index]) return;
      run.delivered[index] = 1;
      run.deliveredCount += 1;
      const intended = Number(match[2]);
      const latencyMs = performance.now() - intended;
      delivery.recordValue(Math.max(1, Math.round(latencyMs * 1000)));
      const window = Math.min(windows - 1, Math.max(0, Math.floor((intended - start) / TIMELINE_WINDOW_MS)));
      run.timeline.count[window] = (run.timeline.count[window] as number) + 1;
      run.timeline.maxMs[window] = Math.max(run.timeline.maxMs[window] as number, latencyMs);
    },
  };
  currentRun = run;

  let acked = 0;
  let settled = 0;
  let lastAck = 0;
  const failed: Record<string, number> = {};
  const fail = (key: string) => {
    failed[key] = (failed[key] ?? 0) + 1;
  };
  const fire = (index: number, intended: number) => {
    const held = rooms[index % rooms.length] as Held;
    const slot = Math.floor(index / rooms.length) % 2 === 0 ? 1 : 2;
    const body = `bench:${id}:${intended.toFixed(3)}:${slot}:${index} ${PADDING}`;
    client
      .post(
        `/rooms/${held.room.code}/messages`,
        {
          cookie: slot === 1 ? held.room.host : held.room.guest,
          'hx-request': 'true',
          'x-tab-id': slot === 1 ? held.hostTab : held.guestTab,
        },
        `body=${encodeURIComponent(body)}&client_msg_id=${randomUUID()}`,
      )
      .then(
        (status) => {
          if (status >= 200 && status < 300) {
            acked += 1;
            lastAck = performance.now();
            ack.recordValue(Math.max(1, Math.round((lastAck - intended) * 1000)));
          } else fail(String(status));
        },
        () => fail('error'),
      )
      .finally(() => {
        settled += 1;
      });
  };

  const cpuBefore = process.cpuUsage();
  let next = 0;
  await new Promise<void>((resolve) => {
    const tick = () => {
      const now = performance.now();
      while (next < total) {
        const intended = start + next * interval;
        if (intended > now) break;
        schedulerLag.recordValue(Math.max(1, Math.round((now - intended) * 1000)));
        fire(next, intended);
        next += 1;
      }
      if (next >= total) resolve();
      else setTimeout(tick, Math.max(0, Math.min(1, start + next * interval - performance.now())));
    };
    tick();
  });
  const sendingEnded = performance.now();
  // Every request answers (or times out), then every acknowledged message reaches the partner or the grace runs out.
  while (settled < total && performance.now() - sendingEnded < 11_000) await sleep(5);
  const graceEnd = performance.now() + command.graceMs;
  while (run.deliveredCount < acked && performance.now() < graceEnd) await sleep(5);
  const cpu = process.cpuUsage(cpuBefore);
  const elapsedMs = performance.now() - start;
  currentRun = undefined;
  client.close();

  const windowMs = Math.max(command.durationMs, lastAck - start);
  return {
    rate: command.rate,
    durationMs: command.durationMs,
    sent: total,
    acked,
    failed,
    delivered: run.deliveredCount,
    lost: Math.max(0, acked - run.deliveredCount),
    ackedPerSecond: acked / (windowMs / 1000),
    delivery: hdr.encodeIntoCompressedBase64(delivery),
    ack: hdr.encodeIntoCompressedBase64(ack),
    schedulerLag: hdr.encodeIntoCompressedBase64(schedulerLag),
    timeline: {
      ...run.timeline,
      maxMs: run.timeline.maxMs.map((ms) => Math.round(ms * 10) / 10),
    },
    loadgenCpu: (cpu.user + cpu.system) / 1000 / elapsedMs,
  };
}

/** Sends `count` messages one after another (to give a room its history). */
async function fillRoom(command: Extract<Command, { cmd: 'fill-room' }>): Promise<{ sent: number }> {
  const client = new HttpClient(command.baseUrl, 2);
  try {
    for (let index = 0; index < command.count; index++) {
      const slot = index % 2 === 0 ? 1 : 2;
      const response = await client.request('POST', `/rooms/${command.room.code}/messages`, {
        form: { body: `history message ${index + 1}: ${PADDING}`, client_msg_id: randomUUID() },
        headers: { cookie: slot === 1 ? command.room.host : command.room.guest, 'hx-request': 'true' },
      });
      if (response.status !== 200) throw new Error(`fill-room: message ${index + 1} got ${response.status}`);
    }
    return { sent: command.count };
  } finally {
    client.close();
  }
}

async function cannon(command: Extract<Command, { cmd: 'cannon' }>): Promise<CannonResult> {
  const result = await autocannon({
    url: command.url,
    connections: command.connections,
    duration: command.durationS,
    method: command.method ?? 'GET',
    headers: command.headers ?? {},
    ...(command.bodyBase64 ? { body: Buffer.from(command.bodyBase64, 'base64') } : {}),
    timeout: 10,
  });
  // A 303 after a POST is this app's no-JS success answer.
  const ok = result['2xx'] + result['3xx'];
  return {
    requestsPerSecond: ok / result.duration,
    total: result.requests.total,
    ok,
    non2xx: result.non2xx - result['3xx'],
    errors: result.errors,
    timeouts: result.timeouts,
    p50Ms: result.latency.p50,
    p99Ms: result.latency.p99,
    maxMs: result.latency.max,
    durationS: result.duration,
  };
}

async function probe(command: Extract<Command, { cmd: 'probe' }>): Promise<ProbeResult> {
  const client = new HttpClient(command.baseUrl, 1);
  try {
    const response = await client.request(command.method, command.path, {
      headers: command.headers ?? {},
      ...(command.bodyBase64 ? { body: Buffer.from(command.bodyBase64, 'base64') } : {}),
      timeoutMs: 30_000,
    });
    return {
      status: response.status,
      bytes: Buffer.byteLength(response.body),
      body: response.body.slice(0, 100_000),
    };
  } finally {
    client.close();
  }
}

async function handle(command: Command): Promise<unknown> {
  switch (command.cmd) {
    case 'open-rooms': {
      const started = Date.now();
      const opened = await openRooms(
        command.target,
        command.baseUrl,
        command.count,
        command.concurrency,
        started + command.timeoutMs,
      );
      return { ...opened, ms: Date.now() - started } satisfies OpenRoomsResult;
    }
    case 'connect':
      return connect(command);
    case 'socket-stats':
      return socketStats(command.group);
    case 'disconnect':
      return disconnect(command.group);
    case 'messages':
      return messages(command);
    case 'fill-room':
      return fillRoom(command);
    case 'cannon':
      return cannon(command);
    case 'probe':
      return probe(command);
  }
}

process.on('message', (request: Request) => {
  handle(request).then(
    (result) => process.send?.({ id: request.id, ok: true, result } satisfies Reply),
    (error: unknown) =>
      process.send?.({
        id: request.id,
        ok: false,
        error: (error as Error)?.stack ?? String(error),
      } satisfies Reply),
  );
});
process.on('disconnect', () => process.exit(0));
