import { DomainError } from '../domain-error.ts';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export const isUuid = (value: unknown): value is string => typeof value === 'string' && UUID.test(value);

/** Room and attachment ids in admin URLs are uuids; anything else is a malformed address (400). */
export function parseUuid(value: string, what = 'room id'): string {
  if (!isUuid(value)) {
    throw new DomainError('invalid', `That is not a valid ${what}.`, { title: 'Invalid address' });
  }
  return value.toLowerCase();
}

export const unknownRoom = () =>
  new DomainError('not_found', 'There is no room with this id.', { title: 'No such room' });
