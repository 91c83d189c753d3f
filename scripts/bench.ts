/**
 * The benchmark (`npm run bench -- --help`). Starts a durable PostgreSQL, a redis-server, the app
 * the production way (its own process, configured by env) and a bare WebSocket relay (the floor),
 * then drives both from separate load-generator processes over loopback:
 *
 *   latency     open-loop messages at --rate: send → partner's socket p50/p99/p99.9, event-loop p99
 *   throughput  a step search over rates: the highest whose p99 stays under --p99-limit
 *   sockets     idle sockets of --socket-rooms rooms (both devices), RSS per socket
 *   page        the room page with 50 messages (autocannon)
 *   health      GET /health (autocannon)
 *   upload      1 MB JPEG uploads (POST /rooms/{CODE}/attachments; "not available" while it is 404)
 *
 * Writes bench-results/bench-<time>.json and prints a table.
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { type BenchOptions, parseOptions, type Step } from './bench/options.ts';
import type {
  CannonResult,
  ConnectResult,
  MessageRunResult,
  OpenRoomsResult,
  ProbeResult,
  SocketStats,
} from './bench/protocol.ts';
import { percentiles, type Row, ratio, round, row, table } from './bench/report.ts';
import type { BenchRoom, Target } from './bench/rooms.ts';
import {
  appOpenSockets,
  buildApp,
  type CpuUse,
  createDatabase,
  eventLoopP99,
  fileDescriptors,
  machineInfo,
  measureCpu,
  postgresPids,
  prepareBaseline,
  redisPids,
  rssOf,
  type Service,
  settleDatabase,
  startApp,
  startDurablePostgres,
  startRedis,
  startRelay,
  Worker,
} from './bench/stack.ts';

const options = parseOptions(process.argv.slice(2));
const startedAt = Date.now();
const budgetEnd = startedAt + options.budget * 1000;
const MB = 1024 * 1024;

const log = (message: string) =>
  process.stderr.write(`[bench ${((Date.now() - startedAt) / 1000).toFixed(1).padStart(6)} s] ${message}\n`);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const withinBudget = () => Date.now() < budgetEnd;

type AppService = Service & { adminUrl: string };
type Targets = { app?: AppService; base?: AppService; relay?: Service };

type MessageSummary = Pick<
  MessageRunResult,
  'rate' | 'sent' | 'acked' | 'failed' | 'delivered' | 'lost' | 'ackedPerSecond'
> & {
  delivery: ReturnType<typeof percentiles>;
  ack: ReturnType<typeof percentiles>;
  schedulerLagP99Ms: number;
  eventLoopP99Ms: number | null;
  cpuCores: CpuUse;
  /** The slowest deliveries by 100 ms window of send time, slowest first (see MessageRunResult). */
  slowestWindows: { atS: number; maxMs: number; count: number }[];
  pass?: boolean;
};

