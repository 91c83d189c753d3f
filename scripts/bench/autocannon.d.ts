// The part of autocannon's API the benchmark uses (the package ships no types).
declare module 'autocannon' {
  type Options = {
    url: string;
    connections?: number;
    duration?: number;
    method?: string;
    headers?: Record<string, string>;
    body?: string | Buffer;
    timeout?: number;
    pipelining?: number;
  };
  type Percentiles = { average: number; max: number; p50: number; p99: number; p99_9: number };
  type Result = {
    duration: number;
    requests: { average: number; total: number };
    latency: Percentiles;
    errors: number;
    timeouts: number;
    non2xx: number;
    '2xx': number;
    '3xx': number;
  };
  function autocannon(options: Options): Promise<Result>;
  export default autocannon;
}
