import type { FastifyInstance, InjectOptions, LightMyRequestResponse } from 'fastify';

/** A cookie jar as a `Cookie` request header (for requests made outside the clients). */
export function cookieHeader(jar: { cookies: Map<string, string> }): string {
  return [...jar.cookies].map(([name, value]) => `${name}=${value}`).join('; ');
}

/**
 * A browser-like client over `app.inject`: keeps cookies between requests, like curl with a
 * cookie jar. Each instance is one device.
 */
export class Client {
  readonly cookies = new Map<string, string>();

  constructor(
    private readonly app: FastifyInstance,
    private readonly defaults: { remoteAddress?: string; headers?: Record<string, string> } = {},
  ) {}

  async request(options: InjectOptions & { form?: Record<string, string> }): Promise<LightMyRequestResponse> {
    const { form, ...rest } = options;
    const headers: Record<string, string> = {
      'user-agent': 'test-client/1.0',
      ...this.defaults.headers,
      ...(rest.headers as Record<string, string> | undefined),
    };
    let payload = rest.payload;
    if (form) {
      headers['content-type'] = 'application/x-www-form-urlencoded';
      payload = new URLSearchParams(form).toString();
    }
    const response = await this.app.inject({
      ...rest,
      ...(payload !== undefined ? { payload } : {}),
      headers,
      cookies: { ...Object.fromEntries(this.cookies), ...(rest.cookies ?? {}) },
      remoteAddress: rest.remoteAddress ?? this.defaults.remoteAddress ?? '127.0.0.1',
    });
    for (const cookie of response.cookies as { name: string; value: string; maxAge?: number }[]) {
      if (cookie.maxAge === 0 || cookie.value === '') this.cookies.delete(cookie.name);
      else this.cookies.set(cookie.name, cookie.value);
    }
    return response;
  }

  get(url: string, options: Partial<InjectOptions> = {}) {
    return this.request({ ...options, method: 'GET', url });
  }

  post(url: string, form: Record<string, string> = {}, options: Partial<InjectOptions> = {}) {
    return this.request({ ...options, method: 'POST', url, form });
  }
}

export type SimpleResponse = { statusCode: number; headers: Record<string, string>; body: string };

/**
 * The same kind of client over real HTTP (fetch), for servers in other processes. Redirects are
 * not followed, so tests see the 303s.
 */
export class HttpClient {
  readonly cookies = new Map<string, string>();

  constructor(private readonly baseUrl: string) {}

  async request(
    method: string,
    url: string,
    form?: Record<string, string>,
    headers: Record<string, string> = {},
  ) {
    const response = await fetch(new URL(url, this.baseUrl), {
      method,
      redirect: 'manual',
      headers: {
        'user-agent': 'test-http-client/1.0',
        ...(this.cookies.size > 0 ? { cookie: cookieHeader(this) } : {}),
        ...(form ? { 'content-type': 'application/x-www-form-urlencoded' } : {}),
        ...headers,
      },
      ...(form ? { body: new URLSearchParams(form).toString() } : {}),
    });
    for (const line of response.headers.getSetCookie()) {
      const [pair = ''] = line.split(';');
      const index = pair.indexOf('=');
      this.cookies.set(pair.slice(0, index), pair.slice(index + 1));
    }
    const result: SimpleResponse = {
      statusCode: response.status,
      headers: Object.fromEntries(response.headers),
      body: await response.text(),
    };
    return result;
  }

  get(url: string, headers: Record<string, string> = {}) {
    return this.request('GET', url, undefined, headers);
  }

  post(url: string, form: Record<string, string> = {}, headers: Record<string, string> = {}) {
    return this.request('POST', url, form, headers);
  }
}

/** Opens a room over real HTTP: the host on one server, the guest on another (or the same). */
export async function openRoomOverHttp(hostBaseUrl: string, guestBaseUrl = hostBaseUrl) {
  const host = new HttpClient(hostBaseUrl);
  const created = await host.post('/rooms');
  if (created.statusCode !== 303) throw new Error(`create failed: ${created.statusCode}`);
  const code = String(created.headers.location).split('/').pop() as string;
  const hostName = offeredNames((await host.get(`/rooms/${code}`)).body)[0] as string;
  if ((await host.post(`/rooms/${code}/activate`, { name: hostName })).statusCode !== 303)
    throw new Error('activate failed');
  const guest = new HttpClient(guestBaseUrl);
  const guestName = offeredNames((await guest.get(`/join?code=${code}`)).body)[0] as string;
  if ((await guest.post(`/rooms/${code}/join`, { name: guestName })).statusCode !== 303)
    throw new Error('join failed');
  return { code, host, guest, hostName, guestName };
}

/** The display names offered as radio inputs named `name`. */
export function offeredNames(html: string): string[] {
  return [...html.matchAll(/<input type="radio" name="name" value="([^"]+)"/g)].map(
    (match) => match[1] as string,
  );
}

/** Host creates and activates a room; a guest joins. Returns both clients and the code. */
export async function openRoom(app: FastifyInstance, options: { guest?: boolean } = {}) {
  const host = new Client(app, { remoteAddress: '192.0.2.10' });
  const created = await host.post('/rooms');
  if (created.statusCode !== 303) throw new Error(`create failed: ${created.statusCode} ${created.body}`);
  const code = String(created.headers.location).split('/').pop() as string;
  const pending = await host.get(`/rooms/${code}`);
  const hostName = offeredNames(pending.body)[0] as string;
  const activated = await host.post(`/rooms/${code}/activate`, { name: hostName });
  if (activated.statusCode !== 303)
    throw new Error(`activate failed: ${activated.statusCode} ${activated.body}`);
  const guest = new Client(app, { remoteAddress: '198.51.100.20' });
  let guestName: string | undefined;
  if (options.guest !== false) {
    const lookup = await guest.get(`/join?code=${code}`);
    guestName = offeredNames(lookup.body)[0] as string;
    const joined = await guest.post(`/rooms/${code}/join`, { name: guestName });
    if (joined.statusCode !== 303) throw new Error(`join failed: ${joined.statusCode} ${joined.body}`);
  }
  return { code, host, guest, hostName, guestName: guestName as string };
}