async function main(): Promise<void> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'ccc-bench-'));
  const stops: (() => Promise<unknown> | unknown)[] = [];
  const report: Record<string, unknown> = {
    benchmark: 'chittychattychat',
    version: 1,
    startedAt: new Date(startedAt).toISOString(),
    options,
    steps: {} as Record<string, unknown>,
    notes: [] as string[],
  };
  const steps = report.steps as Record<string, unknown>;
  const notes = report.notes as string[];
  try {
    // The build runs while the servers start.
    const built = options.targets.includes('app') && !options.tsx ? buildApp() : Promise.resolve();
    built.catch(() => undefined);
    if (options.targets.includes('app') && !options.tsx) {
      log('building the app (tsc -p tsconfig.build.json, as npm run build does) meanwhile');
    }
    log('starting PostgreSQL (fsync on, synchronous_commit on) and redis-server');
    const database = await startDurablePostgres(dir);
    stops.push(() => database.stop());
    log(`PostgreSQL ${database.url}`);
    const redis = await startRedis();
    stops.push(() => redis.stop());
    const machine = await machineInfo(database, options.appNode);
    report.machine = machine;

    const targets: Targets = {};
    const appEnv = {
      limits: { send: 100_000_000, join: 10_000_000, create: 10_000_000, upload: 10_000_000 },
      ...(options.cpuProf ? { cpuProfileDir: path.resolve(options.cpuProf) } : {}),
      nodeArgs: options.appNodeArgs,
      ...(options.appNode ? { node: options.appNode } : {}),
      built: !options.tsx,
    };
    if (options.targets.includes('base')) {
      // A/B: the baseline gets a database and a Redis of its own on the same machine.
      log(`building the baseline ${options.baseline} in a temporary worktree`);
      const baseline = await prepareBaseline(options.baseline as string, dir);
      stops.push(() => baseline.remove());
      report.baseline = { revision: options.baseline, commit: baseline.commit };
      const baseRedis = await startRedis();
      stops.push(() => baseRedis.stop());
      const base = await startApp({
        ...appEnv,
        root: baseline.root,
        databaseUrl: await createDatabase(database.url, 'chittychat_base'),
        redisUrl: baseRedis.url,
        dataDir: path.join(dir, 'base'),
      });
      targets.base = base;
      log(`baseline ${baseline.commit.slice(0, 10)} pid ${base.pid}: ${base.url}`);
      stops.push(() => base.process.stop('SIGTERM'));
    }
    if (options.targets.includes('app')) {
      await built;
      log(
        `starting the app (${options.tsx ? 'src/main.ts through tsx' : 'node dist/src/main.js'}, its own process, node ${machine.appNode})`,
      );
      const app = await startApp({
        ...appEnv,
        databaseUrl: database.url,
        redisUrl: redis.url,
        dataDir: path.join(dir, 'app'),
      });
      targets.app = app;
      log(`app pid ${app.pid}: ${app.url} (admin ${app.adminUrl})`);
      // SIGTERM: a graceful stop, so that --cpu-prof gets written.
      stops.push(() => app.process.stop('SIGTERM'));
    }
    if (options.targets.includes('relay')) {
      log('starting the bare relay');
      const relay = await startRelay();
      targets.relay = relay;
      stops.push(() => relay.process.stop('SIGTERM'));
    }
    const workers = Array.from({ length: options.workers }, (_, index) => new Worker(index));
    stops.push(() => {
      for (const worker of workers) worker.stop();
    });
    const context: Context = {
      options,
      targets,
      workers,
      settleDatabase: async () => {
        await settleDatabase(database.url);
        if (targets.base) await settleDatabase(database.url.replace(/\/[^/]*$/, '/chittychat_base'));
      },
      cpuGroups: {
        app: async () => (targets.app ? [targets.app.pid] : []),
        base: async () => (targets.base ? [targets.base.pid] : []),
        relay: async () => (targets.relay ? [targets.relay.pid] : []),
        postgres: () => postgresPids(database.dataDir),
        redis: () => redisPids(redis.port),
        loadgen: async () => workers.map((worker) => worker.pid),
      },
    };

    const want = (step: Step) => options.steps.includes(step);
    // The bounded steps first; the rate search last, as it takes whatever time is left.
    const figure = (key: string) => (result: Record<string, unknown>) => result[key];
    if (want('health'))
      steps.health = await perTarget(context, 'health', healthStep, figure('requestsPerSecond'));
    if (want('page')) steps.page = await perTarget(context, 'page', pageStep, figure('requestsPerSecond'));
    if (want('upload'))
      steps.upload = await perTarget(context, 'upload', uploadStep, figure('uploadsPerSecond'));
    if (want('sockets'))
      steps.sockets = await perTarget(context, 'sockets', socketStep, figure('rssPerSocketKB'));
    if (want('latency') || want('throughput')) {
      for (const [index, target] of options.targets.entries()) {
        // Each target's search gets an equal share of the time left.
        const share = (budgetEnd - Date.now()) / (options.targets.length - index);
        await messageSteps(context, target, steps, notes, Date.now() + share);
      }
    }
  } finally {
    log('stopping');
    for (const stop of stops.reverse()) {
      try {
        await stop();
      } catch (error) {
        log(`while stopping: ${(error as Error).message}`);
      }
    }
    await rm(dir, { recursive: true, force: true });
  }
  report.finishedAt = new Date().toISOString();
  report.durationSeconds = round((Date.now() - startedAt) / 1000, 1);
  const other: Target = options.targets.includes('base') ? 'base' : 'relay';
  const rows = summarize(report, other);
  report.table = rows;
  await mkdir(options.out, { recursive: true });
  const file = path.join(
    options.out,
    `bench-${new Date(startedAt).toISOString().replace(/[:.]/g, '-')}.json`,
  );
  await writeFile(file, `${JSON.stringify(report, null, 2)}\n`);
  process.stdout.write(
    `\n${table(rows, other === 'base' ? `baseline ${options.baseline}` : 'bare relay', other === 'base' ? 'app/base' : 'app/relay')}\n\n`,
  );
  for (const note of notes) process.stdout.write(`- ${note}\n`);
  process.stdout.write(`\nreport: ${file}\n`);
}

type Context = {
  options: BenchOptions;
  targets: Targets;
  workers: Worker[];
  /** Vacuums, analyzes and checkpoints the database (see `settleDatabase`). */
  settleDatabase: () => Promise<void>;
  cpuGroups: Parameters<typeof measureCpu>[0];
};

function urlOf(context: Context, target: Target): string {
  const service = context.targets[target];
  if (!service) throw new Error(`${target} is not running`);
  return service.url;
}

/**
 * Runs a step against each target, --rounds times, alternating the order (A B, B A, …) so that
 * a machine that gets busier or quieter during the run favours neither; each target's result is
 * its median round by `metric` (with every round's figure beside it). A failure or the budget ends
 * that target's part, not the run.
 */
