/** Thrown when a task would have to wait behind too many others. */
export class SemaphoreFullError extends Error {
  override name = 'SemaphoreFullError';
}

/**
 * At most `limit` tasks at once; up to `maxWaiting` more wait their turn in order, and beyond that
 * a task is refused at once rather than queueing without bound.
 */
export class Semaphore {
  private active = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(
    private readonly limit: number,
    private readonly maxWaiting: number,
  ) {}

  get running(): number {
    return this.active;
  }

  get queued(): number {
    return this.waiting.length;
  }

  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.active < this.limit) {
      this.active += 1;
    } else {
      if (this.waiting.length >= this.maxWaiting) throw new SemaphoreFullError('too many tasks waiting');
      // The finishing task hands its slot straight over, so `active` does not change.
      await new Promise<void>((resolve) => this.waiting.push(resolve));
    }
    try {
      return await task();
    } finally {
      const next = this.waiting.shift();
      if (next) next();
      else this.active -= 1;
    }
  }
}
