type Waiter<V> = { resolve: (value: V | undefined) => void; reject: (error: unknown) => void };

/**
 * Looks keys up a batch at a time: one lookup in flight; the keys asked for while it runs wait for
 * the next one, which asks for all of them at once. A lone key is looked up at once. Every answer
 * comes from a lookup started after it was asked for, so it is as fresh as a lookup of its own
 * would be; many callers then share one query (and its round trip) instead of one each.
 */
export class BatchedLookup<V> {
  private waiting = new Map<string, Waiter<V>[]>();
  private running = false;

  /** `lookup` answers for the keys it finds; a key it leaves out resolves to undefined. */
  constructor(private readonly lookup: (keys: string[]) => Promise<Map<string, V>>) {}

  get(key: string): Promise<V | undefined> {
    return new Promise((resolve, reject) => {
      const waiters = this.waiting.get(key);
      if (waiters) waiters.push({ resolve, reject });
      else this.waiting.set(key, [{ resolve, reject }]);
      if (!this.running) void this.run();
    });
  }

  private async run(): Promise<void> {
    this.running = true;
    try {
      while (this.waiting.size > 0) {
        const batch = this.waiting;
        this.waiting = new Map();
        try {
          const found = await this.lookup([...batch.keys()]);
          for (const [key, waiters] of batch) for (const waiter of waiters) waiter.resolve(found.get(key));
        } catch (error) {
          for (const waiters of batch.values()) for (const waiter of waiters) waiter.reject(error);
        }
      }
    } finally {
      this.running = false;
    }
  }
}