async function perTarget(
  context: Context,
  name: string,
  step: (context: Context, target: Target) => Promise<Record<string, unknown>>,
  metric: (result: Record<string, unknown>) => unknown,
): Promise<Record<string, unknown>> {
  const { targets, rounds } = context.options;
  const runs = new Map<Target, Record<string, unknown>[]>(targets.map((target) => [target, []]));
  const results: Record<string, unknown> = {};
  for (let round = 0; round < rounds; round++) {
    for (const target of round % 2 === 0 ? targets : [...targets].reverse()) {
      if (!withinBudget()) {
        results[target] ??= { skipped: 'time budget used up' };
        continue;
      }
      log(`${name}: ${target}${rounds > 1 ? ` (round ${round + 1} of ${rounds})` : ''}`);
      try {
        runs.get(target)?.push(await step(context, target));
      } catch (error) {
        log(`${name} (${target}) failed: ${(error as Error).message}`);
        results[target] = { error: (error as Error).message.split('\n')[0] };
      }
    }
  }
  for (const [target, list] of runs) {
    const measured = list
      .map((result) => ({ result, value: metric(result) }))
      .filter(
        (item): item is { result: Record<string, unknown>; value: number } => typeof item.value === 'number',
      )
      .sort((a, b) => a.value - b.value);
    const median = measured[Math.floor((measured.length - 1) / 2)];
    // A step whose figure is not a number (a few sockets: RSS may not grow) keeps its first round.
    if (!median && list[0]) results[target] = list[0];
    if (median)
      results[target] =
        rounds > 1 ? { ...median.result, rounds: measured.map((item) => item.value) } : median.result;
  }
  return results;
}

/** Opens rooms through `workers[0]` (the app: the real HTTP flow) and returns them. */
async function openRoomsVia(
  context: Context,
  worker: Worker,
  target: Target,
  count: number,
  timeoutMs: number,
): Promise<OpenRoomsResult> {
  return worker.call<OpenRoomsResult>(
    {
      cmd: 'open-rooms',
      target,
      baseUrl: urlOf(context, target),
      count,
      concurrency: context.options.setupConcurrency,
      timeoutMs,
    },
    timeoutMs + 15_000,
  );
}

/** Splits rooms over the load generators; each connects both devices of its rooms. */
async function connectRooms(
  context: Context,
  target: Target,
  group: string,
  perWorker: BenchRoom[][],
  timeoutMs: number,
): Promise<ConnectResult> {
  const results = await Promise.all(
    context.workers.map((worker, index) =>
      worker.call<ConnectResult>(
        {
          cmd: 'connect',
          group,
          baseUrl: urlOf(context, target),
          rooms: perWorker[index] ?? [],
          concurrency: 64,
          timeoutMs,
        },
        timeoutMs + 15_000,
      ),
    ),
  );
  return {
    connected: results.reduce((sum, result) => sum + result.connected, 0),
    failed: results.reduce((sum, result) => sum + result.failed, 0),
    errors: results.flatMap((result) => result.errors).slice(0, 5),
    ms: Math.max(...results.map((result) => result.ms)),
  };
}

const deal = <T>(items: T[], hands: number): T[][] => {
  const dealt: T[][] = Array.from({ length: hands }, () => []);
  for (const [index, item] of items.entries()) dealt[index % hands]?.push(item);
  return dealt;
};

async function runMessages(
  context: Context,
  target: Target,
  rate: number,
  seconds: number,
): Promise<MessageSummary> {
  const { workers, options } = context;
  const service = context.targets[target];
  const eldUrl = target === 'relay' ? urlOf(context, target) : (service as AppService).adminUrl;
  await eventLoopP99(target, eldUrl); // resets the histogram
  const cpu = await measureCpu(context.cpuGroups);
  const durationMs = Math.round(seconds * 1000);
  const results = await Promise.all(
    workers.map((worker) =>
      worker.call<MessageRunResult>(
        {
          cmd: 'messages',
          group: `messages-${target}`,
          baseUrl: urlOf(context, target),
          rate: rate / workers.length,
          durationMs,
          connections: Math.max(1, Math.ceil(options.connections / workers.length)),
          graceMs: 3_000,
        },
        durationMs + 30_000,
      ),
    ),
  );
  const cpuCores = await cpu();
  const eventLoop = await eventLoopP99(target, eldUrl);
  const failed: Record<string, number> = {};
  for (const result of results) {
    for (const [key, count] of Object.entries(result.failed)) failed[key] = (failed[key] ?? 0) + count;
  }
  const sum = (key: 'sent' | 'acked' | 'delivered' | 'lost' | 'ackedPerSecond') =>
    results.reduce((total, result) => total + result[key], 0);
  return {
    rate,
    sent: sum('sent'),
    acked: sum('acked'),
    failed,
    delivered: sum('delivered'),
    lost: sum('lost'),
    ackedPerSecond: Math.round(sum('ackedPerSecond')),
    delivery: percentiles(results.map((result) => result.delivery)),
    ack: percentiles(results.map((result) => result.ack)),
    schedulerLagP99Ms: percentiles(results.map((result) => result.schedulerLag)).p99Ms,
    eventLoopP99Ms: round(eventLoop, 2),
    slowestWindows: slowestWindows(results.map((result) => result.timeline)),
    cpuCores: Object.fromEntries(
      Object.entries(cpuCores).map(([key, value]) => [key, round(value, 2)]),
    ) as CpuUse,
  };
}

