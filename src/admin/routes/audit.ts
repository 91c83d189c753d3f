import type { FastifyPluginAsync } from 'fastify';
import type { AdminAppOptions } from '../app.ts';
import { auditActions, listAuditEvents, newestAuditEventId, parseAuditFilter } from '../audit-list.ts';
import { pageLinks, parsePage } from '../paging.ts';
import { echoedQueryText } from '../query-text.ts';
import { listOrInvalid } from './invalid-filter.ts';

type AuditQuery = {
  Querystring: { code?: unknown; action?: unknown; ip?: unknown; upto?: unknown; page?: unknown };
};

export const auditRoutes: FastifyPluginAsync<AdminAppOptions> = async (app, { resources }) => {
  const { db } = resources;

  app.get<AuditQuery>('/audit', async (request, reply) => {
    const { query } = request;
    const listing = await listOrInvalid(reply, async () => {
      const filter = parseAuditFilter(query);
      // Pages of one listing share its snapshot (see AuditFilter.upto).
      filter.upto ??= String(await newestAuditEventId(db));
      const paging = parsePage(query.page);
      const { items, total } = await listAuditEvents(db, filter, paging);
      return { items, links: pageLinks('/audit', filter, paging, total) };
    });
    return reply.render(
      { page: 'admin/audit', fragment: 'admin/audit-table' },
      {
        title: 'Audit log',
        nav: 'audit',
        actions: await auditActions(db),
        form: {
          code: echoedQueryText(query.code),
          action: echoedQueryText(query.action),
          ip: echoedQueryText(query.ip),
        },
        items: listing.result?.items ?? [],
        links: listing.result?.links ?? null,
        error: listing.error,
      },
    );
  });
};
