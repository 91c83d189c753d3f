import { DomainError } from '../domain-error.ts';
import { queryText } from './query-text.ts';

export const PAGE_SIZE = 50;
/** Deeper than this is not browsing any more; filters are the way there. */
const MAX_PAGE = 10_000;

export type Paging = { page: number; limit: number; offset: number };

/** `?page=`: a whole number from 1; absent means 1. */
export function parsePage(value: unknown, pageSize = PAGE_SIZE): Paging {
  const text = queryText(value, 'page');
  const page = text === '' ? 1 : Number(text);
  if (!/^\d*$/.test(text) || !Number.isSafeInteger(page) || page < 1 || page > MAX_PAGE) {
    throw new DomainError('invalid', `The page must be a whole number from 1 to ${MAX_PAGE}.`, {
      title: 'Invalid page',
    });
  }
  return { page, limit: pageSize, offset: (page - 1) * pageSize };
}

export type PageLinks = {
  page: number;
  pages: number;
  total: number;
  prev: string | null;
  next: string | null;
};

/** Links to the neighbouring pages that keep the current filters. */
export function pageLinks(
  path: string,
  filters: Record<string, string | undefined>,
  paging: Paging,
  total: number,
): PageLinks {
  const pages = Math.max(1, Math.ceil(total / paging.limit));
  const href = (page: number) => {
    const params = new URLSearchParams();
    for (const [name, value] of Object.entries(filters)) if (value) params.set(name, value);
    if (page > 1) params.set('page', String(page));
    const query = params.toString();
    return query === '' ? path : `${path}?${query}`;
  };
  return {
    page: paging.page,
    pages,
    total,
    prev: paging.page > 1 ? href(Math.min(paging.page - 1, pages)) : null,
    next: paging.page < pages ? href(paging.page + 1) : null,
  };
}