/** Merges the load generators' timelines and keeps the five slowest windows. */
function slowestWindows(timelines: MessageRunResult['timeline'][]): MessageSummary['slowestWindows'] {
  const windows: MessageSummary['slowestWindows'] = [];
  for (const timeline of timelines) {
    timeline.maxMs.forEach((maxMs, index) => {
      const count = timeline.count[index] as number;
      const window = windows[index];
      if (!window) windows[index] = { atS: (index * timeline.windowMs) / 1000, maxMs, count };
      else {
        window.maxMs = Math.max(window.maxMs, maxMs);
        window.count += count;
      }
    });
  }
  return windows
    .filter((window) => window.count > 0)
    .sort((a, b) => b.maxMs - a.maxMs)
    .slice(0, 5);
}

function brief(summary: MessageSummary): string {
  const failures = Object.values(summary.failed).reduce((a, b) => a + b, 0);
  return (
    `${summary.rate}/s: acked ${summary.ackedPerSecond}/s, p50 ${summary.delivery.p50Ms} ms, ` +
    `p99 ${summary.delivery.p99Ms} ms, p99.9 ${summary.delivery.p999Ms} ms, failed ${failures}, lost ${summary.lost}, ` +
    `event loop p99 ${summary.eventLoopP99Ms ?? '—'} ms, cpu ${JSON.stringify(summary.cpuCores)}, ` +
    `slowest 100 ms windows ${summary.slowestWindows.map((window) => `${window.atS} s: ${window.maxMs} ms`).join(', ')}`
  );
}

/** Sets up the message rooms of one target, runs the latency and throughput steps, and lets the sockets go. */
async function messageSteps(
  context: Context,
  target: Target,
  steps: Record<string, unknown>,
  notes: string[],
  deadline: number,
): Promise<void> {
  const { options, workers } = context;
  steps.latency ??= {};
  steps.throughput ??= {};
  const latency = steps.latency as Record<string, unknown>;
  const throughput = steps.throughput as Record<string, unknown>;
  if (!withinBudget()) {
    latency[target] = { skipped: 'time budget used up' };
    throughput[target] = { skipped: 'time budget used up' };
    return;
  }
  const group = `messages-${target}`;
  try {
    log(`messages (${target}): opening ${options.rooms} rooms and connecting both devices of each`);
    const opened = await openRoomsVia(context, workers[0] as Worker, target, options.rooms, 120_000);
    if (opened.rooms.length === 0) throw new Error(`no room could be opened: ${opened.errors.join('; ')}`);
    const connected = await connectRooms(context, target, group, deal(opened.rooms, workers.length), 60_000);
    if (connected.failed > 0) throw new Error(`sockets failed to connect: ${connected.errors.join('; ')}`);
    if (target !== 'relay') {
      // After the rooms exist: analyzed before, the statistics said there were none, and the
      // writer's plan then walked every live room for each batch (a long-running database has
      // its rooms analyzed: each message updates its room, so autovacuum analyzes them often).
      log(`messages (${target}): vacuum, analyze and checkpoint the database`);
      await context.settleDatabase();
    }
    await sleep(500);
    // The relay's path is a few lines; one second warms it.
    const warmup = target !== 'relay' ? options.warmup : Math.min(1, options.warmup);
    if (warmup > 0 && withinBudget()) {
      log(`messages (${target}): warming up at ${options.rate}/s for ${warmup} s (not measured)`);
      await runMessages(context, target, options.rate, warmup);
      await sleep(500);
    }

    if (options.steps.includes('latency')) {
      if (withinBudget()) {
        log(`latency (${target}): ${options.rate} messages/s for ${options.duration} s`);
        const summary = await runMessages(context, target, options.rate, options.duration);
        log(`latency (${target}): ${brief(summary)}`);
        latency[target] = { rooms: opened.rooms.length, ...summary };
      } else latency[target] = { skipped: 'time budget used up' };
    }
    if (options.steps.includes('throughput')) {
      throughput[target] = await stepSearch(context, target, deadline);
    }
  } catch (error) {
    log(`messages (${target}) failed: ${(error as Error).message}`);
    notes.push(`messages (${target}) failed: ${(error as Error).message.split('\n')[0]}`);
    if (options.steps.includes('latency'))
      latency[target] ??= { error: (error as Error).message.split('\n')[0] };
    if (options.steps.includes('throughput'))
      throughput[target] ??= { error: (error as Error).message.split('\n')[0] };
  } finally {
    await Promise.all(
      workers.map((worker) => worker.call({ cmd: 'disconnect', group }, 30_000).catch(() => undefined)),
    );
  }
}

