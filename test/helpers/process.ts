import { type ChildProcess, spawn } from 'node:child_process';
import { projectPath } from '../../src/paths.ts';

export type AppProcess = {
  child: ChildProcess;
  /** Every line the process printed (stdout and stderr). */
  lines: string[];
  /** Resolves with the first JSON log line whose msg matches. */
  waitForLog(msg: string | RegExp, timeoutMs?: number): Promise<Record<string, unknown>>;
  /** Sends a signal and resolves with the exit code and how long the exit took. */
  stop(signal?: NodeJS.Signals): Promise<{ code: number | null; ms: number }>;
  exited: Promise<number | null>;
};

/** Runs src/main.ts as operators run it, with exactly the given environment (plus PATH/HOME). */
export function startAppProcess(env: Record<string, string>, nodeArgs: string[] = []): AppProcess {
  return startNodeProcess(projectPath('src', 'main.ts'), env, nodeArgs);
}

/** Runs an entry point of this project in its own node process (TypeScript through tsx; built .js as is). */
export function startNodeProcess(
  script: string,
  env: Record<string, string>,
  nodeArgs: string[] = [],
  nodePath = process.execPath,
): AppProcess {
  const loader = script.endsWith('.ts') ? ['--import', 'tsx'] : [];
  const child = spawn(nodePath, [...nodeArgs, ...loader, script], {
    cwd: projectPath(),
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  // A test that fails before stopping its process must not leave it running (or the run hanging).
  const killOnExit = () => child.kill('SIGKILL');
  process.once('exit', killOnExit);
  child.once('exit', () => process.removeListener('exit', killOnExit));
  const lines: string[] = [];
  const waiters: {
    match: (line: Record<string, unknown>) => boolean;
    resolve: (v: Record<string, unknown>) => void;
  }[] = [];
  const onLine = (line: string) => {
    lines.push(line);
    if (process.env.TEST_LOG_ECHO) process.stderr.write(`${line}\n`);
    let parsed: Record<string, unknown>;
    try {
      parsed = JSON.parse(line);
    } catch {
      return;
    }
    for (const waiter of [...waiters]) {
      if (waiter.match(parsed)) {
        waiters.splice(waiters.indexOf(waiter), 1);
        waiter.resolve(parsed);
      }
    }
  };
  for (const stream of [child.stdout, child.stderr]) {
    let buffer = '';
    stream?.setEncoding('utf8');
    stream?.on('data', (chunk: string) => {
      buffer += chunk;
      let newline = buffer.indexOf('\n');
      while (newline !== -1) {
        onLine(buffer.slice(0, newline));
        buffer = buffer.slice(newline + 1);
        newline = buffer.indexOf('\n');
      }
    });
  }
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return {
    child,
    lines,
    exited,
    waitForLog(msg, timeoutMs = 30_000) {
      const existing = lines
        .map((line) => {
          try {
            return JSON.parse(line) as Record<string, unknown>;
          } catch {
            return undefined;
          }
        })
        .find((line) => line && (typeof msg === 'string' ? line.msg === msg : msg.test(String(line.msg))));
      if (existing) return Promise.resolve(existing);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`no log "${msg}" within ${timeoutMs} ms; output:\n${lines.join('\n')}`)),
          timeoutMs,
        );
        void exited.then((code) => {
          clearTimeout(timer);
          reject(new Error(`process exited (${code}) before logging "${msg}"; output:\n${lines.join('\n')}`));
        });
        waiters.push({
          match: (line) => (typeof msg === 'string' ? line.msg === msg : msg.test(String(line.msg))),
          resolve: (value) => {
            clearTimeout(timer);
            resolve(value);
          },
        });
      });
    },
    async stop(signal = 'SIGTERM') {
      const started = Date.now();
      if (child.exitCode === null) child.kill(signal);
      const code = await exited;
      return { code, ms: Date.now() - started };
    },
  };
}

/** Runs one of scripts/*.ts to its end; stdout and stderr together, in order. */
export function runScript(
  name: string,
  env: Record<string, string>,
): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', projectPath('scripts', `${name}.ts`)], {
      env: { PATH: process.env.PATH ?? '', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (chunk) => {
      output += chunk;
    });
    child.stderr.on('data', (chunk) => {
      output += chunk;
    });
    child.on('exit', (code) => resolve({ code, output }));
  });
}
