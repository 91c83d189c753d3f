import http from 'node:http';
import net from 'node:net';

export type HttpResponse = { status: number; headers: http.IncomingHttpHeaders; body: string };

export type RequestOptions = {
  headers?: Record<string, string>;
  /** A form (sent urlencoded) or a raw body. */
  form?: Record<string, string>;
  body?: Buffer | string;
  timeoutMs?: number;
};

/** A small keep-alive HTTP/1.1 client over a bounded pool of loopback connections. */
export class HttpClient {
  private readonly agent: http.Agent;
  private readonly host: string;
  private readonly port: number;

  constructor(baseUrl: string, connections: number) {
    const url = new URL(baseUrl);
    this.host = url.hostname;
    this.port = Number(url.port);
    this.agent = new http.Agent({ keepAlive: true, maxSockets: connections, scheduling: 'fifo' });
  }

  request(method: string, path: string, options: RequestOptions = {}): Promise<HttpResponse> {
    const headers: Record<string, string> = { 'user-agent': 'ccc-bench/1.0', ...options.headers };
    let body = options.body;
    if (options.form) {
      body = new URLSearchParams(options.form).toString();
      headers['content-type'] = 'application/x-www-form-urlencoded';
    }
    if (body !== undefined) headers['content-length'] = String(Buffer.byteLength(body));
    else if (method === 'POST') headers['content-length'] = '0';
    return new Promise((resolve, reject) => {
      const request = http.request(
        { agent: this.agent, host: this.host, port: this.port, method, path, headers },
        (response) => {
          const chunks: Buffer[] = [];
          response.on('data', (chunk: Buffer) => chunks.push(chunk));
          response.on('end', () =>
            resolve({
              status: response.statusCode ?? 0,
              headers: response.headers,
              body: Buffer.concat(chunks).toString('utf8'),
            }),
          );
          response.on('error', reject);
        },
      );
      request.setTimeout(options.timeoutMs ?? 10_000, () =>
        request.destroy(new Error(`${method} ${path}: no answer in time`)),
      );
      request.on('error', reject);
      request.end(body);
    });
  }

  close(): void {
    this.agent.destroy();
  }
}

type Pending = {
  text: string;
  resolve: (status: number) => void;
  reject: (error: Error) => void;
  timeoutMs: number;
};

const HEADER_END = Buffer.from('\r\n\r\n');
const CHUNKED_END = Buffer.from('0\r\n\r\n');

/** One keep-alive connection of a LeanHttpPool: one request at a time. */
class LeanConnection {
  readonly socket: net.Socket;
  private current: Pending | undefined;
  private timer: NodeJS.Timeout | undefined;
  private buffer: Buffer = Buffer.alloc(0);
  connected = false;

  constructor(
    host: string,
    port: number,
    onReady: (connection: LeanConnection) => void,
    onGone: (connection: LeanConnection) => void,
  ) {
    this.socket = net.connect({ host, port, noDelay: true });
    this.socket.once('connect', () => {
      this.connected = true;
      onReady(this);
    });
    this.socket.on('data', (chunk: Buffer) => {
      if (this.read(chunk)) onReady(this);
    });
    this.socket.on('error', () => undefined);
    this.socket.on('close', () => {
      this.finish(new Error('connection closed'));
      onGone(this);
    });
  }

  send(request: Pending): void {
    this.current = request;
    this.timer = setTimeout(() => this.socket.destroy(), request.timeoutMs);
    this.socket.write(request.text);
  }

  /** True when an answer is complete and the connection can take the next request. */
  private read(chunk: Buffer): boolean {
    this.buffer = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk]);
    const headEnd = this.buffer.indexOf(HEADER_END);
    if (headEnd < 0 || !this.current) return false;
    const head = this.buffer.toString('latin1', 0, headEnd);
    const length = /\r\ncontent-length:\s*(\d+)/i.exec(head);
    if (length) {
      if (this.buffer.length - headEnd - 4 < Number(length[1])) return false;
    } else if (/\r\ntransfer-encoding:\s*chunked/i.test(head)) {
      const end = this.buffer.lastIndexOf(CHUNKED_END);
      if (end < headEnd || end !== this.buffer.length - CHUNKED_END.length) return false;
    }
    this.finish(undefined, Number(head.slice(9, 12)));
    if (/\r\nconnection:\s*close/i.test(head)) {
      this.socket.destroy();
      return false;
    }
    return true;
  }

  private finish(error?: Error, status?: number): void {
    const request = this.current;
    this.current = undefined;
    this.buffer = Buffer.alloc(0);
    clearTimeout(this.timer);
    if (!request) return;
    if (error) request.reject(error);
    else request.resolve(status as number);
  }
}

/**
 * A lean keep-alive HTTP/1.1 client for the message load: requests are written as prepared text,
 * answers read just far enough for their status and length. Node's http client costs the load
 * generator several times more CPU per request, CPU the app would then not have (they share the
 * machine). One request at a time per connection (no pipelining), as browsers do.
 */
export class LeanHttpPool {
  private readonly idle: LeanConnection[] = [];
  private readonly all = new Set<LeanConnection>();
  private readonly queue: Pending[] = [];

  constructor(
    private readonly host: string,
    private readonly port: number,
    private readonly size: number,
  ) {}

  /** POSTs an urlencoded `body`; resolves with the status once the whole answer is read. */
  post(path: string, headers: Record<string, string>, body: string, timeoutMs = 10_000): Promise<number> {
    let text = `POST ${path} HTTP/1.1\r\nhost: ${this.host}:${this.port}\r\n`;
    for (const [name, value] of Object.entries(headers)) text += `${name}: ${value}\r\n`;
    text += `content-type: application/x-www-form-urlencoded\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
    return new Promise((resolve, reject) => {
      this.queue.push({ text, resolve, reject, timeoutMs });
      this.pump();
    });
  }

  /**
   * Opens every connection of the pool (before a run's clock starts, as a browser holds its
   * keep-alive connection before the user types): otherwise the first messages of a run pay for
   * a burst of TCP handshakes and the app's accepts, which no sustained rate has.
   */
  async open(): Promise<void> {
    const opening: Promise<void>[] = [];
    while (this.all.size < this.size) opening.push(new Promise((resolve) => this.add(resolve)));
    await Promise.all(opening);
  }

  close(): void {
    for (const connection of this.all) connection.socket.destroy();
  }

  private add(onFirstReady?: () => void): void {
    let opened = onFirstReady;
    this.all.add(
      new LeanConnection(
        this.host,
        this.port,
        (ready) => {
          opened?.();
          opened = undefined;
          this.idle.push(ready);
          this.pump();
        },
        (gone) => {
          opened?.();
          opened = undefined;
          this.all.delete(gone);
          const index = this.idle.indexOf(gone);
          if (index >= 0) this.idle.splice(index, 1);
          // Nobody listening: fail what waits instead of reconnecting for ever.
          if (!gone.connected) {
            for (const request of this.queue.splice(0)) request.reject(new Error('connection refused'));
          }
          this.pump();
        },
      ),
    );
  }

  private pump(): void {
    while (this.queue.length > 0) {
      const connection = this.idle.pop();
      if (connection) connection.send(this.queue.shift() as Pending);
      else {
        if (this.all.size < this.size) this.add();
        return;
      }
    }
  }
}
