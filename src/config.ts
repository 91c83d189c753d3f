import { BlockList, isIP } from 'node:net';
import path from 'node:path';
import { z } from 'zod';
import { parsePasswordHash } from './admin/password.ts';

/**
 * Every setting the process reads, parsed and validated once at start. Nothing else in the
 * code base reads `process.env`: it receives a `Config`.
 */
export type Config = {
  chatPort: number;
  adminPort: number;
  bindHost: string;
  dataDir: string;
  databaseUrl: string | undefined;
  redisUrl: string | undefined;
  minio: MinioConfig | undefined;
  /** The current key-encryption key; undefined only when the embedded default will load or create one. */
  masterKey: Buffer | undefined;
  masterKeyPrevious: Buffer[];
  allowedAdminCidrs: string[];
  /** Host names (besides IP addresses and localhost) under which the admin panel answers. */
  adminHostnames: string[];
  trustProxy: string[];
  cookieSecure: boolean | undefined;
  roomTtlHours: number;
  pendingTtlMinutes: number;
  sweepIntervalSeconds: number;
  createRatePerMinute: number;
  joinRatePerMinute: number;
  sendRatePerMinute: number;
  uploadRatePerMinute: number;
  maxMessageChars: number;
  maxUploadMb: number;
  archiveRetentionDays: number | undefined;
  adminPasswordHash: string | undefined;
  logLevel: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
};

export type MinioConfig = {
  endPoint: string;
  port: number;
  useSSL: boolean;
  accessKey: string;
  secretKey: string;
  bucket: string;
};

export const DEFAULT_ADMIN_CIDRS = '10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,127.0.0.1/32,::1/128';

export const MASTER_KEY_HINT =
  "generate one with `npm run gen-master-key` (where only node is installed, as in the image: node -e \"console.log(require('crypto').randomBytes(32).toString('base64'))\")";

export class ConfigError extends Error {
  override name = 'ConfigError';
}

/** Parses a comma-separated list of CIDRs (or bare addresses) into normalized `addr/prefix` strings. */
export function parseCidrList(value: string): string[] {
  return value
    .split(',')
    .map((entry) => entry.trim())
    .filter((entry) => entry !== '')
    .map((entry) => {
      const [address = '', prefixText, ...rest] = entry.split('/');
      const family = isIP(address);
      if (family === 0 || rest.length > 0) throw new Error(`"${entry}" is not an IP address or CIDR`);
      const maxPrefix = family === 4 ? 32 : 128;
      const prefix = prefixText === undefined ? maxPrefix : Number(prefixText);
      if (!/^\d+$/.test(prefixText ?? String(maxPrefix)) || prefix > maxPrefix) {
        throw new Error(`"${entry}" has an invalid prefix length (0-${maxPrefix})`);
      }
      return `${address}/${prefix}`;
    });
}

/** Builds a `net.BlockList` from `addr/prefix` strings as produced by `parseCidrList`. */
export function toBlockList(cidrs: string[]): BlockList {
  const list = new BlockList();
  for (const cidr of cidrs) {
    const [address = '', prefix = ''] = cidr.split('/');
    list.addSubnet(address, Number(prefix), isIP(address) === 4 ? 'ipv4' : 'ipv6');
  }
  return list;
}

function decodeMasterKey(name: string, value: string): Buffer {
  const trimmed = value.trim();
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(trimmed) || trimmed.length % 4 !== 0) {
    throw new Error(`${name} is not valid base64; ${MASTER_KEY_HINT}`);
  }
  const key = Buffer.from(trimmed, 'base64');
  if (key.length !== 32) {
    throw new Error(`${name} must decode to exactly 32 bytes (got ${key.length}); ${MASTER_KEY_HINT}`);
  }
  return key;
}

const emptyAsUndefined = (value: unknown) =>
  typeof value === 'string' && value.trim() === '' ? undefined : value;

/**
 * A number read from text. Zod 4 refuses Infinity as "not a number"; to an operator who wrote it
 * the clearer answer is the bound it passes, `tooBig`.
 */
const numberText = (tooBig: string) =>
  z.coerce.number({
    error: (issue) => (issue.input === Number.POSITIVE_INFINITY ? tooBig : 'must be a number'),
  });

const port = (fallback: number) =>
  z.preprocess(
    emptyAsUndefined,
    numberText('must be between 0 and 65535')
      .int('must be a whole number')
      .min(0, 'must be between 0 and 65535')
      .max(65535, 'must be between 0 and 65535')
      .default(fallback),
  );

/** A number above 0 and at most `max` (Infinity and 1e300 would pass `positive` and break timers). */
const boundedNumber = (max: number) =>
  numberText(`must be at most ${max}`).positive('must be greater than 0').max(max, `must be at most ${max}`);

const positiveNumber = (fallback: number, max: number) =>
  z.preprocess(emptyAsUndefined, boundedNumber(max).default(fallback));

