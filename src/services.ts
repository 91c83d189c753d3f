import type { Eta } from 'eta';
import type { Resources } from './resources.ts';
import { createHealthProbe, type HealthReport } from './web/health.ts';
import { createViews } from './web/render.ts';

/**
 * The domain services of one process, built once on the shared resources and handed to both
 * listeners. Each takes its dependencies as arguments and knows nothing of HTTP.
 */
export type Services = {
  views: Eta;
  health: () => Promise<HealthReport>;
  /** Stops background work (sweepers, timers) before resources close. */
  stop(): Promise<void>;
};

export function createServices(resources: Resources): Services {
  const views = createViews();
  const health = createHealthProbe(resources);
  return {
    views,
    health,
    async stop() {},
  };
}
