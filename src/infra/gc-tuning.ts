import v8 from 'node:v8';

/**
 * V8 allocates the objects of an allocation site straight in the old generation once most of
 * them were seen surviving a young-generation collection ("pretenuring"). Here that decision is
 * taken during start-up or a burst (a request's objects live until its group commit), and then
 * sticks: the objects of every later request went to the old generation and died there, and a
 * full mark-compact ran every two seconds even at 1,000 messages/s, each a 25-30 ms hole in
 * delivery (traced with --trace-gc against a per-10 ms latency timeline). Without it the young
 * generation collects them as it should. Measured with `npm run bench` (interleaved, 8 s each):
 * p99 at 1,000/s 8.0-10.0 ms instead of 10.9-19.0, at 5,000/s 28-51 ms instead of 30-77.
 *
 * Set from code rather than on the command line so that every way of starting the app has it
 * (NODE_OPTIONS does not accept this flag); this module is imported first, before the app
 * allocates anything.
 *
 * The other GC setting, a floor under the old generation's limit (`--initial-old-space-size`),
 * cannot be set from here: V8 sizes the heap before any code runs, and NODE_OPTIONS refuses that
 * flag too, so it is on node's command line (Dockerfile CMD, npm start, the benchmark).
 */
v8.setFlagsFromString('--no-allocation-site-pretenuring');