const positiveInt = (fallback: number) =>
  z.preprocess(
    emptyAsUndefined,
    numberText('must be a whole number')
      .int('must be a whole number')
      .positive('must be greater than 0')
      .default(fallback),
  );

const booleanText = z.preprocess(
  emptyAsUndefined,
  z
    .enum(['true', 'false', '1', '0', 'yes', 'no'], { error: 'must be true or false' })
    .transform((value) => value === 'true' || value === '1' || value === 'yes')
    .optional(),
);

const optionalText = z.preprocess(emptyAsUndefined, z.string().optional());

const cidrList = (fallback: string) =>
  z.preprocess(
    emptyAsUndefined,
    z
      .string()
      .default(fallback)
      .transform((value, ctx) => {
        try {
          return parseCidrList(value);
        } catch (error) {
          ctx.addIssue({ code: 'custom', message: (error as Error).message });
          return z.NEVER;
        }
      }),
  );

const HOSTNAME =
  /^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$/;

const hostnameList = z.preprocess(
  emptyAsUndefined,
  z
    .string()
    .default('')
    .transform((value, ctx) => {
      const names = value
        .split(',')
        .map((name) => name.trim().toLowerCase())
        .filter((name) => name !== '');
      const bad = names.find((name) => !HOSTNAME.test(name));
      if (bad !== undefined) {
        ctx.addIssue({ code: 'custom', message: `"${bad}" is not a host name` });
        return z.NEVER;
      }
      return names;
    }),
);

const urlWithProtocols = (protocols: string[]) =>
  z.preprocess(
    emptyAsUndefined,
    z
      .string()
      .refine(
        (value) => {
          try {
            return protocols.includes(new URL(value).protocol);
          } catch {
            return false;
          }
        },
        `must be a URL starting with ${protocols.map((p) => `${p}//`).join(' or ')}`,
      )
      .optional(),
  );

const bucketName = z.preprocess(
  emptyAsUndefined,
  z
    .string()
    .regex(
      /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/,
      'must be a valid bucket name (3-63 lowercase letters, digits, dots, hyphens)',
    )
    .default('chitty-files'),
);

const envSchema = z.object({
  CHAT_PORT: port(5055),
  ADMIN_PORT: port(5056),
  BIND_HOST: z.preprocess(
    emptyAsUndefined,
    z
      .string()
      .refine((value) => isIP(value) !== 0, 'must be an IP address such as 0.0.0.0 or ::')
      .default('0.0.0.0'),
  ),
  DATA_DIR: z.preprocess(emptyAsUndefined, z.string().default('.data')),
  DATABASE_URL: urlWithProtocols(['postgres:', 'postgresql:']),
  REDIS_URL: urlWithProtocols(['redis:', 'rediss:']),
  MINIO_ENDPOINT: optionalText,
  MINIO_PORT: port(9000),
  MINIO_USE_SSL: booleanText,
  MINIO_ACCESS_KEY: optionalText,
  MINIO_SECRET_KEY: optionalText,
  MINIO_BUCKET: bucketName,
  MASTER_KEY: optionalText,
  MASTER_KEY_PREVIOUS: optionalText,
  ALLOWED_ADMIN_CIDRS: cidrList(DEFAULT_ADMIN_CIDRS),
  ADMIN_HOSTNAMES: hostnameList,
  TRUST_PROXY: cidrList(''),
  COOKIE_SECURE: booleanText,
  ROOM_TTL_HOURS: positiveNumber(24, 24 * 366),
  PENDING_TTL_MINUTES: positiveNumber(60, 7 * 24 * 60),
  // setTimeout takes at most 2^31-1 ms; past it Node fires at once (a sweep every millisecond).
  SWEEP_INTERVAL_SECONDS: positiveNumber(30, 24 * 60 * 60),
  CREATE_RATE_PER_MINUTE: positiveInt(10),
  JOIN_RATE_PER_MINUTE: positiveInt(10),
  SEND_RATE_PER_MINUTE: positiveInt(120),
  UPLOAD_RATE_PER_MINUTE: positiveInt(10),
  MAX_MESSAGE_CHARS: positiveInt(4000),
  MAX_UPLOAD_MB: positiveNumber(10, 1024),
  ARCHIVE_RETENTION_DAYS: z.preprocess(emptyAsUndefined, boundedNumber(100 * 366).optional()),
  ADMIN_PASSWORD_HASH: z.preprocess(
    emptyAsUndefined,
    z
      .string()
      .refine((value) => {
        try {
          parsePasswordHash(value);
          return true;
        } catch {
          return false;
        }
      }, 'must be scrypt$N$r$p$salt$hash with N a power of two from 2^10 to 2^20, r ≤ 32, p ≤ 16 (make one with npm run hash-admin-password)')
      .optional(),
  ),
  LOG_LEVEL: z.preprocess(
    emptyAsUndefined,
    z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  ),
});