/**
 * Doubles the rate from --start-rate while p99 stays under the limit with every message
 * acknowledged and delivered, then bisects --refine times between the last pass and the first fail.
 */
async function stepSearch(
  context: Context,
  target: Target,
  deadline: number,
): Promise<Record<string, unknown>> {
  const { options } = context;
  // Start another rate only if it can finish (sending, draining, pausing) before the deadline.
  const timeFor = () => Date.now() + options.stepDuration * 1000 + 2_000 < deadline;
  const tried: MessageSummary[] = [];
  const attempt = async (rate: number) => {
    log(`throughput (${target}): trying ${rate}/s for ${options.stepDuration} s`);
    const summary = await runMessages(context, target, rate, options.stepDuration);
    const failures = Object.values(summary.failed).reduce((a, b) => a + b, 0);
    summary.pass = summary.delivery.p99Ms < options.p99LimitMs && failures === 0 && summary.lost === 0;
    log(`throughput (${target}): ${summary.pass ? 'pass' : 'FAIL'} ${brief(summary)}`);
    tried.push(summary);
    await sleep(Math.min(1_000, options.stepDuration * 300)); // let the queues drain before the next rate
    return summary;
  };
  let best: MessageSummary | undefined;
  let worst: MessageSummary | undefined;
  for (let rate = options.startRate; rate <= options.maxRate && timeFor(); rate *= 2) {
    const summary = await attempt(rate);
    if (!summary.pass) {
      worst = summary;
      break;
    }
    best = summary;
  }
  // Below the start rate, halve until something passes.
  for (
    let rate = Math.floor(options.startRate / 2);
    !best && rate >= options.startRate / 16 && timeFor();
    rate = Math.floor(rate / 2)
  ) {
    const summary = await attempt(rate);
    if (summary.pass) best = summary;
    else worst = summary;
  }
  for (let round = 0; round < options.refine && best && worst && timeFor(); round++) {
    const step = Math.max(50, 10 ** Math.floor(Math.log10(Math.max(1, worst.rate - best.rate))) / 2);
    const middle = Math.round((best.rate + worst.rate) / 2 / step) * step;
    if (middle <= best.rate || middle >= worst.rate) break;
    const summary = await attempt(middle);
    if (summary.pass) best = summary;
    else worst = summary;
  }
  return {
    ...(worst ? {} : { stoppedBy: best && best.rate * 2 > options.maxRate ? 'max rate' : 'time budget' }),
    p99LimitMs: options.p99LimitMs,
    stepSeconds: options.stepDuration,
    bestRate: best?.rate ?? null,
    durableMessagesPerSecond: best?.ackedPerSecond ?? null,
    best: best ?? null,
    firstFailingRate: worst?.rate ?? null,
    tried,
  };
}

async function socketStep(context: Context, target: Target): Promise<Record<string, unknown>> {
  const { options, workers } = context;
  const service = context.targets[target] as Service;
  // One process can hold only as many sockets as its open-file limit allows.
  const fds = await fileDescriptors(service.pid);
  const workerFds = await Promise.all(workers.map((worker) => fileDescriptors(worker.pid)));
  const serverRooms = Math.floor((fds.limit - fds.open - 100) / 2);
  const clientRooms = workerFds.reduce(
    (sum, item) => sum + Math.floor((item.limit - item.open - 100) / 2),
    0,
  );
  const rooms = Math.max(0, Math.min(options.socketRooms, serverRooms, clientRooms));
  const cappedBy =
    rooms < options.socketRooms
      ? `open-file limit (RLIMIT_NOFILE ${fds.limit} for the ${target} process, ${workerFds[0]?.limit} per load generator; it cannot be raised here)`
      : null;
  if (cappedBy)
    log(`sockets (${target}): ${options.socketRooms} rooms asked, ${rooms} possible: ${cappedBy}`);

  const setupMs = Math.max(60_000, rooms * 40);
  const started = Date.now();
  const opened = await Promise.all(
    deal(
      Array.from({ length: rooms }, (_, index) => index),
      workers.length,
    ).map((share, index) => openRoomsVia(context, workers[index] as Worker, target, share.length, setupMs)),
  );
  const openMs = Date.now() - started;
  const openedRooms = opened.reduce((sum, item) => sum + item.rooms.length, 0);
  log(`sockets (${target}): ${openedRooms} rooms opened in ${(openMs / 1000).toFixed(1)} s`);
  await sleep(1_000);
  const rssBefore = await rssOf(service.pid);
  const group = `idle-${target}`;
  try {
    const connected = await connectRooms(
      context,
      target,
      group,
      opened.map((item) => item.rooms),
      Math.max(60_000, rooms * 10),
    );
    log(
      `sockets (${target}): ${connected.connected} connected in ${(connected.ms / 1000).toFixed(1)} s (${connected.failed} failed)`,
    );
    const holdStarted = Date.now();
    await sleep(options.hold * 1000);
    const stats = await Promise.all(
      workers.map((worker) => worker.call<SocketStats>({ cmd: 'socket-stats', group }, 10_000)),
    );
    const open = stats.reduce((sum, item) => sum + item.open, 0);
    const pings = stats.reduce((sum, item) => sum + item.pings, 0);
    const rssAfter = await rssOf(service.pid);
    const counted = target !== 'relay' ? await appOpenSockets((service as AppService).adminUrl) : null;
    return {
      roomsAsked: options.socketRooms,
      rooms: openedRooms,
      roomSetupSeconds: round(openMs / 1000, 1),
      roomsPerSecond: round(openedRooms / (openMs / 1000), 0),
      roomSetupErrors: opened.flatMap((item) => item.errors).slice(0, 5),
      cappedBy,
      connected: connected.connected,
      connectFailed: connected.failed,
      connectSeconds: round(connected.ms / 1000, 1),
      heldSeconds: round((Date.now() - holdStarted) / 1000, 1),
      openAfterHold: open,
      appCountsOpen: counted,
      pingsReceived: pings,
      rssBeforeMB: round(rssBefore / MB, 1),
      rssAfterMB: round(rssAfter / MB, 1),
      // With few sockets a collection in between can make the difference negative: not a figure.
      rssPerSocketKB:
        open > 0 && rssAfter > rssBefore ? round((rssAfter - rssBefore) / open / 1024, 2) : null,
    };
  } finally {
    await Promise.all(
      workers.map((worker) => worker.call({ cmd: 'disconnect', group }, 120_000).catch(() => undefined)),
    );
    await sleep(1_000);
  }
}

