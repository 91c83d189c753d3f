/**
 * The floor for the benchmark: a bare relay with no database, no encryption, no templates and no
 * bus. HTTP POST in, WebSocket push out, on the same routes and with the same cookie-per-device
 * shape as the app, so the load generator drives both the same way. Also serves a static room
 * page, /health, an upload sink and its own event-loop delay (GET /eld, reset on read).
 *
 *   RELAY_PORT=0 node --import tsx scripts/bench/relay.ts
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { type WebSocket, WebSocketServer } from 'ws';

type Peer = { socket: WebSocket; slot: number; tab: string | null; alive: boolean };

const rooms = new Map<string, Set<Peer>>();
// Sampled every 10 ms, like the app's (prom-client); the delay is each interval minus those 10 ms.
const EVENT_LOOP_RESOLUTION_MS = 10;
const eventLoop = monitorEventLoopDelay({ resolution: EVENT_LOOP_RESOLUTION_MS });
eventLoop.enable();

const escapeHtml = (text: string) => text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

const fragment = (seq: number, text: string, mine: boolean) =>
  `<li id="msg-${seq}" class="message ${mine ? 'message-mine' : 'message-theirs'}"><div class="bubble">` +
  `<p class="message-text">${escapeHtml(text)}</p></div></li>`;

// A room page of about the app's size: a layout and 50 messages, rendered once.
const PAGE = `<!doctype html><html><head><title>Room</title></head><body><ol>${Array.from(
  { length: 50 },
  (_, index) =>
    fragment(index + 1, `message number ${index + 1} of the relay's static room page`, index % 2 === 0),
).join('\n')}</ol></body></html>`;

const slotOf = (request: http.IncomingMessage) => {
  const match = /(?:^|;\s*)ccc_device=relay\.(\d)/.exec(request.headers.cookie ?? '');
  return match ? Number(match[1]) : 0;
};

let seq = 0;

function readBody(request: http.IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => resolve(Buffer.concat(chunks)));
    request.on('error', reject);
  });
}

function reply(response: http.ServerResponse, status: number, type: string, body: string): void {
  response.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body) });
  response.end(body);
}

const server = http.createServer((request, response) => {
  const url = request.url ?? '/';
  const route = /^\/rooms\/([A-Za-z0-9]+)(\/messages|\/attachments)?$/.exec(url);
  if (request.method === 'GET' && url === '/health') {
    reply(response, 200, 'application/json', '{"status":"ok"}');
  } else if (request.method === 'GET' && url === '/eld') {
    const ms = (ns: number) => Math.max(0, ns / 1e6 - EVENT_LOOP_RESOLUTION_MS);
    const body = JSON.stringify({
      p50Ms: ms(eventLoop.percentile(50)),
      p99Ms: ms(eventLoop.percentile(99)),
      maxMs: ms(eventLoop.max),
    });
    eventLoop.reset();
    reply(response, 200, 'application/json', body);
  } else if (route && request.method === 'GET' && !route[2]) {
    reply(response, 200, 'text/html; charset=utf-8', PAGE);
  } else if (route && request.method === 'POST' && route[2] === '/messages') {
    const code = route[1] as string;
    const slot = slotOf(request);
    const tab = request.headers['x-tab-id'] ?? null;
    void readBody(request).then((raw) => {
      const text = new URLSearchParams(raw.toString('utf8')).get('body') ?? '';
      seq += 1;
      const rendered = new Map<boolean, string>();
      for (const peer of rooms.get(code) ?? []) {
        // Like the app: the sending page gets its message in the answer, not on its socket.
        if (tab !== null && peer.tab === tab && peer.slot === slot) continue;
        const mine = peer.slot === slot;
        let html = rendered.get(mine);
        if (html === undefined) {
          html = fragment(seq, text, mine);
          rendered.set(mine, html);
        }
        peer.socket.send(html);
      }
      reply(response, 200, 'text/html; charset=utf-8', fragment(seq, text, true));
    });
  } else if (route && request.method === 'POST' && route[2] === '/attachments') {
    void readBody(request).then((raw) => reply(response, 200, 'application/json', `{"bytes":${raw.length}}`));
  } else {
    reply(response, 404, 'text/plain', 'not found');
  }
});
server.keepAliveTimeout = 10_000;

const wss = new WebSocketServer({ noServer: true, maxPayload: 16 * 1024 });
server.on('upgrade', (request, socket, head) => {
  const match = /^\/rooms\/([A-Za-z0-9]+)\/ws(?:\?.*)?$/.exec(request.url ?? '');
  const slot = slotOf(request);
  if (!match || slot === 0) {
    socket.destroy();
    return;
  }
  const code = match[1] as string;
  const tab = new URL(request.url ?? '/', 'http://relay').searchParams.get('tab');
  wss.handleUpgrade(request, socket, head, (ws) => {
    const peer: Peer = { socket: ws, slot, tab, alive: true };
    let peers = rooms.get(code);
    if (!peers) {
      peers = new Set();
      rooms.set(code, peers);
    }
    peers.add(peer);
    ws.on('pong', () => {
      peer.alive = true;
    });
    ws.on('error', () => ws.terminate());
    ws.on('close', () => {
      peers.delete(peer);
      if (peers.size === 0) rooms.delete(code);
    });
  });
});

// Heartbeats as the app runs them: ping every 30 s, drop a peer that did not answer the last one.
setInterval(() => {
  for (const peers of rooms.values()) {
    for (const peer of peers) {
      if (!peer.alive) {
        peer.socket.terminate();
        continue;
      }
      peer.alive = false;
      peer.socket.ping();
    }
  }
}, 30_000).unref();

server.listen(Number(process.env.RELAY_PORT ?? 0), '127.0.0.1', () => {
  const { port } = server.address() as AddressInfo;
  process.stdout.write(`${JSON.stringify({ msg: 'listening', url: `http://127.0.0.1:${port}` })}\n`);
});
process.on('SIGTERM', () => {
  for (const client of wss.clients) client.terminate();
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 2_000).unref();
});