/** Variables whose value is a secret: a problem with one names it, never shows it. */
const SECRET_VARIABLES = new Set([
  'MASTER_KEY',
  'MASTER_KEY_PREVIOUS',
  'MINIO_SECRET_KEY',
  'ADMIN_PASSWORD_HASH',
]);

/** A value as an error line may show it: secrets hidden, a URL's password masked. */
function shownValue(name: string, value: string): string {
  if (SECRET_VARIABLES.has(name)) return `(hidden, ${value.length} characters)`;
  return JSON.stringify(value.replace(/(\/\/[^/@:]*:)[^/@]*@/, '$1***@'));
}

/**
 * Reads the configuration from an environment-like record. Throws `ConfigError` with one line
 * per problem, each naming the variable, so an operator can fix them all at once.
 */
export function loadConfig(env: Record<string, string | undefined>): Config {
  const parsed = envSchema.safeParse(env);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((issue) => {
      const name = String(issue.path[0]);
      return `${name}=${shownValue(name, env[name] ?? '')}: ${issue.message}`;
    });
    throw new ConfigError(`invalid configuration: ${lines.join('; ')}`);
  }
  const e = parsed.data;
  const problems: string[] = [];

  let masterKey: Buffer | undefined;
  if (e.MASTER_KEY !== undefined) {
    try {
      masterKey = decodeMasterKey('MASTER_KEY', e.MASTER_KEY);
    } catch (error) {
      problems.push((error as Error).message);
    }
  } else if (e.DATABASE_URL !== undefined) {
    problems.push(`MASTER_KEY is required when DATABASE_URL is set; ${MASTER_KEY_HINT}`);
  }

  const masterKeyPrevious: Buffer[] = [];
  for (const [index, item] of (e.MASTER_KEY_PREVIOUS ?? '').split(',').entries()) {
    if (item.trim() === '') continue;
    try {
      masterKeyPrevious.push(decodeMasterKey(`MASTER_KEY_PREVIOUS[${index}]`, item));
    } catch (error) {
      problems.push((error as Error).message);
    }
  }

  let minio: MinioConfig | undefined;
  if (e.MINIO_ENDPOINT !== undefined) {
    if (e.MINIO_ACCESS_KEY === undefined || e.MINIO_SECRET_KEY === undefined) {
      problems.push('MINIO_ACCESS_KEY and MINIO_SECRET_KEY are required when MINIO_ENDPOINT is set');
    } else {
      minio = {
        endPoint: e.MINIO_ENDPOINT,
        port: e.MINIO_PORT,
        useSSL: e.MINIO_USE_SSL ?? false,
        accessKey: e.MINIO_ACCESS_KEY,
        secretKey: e.MINIO_SECRET_KEY,
        bucket: e.MINIO_BUCKET,
      };
    }
  }

  if (e.CHAT_PORT !== 0 && e.CHAT_PORT === e.ADMIN_PORT) {
    problems.push(`CHAT_PORT and ADMIN_PORT must differ (both are ${e.CHAT_PORT})`);
  }

  if (problems.length > 0) throw new ConfigError(`invalid configuration: ${problems.join('; ')}`);

  return {
    chatPort: e.CHAT_PORT,
    adminPort: e.ADMIN_PORT,
    bindHost: e.BIND_HOST,
    dataDir: path.resolve(e.DATA_DIR),
    databaseUrl: e.DATABASE_URL,
    redisUrl: e.REDIS_URL,
    minio,
    masterKey,
    masterKeyPrevious,
    allowedAdminCidrs: e.ALLOWED_ADMIN_CIDRS,
    adminHostnames: e.ADMIN_HOSTNAMES,
    trustProxy: e.TRUST_PROXY,
    cookieSecure: e.COOKIE_SECURE,
    roomTtlHours: e.ROOM_TTL_HOURS,
    pendingTtlMinutes: e.PENDING_TTL_MINUTES,
    sweepIntervalSeconds: e.SWEEP_INTERVAL_SECONDS,
    createRatePerMinute: e.CREATE_RATE_PER_MINUTE,
    joinRatePerMinute: e.JOIN_RATE_PER_MINUTE,
    sendRatePerMinute: e.SEND_RATE_PER_MINUTE,
    uploadRatePerMinute: e.UPLOAD_RATE_PER_MINUTE,
    maxMessageChars: e.MAX_MESSAGE_CHARS,
    maxUploadMb: e.MAX_UPLOAD_MB,
    archiveRetentionDays: e.ARCHIVE_RETENTION_DAYS,
    adminPasswordHash: e.ADMIN_PASSWORD_HASH,
    logLevel: e.LOG_LEVEL,
  };
}

/** The names `loadConfig` reads; the compose test checks docker-compose.yml against them. */
export const CONFIG_VARIABLES = Object.keys(envSchema.shape);
