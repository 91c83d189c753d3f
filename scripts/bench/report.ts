import * as hdr from 'hdr-histogram-js';

export type Percentiles = { p50Ms: number; p99Ms: number; p999Ms: number; maxMs: number; count: number };

/** Merges hdr histograms (µs, compressed base64) from the load generators and reads percentiles in ms. */
export function percentiles(encoded: string[]): Percentiles {
  const merged = hdr.build({
    lowestDiscernibleValue: 1,
    highestTrackableValue: 120_000_000,
    numberOfSignificantValueDigits: 3,
  });
  for (const item of encoded) merged.add(hdr.decodeFromCompressedBase64(item));
  const ms = (us: number) => Math.round(us) / 1000;
  return {
    p50Ms: ms(merged.getValueAtPercentile(50)),
    p99Ms: ms(merged.getValueAtPercentile(99)),
    p999Ms: ms(merged.getValueAtPercentile(99.9)),
    maxMs: ms(merged.maxValue),
    count: merged.totalCount,
  };
}

export const round = (value: number | null | undefined, digits = 1): number | null =>
  value === null || value === undefined || !Number.isFinite(value)
    ? null
    : Math.round(value * 10 ** digits) / 10 ** digits;

/** app / relay, when both are numbers. */
export const ratio = (app: number | null | undefined, relay: number | null | undefined): number | null =>
  typeof app === 'number' && typeof relay === 'number' && relay !== 0 ? round(app / relay, 2) : null;

export type Row = {
  figure: string;
  app: string;
  relay: string;
  ratio: string;
  target: string;
  met: string;
};

const show = (value: unknown): string =>
  value === null || value === undefined
    ? '—'
    : typeof value === 'number'
      ? value.toLocaleString('en-US')
      : String(value);

export function row(
  figure: string,
  app: unknown,
  relay: unknown,
  target = '',
  met: boolean | null = null,
): Row {
  return {
    figure,
    app: show(app),
    relay: show(relay),
    ratio: show(ratio(typeof app === 'number' ? app : null, typeof relay === 'number' ? relay : null)),
    target,
    met: met === null ? '' : met ? 'yes' : 'NO',
  };
}

/** The rows as a Markdown table; the `relay` column holds what the app is compared with. */
export function table(rows: Row[], otherLabel = 'bare relay', ratioLabel = 'app/relay'): string {
  const header: Row = {
    figure: 'figure',
    app: 'app',
    relay: otherLabel,
    ratio: ratioLabel,
    target: 'target',
    met: 'met',
  };
  const all = [header, ...rows];
  const keys = Object.keys(header) as (keyof Row)[];
  const widths = keys.map((key) => Math.max(...all.map((item) => item[key].length)));
  const line = (item: Row) =>
    `| ${keys.map((key, index) => item[key].padEnd(widths[index] as number)).join(' | ')} |`;
  const rule = `| ${widths.map((width) => '-'.repeat(width)).join(' | ')} |`;
  return [line(header), rule, ...rows.map(line)].join('\n');
}