function cannonSummary(result: CannonResult): Record<string, unknown> {
  return {
    requestsPerSecond: Math.round(result.requestsPerSecond),
    p50Ms: result.p50Ms,
    p99Ms: result.p99Ms,
    maxMs: result.maxMs,
    ok: result.ok,
    failed: result.non2xx + result.errors + result.timeouts,
    seconds: result.durationS,
  };
}

async function cannon(
  context: Context,
  url: string,
  connections: number,
  extra: { method?: string; headers?: Record<string, string>; body?: Buffer } = {},
): Promise<{ result: CannonResult; cpu: CpuUse }> {
  const cpu = await measureCpu(context.cpuGroups);
  const result = await (context.workers[0] as Worker).call<CannonResult>(
    {
      cmd: 'cannon',
      url,
      connections,
      durationS: context.options.cannonDuration,
      ...(extra.method ? { method: extra.method } : {}),
      ...(extra.headers ? { headers: extra.headers } : {}),
      ...(extra.body ? { bodyBase64: extra.body.toString('base64') } : {}),
    },
    context.options.cannonDuration * 1000 + 30_000,
  );
  const use = await cpu();
  return {
    result,
    cpu: Object.fromEntries(Object.entries(use).map(([key, value]) => [key, round(value, 2)])) as CpuUse,
  };
}

/** One room of the target, opened through the real flow (app) or made up (relay). */
async function oneRoom(context: Context, target: Target): Promise<BenchRoom> {
  const opened = await openRoomsVia(context, context.workers[0] as Worker, target, 1, 30_000);
  const room = opened.rooms[0];
  if (!room) throw new Error(`could not open a room: ${opened.errors.join('; ')}`);
  return room;
}

const PAGE_MESSAGES = 50;

