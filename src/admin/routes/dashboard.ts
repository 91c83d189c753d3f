import type { FastifyPluginAsync } from 'fastify';
import type { AdminAppOptions } from '../app.ts';
import { pageLinks, parsePage } from '../paging.ts';
import { echoedQueryText } from '../query-text.ts';
import { listRooms, parseRoomFilter, ROOM_STATUSES, roomTotals } from '../room-list.ts';
import { listOrInvalid } from './invalid-filter.ts';

type DashboardQuery = { Querystring: { status?: unknown; code?: unknown; page?: unknown } };

export const dashboardRoutes: FastifyPluginAsync<AdminAppOptions> = async (app, { resources }) => {
  const { db, clock } = resources;

  app.get<DashboardQuery>('/', async (request, reply) => {
    const { query } = request;
    const listing = await listOrInvalid(reply, async () => {
      const filter = parseRoomFilter(query);
      const paging = parsePage(query.page);
      const { items, total } = await listRooms(db, filter, paging);
      return { items, links: pageLinks('/', { status: filter.status, code: filter.code }, paging, total) };
    });
    return reply.render(
      { page: 'admin/dashboard', fragment: 'admin/rooms-table' },
      {
        title: 'Rooms',
        nav: 'rooms',
        totals: await roomTotals(db),
        statuses: ROOM_STATUSES,
        form: { status: echoedQueryText(query.status), code: echoedQueryText(query.code) },
        items: listing.result?.items ?? [],
        links: listing.result?.links ?? null,
        error: listing.error,
        now: clock.now().getTime(),
      },
    );
  });
};