async function pageStep(context: Context, target: Target): Promise<Record<string, unknown>> {
  const worker = context.workers[0] as Worker;
  const baseUrl = urlOf(context, target);
  const room = await oneRoom(context, target);
  if (target !== 'relay') {
    await worker.call({ cmd: 'fill-room', baseUrl, room, count: PAGE_MESSAGES }, 60_000);
  }
  const page = await worker.call<ProbeResult>(
    { cmd: 'probe', baseUrl, method: 'GET', path: `/rooms/${room.code}`, headers: { cookie: room.host } },
    30_000,
  );
  if (page.status !== 200) throw new Error(`the room page answered ${page.status}`);
  const messagesOnPage = (page.body.match(/<li id="msg-/g) ?? []).length;
  const { result, cpu } = await cannon(
    context,
    `${baseUrl}/rooms/${room.code}`,
    context.options.pageConnections,
    {
      headers: { cookie: room.host },
    },
  );
  return {
    messagesOnPage,
    pageBytes: page.bytes,
    connections: context.options.pageConnections,
    ...cannonSummary(result),
    cpuCores: cpu,
  };
}

async function healthStep(context: Context, target: Target): Promise<Record<string, unknown>> {
  const { result, cpu } = await cannon(
    context,
    `${urlOf(context, target)}/health`,
    context.options.healthConnections,
  );
  return { connections: context.options.healthConnections, ...cannonSummary(result), cpuCores: cpu };
}

let jpeg: Buffer | undefined;

/** A noisy JPEG of about 1 MB (noise keeps the encoder from making it small). */
async function oneMegabyteJpeg(): Promise<Buffer> {
  if (jpeg) return jpeg;
  let side = 1000;
  let image = Buffer.alloc(0);
  for (let attempt = 0; attempt < 6; attempt++) {
    image = await sharp({
      create: {
        width: side,
        height: side,
        channels: 3,
        background: '#808080',
        noise: { type: 'gaussian', mean: 128, sigma: 40 },
      },
    })
      .jpeg({ quality: 85 })
      .toBuffer();
    if (Math.abs(image.length - MB) < MB / 20) break;
    side = Math.round(side * Math.sqrt(MB / image.length));
  }
  jpeg = image;
  return image;
}

function multipart(file: Buffer): { body: Buffer; contentType: string } {
  const boundary = `----ccc-bench-${Date.now().toString(16)}`;
  const head = Buffer.from(
    `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="photo.jpg"\r\nContent-Type: image/jpeg\r\n\r\n`,
  );
  const tail = Buffer.from(`\r\n--${boundary}--\r\n`);
  return {
    body: Buffer.concat([head, file, tail]),
    contentType: `multipart/form-data; boundary=${boundary}`,
  };
}

async function uploadStep(context: Context, target: Target): Promise<Record<string, unknown>> {
  const worker = context.workers[0] as Worker;
  const baseUrl = urlOf(context, target);
  const image = await oneMegabyteJpeg();
  const { body, contentType } = multipart(image);
  const room = await oneRoom(context, target);
  const path = `/rooms/${room.code}/attachments`;
  const headers = { cookie: room.host, 'content-type': contentType, 'hx-request': 'true' };
  const probe = await worker.call<ProbeResult>(
    { cmd: 'probe', baseUrl, method: 'POST', path, headers, bodyBase64: body.toString('base64') },
    60_000,
  );
  if (probe.status === 404) {
    return {
      available: false,
      reason: `POST ${'/rooms/{CODE}/attachments'} answered 404 (the route is not merged yet)`,
      imageBytes: image.length,
    };
  }
  if (probe.status >= 400) {
    return {
      available: false,
      reason: `POST /rooms/{CODE}/attachments answered ${probe.status}`,
      imageBytes: image.length,
    };
  }
  const { result, cpu } = await cannon(context, `${baseUrl}${path}`, context.options.uploadConnections, {
    method: 'POST',
    headers,
    body,
  });
  return {
    available: true,
    imageBytes: image.length,
    connections: context.options.uploadConnections,
    uploadsPerSecond: round(result.requestsPerSecond, 1),
    ...cannonSummary(result),
    cpuCores: cpu,
  };
}

type Figures = Record<string, Record<string, unknown> | undefined>;

/**
 * The table (and the `targets` verdicts) from the step results: the app beside `other`, the bare
 * relay (the floor) or, in an A/B run, the baseline.
 */
function summarize(report: Record<string, unknown>, other: Target): Row[] {
  const steps = report.steps as Record<string, Figures>;
  const get = (step: string, target: Target): Record<string, unknown> | undefined => steps[step]?.[target];
  const num = (value: unknown): number | null => (typeof value === 'number' ? value : null);
  const rows: Row[] = [];
  const verdicts: Record<string, unknown>[] = [];
  /** A row with a target: its verdict also goes into `report.targets`. */
  const checked = (
    figure: string,
    app: number | null,
    other: unknown,
    target: string,
    name: string,
    meets: (value: number) => boolean,
  ) => {
    const met = app !== null && meets(app);
    verdicts.push({ name, target, measured: app, met });
    return row(figure, app, other, target, met);
  };

  const appBest = get('throughput', 'app');
  const otherBest = get('throughput', other);
  if (appBest || otherBest) {
    const appRate = num(appBest?.durableMessagesPerSecond);
    const appP99 = num((appBest?.best as MessageSummary | null)?.delivery.p99Ms);
    rows.push(
      checked(
        `messages/s, p99 < ${(appBest?.p99LimitMs as number) ?? 50} ms (acked after commit)`,
        appRate,
        num(otherBest?.durableMessagesPerSecond),
        '≥ 5,000',
        'durable messages/s with p99 < 50 ms',
        (value) => value >= 5000,
      ),
      row('  p99 at that rate, ms', appP99, num((otherBest?.best as MessageSummary | null)?.delivery.p99Ms)),
      row(
        '  event-loop p99 at that rate, ms',
        num((appBest?.best as MessageSummary | null)?.eventLoopP99Ms),
        num((otherBest?.best as MessageSummary | null)?.eventLoopP99Ms),
      ),
    );
  }
  const appLatency = get('latency', 'app') as (MessageSummary & Record<string, unknown>) | undefined;
  const otherLatency = get('latency', other) as (MessageSummary & Record<string, unknown>) | undefined;
  if (appLatency || otherLatency) {
    const rate = appLatency?.rate ?? otherLatency?.rate;
    const p99 = num(appLatency?.delivery?.p99Ms);
    rows.push(
      row(`p50 at ${rate}/s, ms`, num(appLatency?.delivery?.p50Ms), num(otherLatency?.delivery?.p50Ms)),
      checked(
        `p99 at ${rate}/s, ms`,
        p99,
        num(otherLatency?.delivery?.p99Ms),
        '< 15',
        `p99 at ${rate} messages/s`,
        (value) => value < 15,
      ),
      row(`p99.9 at ${rate}/s, ms`, num(appLatency?.delivery?.p999Ms), num(otherLatency?.delivery?.p999Ms)),
      row(
        `event-loop p99 at ${rate}/s, ms`,
        num(appLatency?.eventLoopP99Ms),
        num(otherLatency?.eventLoopP99Ms),
      ),
      // The process's own CPU time at the same offered rate: its cost per message.
      row(
        `process CPU at ${rate}/s, cores`,
        num(appLatency?.cpuCores?.app),
        num(otherLatency?.cpuCores?.[other]),
      ),
    );
  }
  const appSockets = get('sockets', 'app');
  const otherSockets = get('sockets', other);
  if (appSockets || otherSockets) {
    const open = num(appSockets?.openAfterHold);
    const rss = num(appSockets?.rssAfterMB);
    rows.push(
      checked(
        'idle sockets held',
        open,
        num(otherSockets?.openAfterHold),
        '20,000',
        'open sockets in one process',
        (value) => value >= 20_000,
      ),
      checked(
        '  RSS with them, MB',
        rss,
        num(otherSockets?.rssAfterMB),
        '≤ 500',
        'RSS with the sockets',
        (value) => value <= 500,
      ),
      row('  RSS per socket, KB', num(appSockets?.rssPerSocketKB), num(otherSockets?.rssPerSocketKB)),
    );
  }
  const appPage = get('page', 'app');
  const otherPage = get('page', other);
  if (appPage || otherPage) {
    const rps = num(appPage?.requestsPerSecond);
    const p99 = num(appPage?.p99Ms);
    rows.push(
      checked(
        'room page (50 messages), requests/s',
        rps,
        num(otherPage?.requestsPerSecond),
        '≥ 2,000',
        'room page requests/s',
        (value) => value >= 2000,
      ),
      checked('  p99, ms', p99, num(otherPage?.p99Ms), '< 50', 'room page p99', (value) => value < 50),
    );
  }
  const appHealth = get('health', 'app');
  const otherHealth = get('health', other);
  if (appHealth || otherHealth) {
    const rps = num(appHealth?.requestsPerSecond);
    rows.push(
      checked(
        '/health requests/s',
        rps,
        num(otherHealth?.requestsPerSecond),
        '≥ 15,000',
        '/health requests/s',
        (value) => value >= 15_000,
      ),
    );
  }
  const appUpload = get('upload', 'app');
  const otherUpload = get('upload', other);
  if (appUpload || otherUpload) {
    rows.push(
      row(
        '1 MB image uploads/s',
        appUpload?.available === false ? 'not available' : num(appUpload?.uploadsPerSecond),
        num(otherUpload?.uploadsPerSecond),
      ),
    );
  }
  report.targets = verdicts;
  report.ratios = {
    durableMessagesPerSecond: ratio(
      num(appBest?.durableMessagesPerSecond),
      num(otherBest?.durableMessagesPerSecond),
    ),
    latencyP50: ratio(num(appLatency?.delivery?.p50Ms), num(otherLatency?.delivery?.p50Ms)),
    latencyP99: ratio(num(appLatency?.delivery?.p99Ms), num(otherLatency?.delivery?.p99Ms)),
    latencyP999: ratio(num(appLatency?.delivery?.p999Ms), num(otherLatency?.delivery?.p999Ms)),
    eventLoopP99: ratio(num(appLatency?.eventLoopP99Ms), num(otherLatency?.eventLoopP99Ms)),
    rssPerSocket: ratio(num(appSockets?.rssPerSocketKB), num(otherSockets?.rssPerSocketKB)),
    pageRequestsPerSecond: ratio(num(appPage?.requestsPerSecond), num(otherPage?.requestsPerSecond)),
    healthRequestsPerSecond: ratio(num(appHealth?.requestsPerSecond), num(otherHealth?.requestsPerSecond)),
    uploadsPerSecond: ratio(num(appUpload?.uploadsPerSecond), num(otherUpload?.uploadsPerSecond)),
  };
  return rows;
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    process.stderr.write(`bench failed: ${(error as Error)?.stack ?? String(error)}\n`);
    process.exit(1);
  },
);
